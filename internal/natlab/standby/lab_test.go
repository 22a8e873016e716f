package standby

import (
	"context"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/p2pos/rendezvous/internal/natlab"
)

// buildForLab skips the test when the lab cannot run here (fails it when
// RENDEZVOUS_NATLAB=required) and builds the rendezvous and vanillapeer
// commands.
func buildForLab(t *testing.T, ctx context.Context) (rdv, van string) {
	t.Helper()
	natlab.Require(t)
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..", "..")
	dir := t.TempDir()
	rdv, err := natlab.BuildCommand(ctx, root, "./cmd/rendezvous", dir)
	if err != nil {
		t.Fatal(err)
	}
	van, err = natlab.BuildCommand(ctx, root, "./internal/natlab/cmd/vanillapeer", dir)
	if err != nil {
		t.Fatal(err)
	}
	return rdv, van
}

// TestStandbyInLab runs the whole measurement with a short window behind
// one pair of 30 s routers and checks its structure: both peers' routers
// counted traffic in both directions, the rendezvous node settled, lost no
// standing connection and was reachable at the end, and conntrack was read.
// The figures themselves are measured, not asserted.
func TestStandbyInLab(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rdv, van := buildForLab(t, ctx)
	res, err := Run(ctx, Config{
		RendezvousBinary: rdv,
		VanillaBinary:    van,
		Duration:         90 * time.Second,
		Settle:           2 * time.Minute,
		UDPTimeouts:      []time.Duration{30 * time.Second},
		Logf:             t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", res.Markdown())
	if len(res.Rows) != 2 {
		t.Fatalf("%d rows, want 2", len(res.Rows))
	}
	seen := map[string]bool{}
	for _, r := range res.Rows {
		seen[r.Implementation] = true
		switch {
		case r.PeerID == "":
			t.Errorf("%s: no peer ID", r.Host)
		case r.WindowS < 90:
			t.Errorf("%s: window %.1f s, want at least 90 s", r.Host, r.WindowS)
		case r.InBytes == 0 || r.OutBytes == 0 || r.InPackets == 0 || r.OutPackets == 0:
			t.Errorf("%s: counters did not move: %d B / %d packets in, %d B / %d packets out",
				r.Host, r.InBytes, r.InPackets, r.OutBytes, r.OutPackets)
		case r.InBytesPerHour <= 0 || r.PacketsPerHour <= 0:
			t.Errorf("%s: per-hour figures not computed", r.Host)
		case r.FlowsError != "" || r.FlowsStart == 0:
			t.Errorf("%s: no flows towards the public nodes at the window's start (%s)", r.Host, r.FlowsError)
		}
		if r.Implementation != Rendezvous {
			continue
		}
		if !r.Settled {
			t.Errorf("rendezvous node did not settle: %s", r.Unsettled)
		}
		if r.LostConnections != 0 || !r.RelaysSame || len(r.RelaysStart) == 0 {
			t.Errorf("rendezvous node lost %d relays (held %v, then %v): %v", r.LostConnections, r.RelaysStart, r.RelaysEnd, r.Events)
		}
		if !r.Reachable {
			t.Errorf("rendezvous node not reachable at the end: %s", r.ReachError)
		}
	}
	if !seen[Rendezvous] || !seen[Vanilla] {
		t.Errorf("implementations measured: %v", seen)
	}
	if md := res.Markdown(); !strings.Contains(md, "| "+Rendezvous+" | 30s |") || !strings.Contains(md, "| "+Vanilla+" | 30s |") {
		t.Errorf("table lacks a row:\n%s", md)
	}
}
