package classify

import (
	"context"
	"net/netip"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/p2pos/rendezvous/internal/natlab"
)

// TestEveryKind classifies every kind once in a network of three public
// peers: each must report what the lab built, mapping and filtering told
// apart.
func TestEveryKind(t *testing.T) {
	natlab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, file, _, _ := runtime.Caller(0)
	bin, err := natlab.BuildCommand(ctx, filepath.Join(filepath.Dir(file), "..", "..", ".."), "./cmd/rendezvous", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	res, err := Measure(ctx, Config{Binary: bin, Peers: []int{3}, Runs: 1, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", res.Markdown())
	if len(res.Runs) != len(DefaultKinds()) {
		t.Fatalf("%d runs, want one per kind (%d)", len(res.Runs), len(DefaultKinds()))
	}
	for _, r := range res.Runs {
		if !r.Matched {
			t.Errorf("%s: saw %s, want %s %s", r.Kind, r.Seen, expectations[r.Kind].text, r.Error)
		}
		if r.NetcheckMS <= 0 || (r.Kind != string(natlab.UDPBlocked) && r.ClassifyMS <= 0) {
			t.Errorf("%s: times not measured: %+v", r.Kind, r)
		}
	}
	if md := res.Markdown(); !strings.Contains(md, "| full-cone | EI / EI | 3 | 1 / 1 |") {
		t.Errorf("table does not show the full-cone run:\n%s", md)
	}
}

func TestMarkdown(t *testing.T) {
	res := &Result{Runs: []Run{
		{Kind: "full-cone", Peers: 1, Index: 0, Seen: "EI? / AD? (1 server address)", ClassifyMS: 1000, NetcheckMS: 2000},
		{Kind: "full-cone", Peers: 1, Index: 1, Seen: "EI? / AD? (1 server address)", ClassifyMS: 3000, NetcheckMS: 4000},
		{Kind: "full-cone", Peers: 1, Index: 2, Error: "netcheck: exited", NetcheckMS: 500},
		{Kind: "full-cone", Peers: 3, Index: 0, Matched: true, ClassifyMS: 1200, NetcheckMS: 2100},
		{Kind: "udp-blocked", Peers: 3, Index: 0, Matched: true, NetcheckMS: 3000},
	}}
	want := "| kind | expected | public peers | matched / runs | seen when not matched | median classify | median netcheck |\n" +
		"|---|---|---:|---:|---|---:|---:|\n" +
		"| full-cone | EI / EI | 1 | 0 / 3 | 2× EI? / AD? (1 server address); 1× error: netcheck: exited | 2000 ms | 2000 ms |\n" +
		"| full-cone | EI / EI | 3 | 1 / 1 |  | 1200 ms | 2100 ms |\n" +
		"| udp-blocked | UDP blocked | 3 | 1 / 1 |  | – | 3000 ms |\n"
	if got := res.Markdown(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestJudge(t *testing.T) {
	own := netip.MustParseAddr("10.77.0.12")
	nat := func(m string, mc float64, f string, fc float64, external string) report {
		var r report
		r.NAT = &natReport{Mapping: m, MappingConfidence: mc, Filtering: f, FilteringConfidence: fc, External: external, Servers: 2}
		return r
	}
	public := nat(ei, 1, ei, 1, "10.77.0.12:4000")
	public.Reachability = "public"
	natted := public
	natted.NAT = &natReport{Mapping: ei, MappingConfidence: 1, External: "10.77.1.1:4000"}
	blocked := report{NATError: "no probe server answered: UDP is blocked on the path, or the servers are down"}
	mapped := nat(ei, 1, apd, 1, "10.77.1.3:5000")
	mapped.Reachability = "public"
	mapped.PortMapping = &portMappingReport{UDP: &udpMappingReport{External: "10.77.1.3:4001"}}
	tests := []struct {
		kind string
		rep  report
		want bool
		seen string
	}{
		{string(natlab.FullCone), nat(ei, 1, ei, 1, ""), true, "EI / EI (2 server addresses, no sibling)"},
		{string(natlab.FullCone), nat(ei, 0.5, ad, 0.5, ""), false, "EI? / AD? (2 server addresses, no sibling)"},
		{string(natlab.Restricted), nat(ei, 1, ad, 2.0/3, ""), true, "EI / AD (2 server addresses, no sibling)"},
		{string(natlab.Symmetric), nat(apd, 1, apd, 1, ""), true, "APD / APD (2 server addresses, no sibling)"},
		{string(natlab.Symmetric), report{NATError: "x"}, false, "x"},
		{Public, public, true, "reachability public, EI / EI (2 server addresses, no sibling)"},
		{Public, natted, false, "reachability public, EI / ? (0 server addresses)"},
		{string(natlab.UDPBlocked), blocked, true, blocked.NATError},
		{string(natlab.UDPBlocked), nat(ei, 1, ei, 1, ""), false, "EI / EI (2 server addresses, no sibling)"},
		{string(natlab.UPnP), mapped, true, "reachability public, UDP mapping 10.77.1.3:4001, NAT EI / APD (2 server addresses, no sibling)"},
		{string(natlab.UPnP), public, false, "reachability public, no UDP mapping, NAT EI / EI (2 server addresses, no sibling)"},
	}
	for _, tt := range tests {
		got, seen := expectations[tt.kind].judge(tt.rep, own)
		if got != tt.want || seen != tt.seen {
			t.Errorf("%s: %v, %q; want %v, %q", tt.kind, got, seen, tt.want, tt.seen)
		}
	}
}
