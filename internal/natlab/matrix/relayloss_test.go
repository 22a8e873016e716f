package matrix

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/p2pos/rendezvous/internal/natlab"
)

// relayLossLine is what the test reads of a node's JSON lines.
type relayLossLine struct {
	Event  string `json:"event"`
	PeerID string `json:"peer_id"`
	Relays []struct {
		Relay string `json:"relay"`
	} `json:"relays"`
	Publish *struct {
		RelayAddrs []string `json:"relay_addrs"`
		Error      string   `json:"error"`
	} `json:"publish"`
}

// TestDeadRelayReplaced: a NATed node holds reservations on two of three
// relays; one of them dies, silently (its traffic dropped, as when a
// machine loses power) or by closing (a stopped process). The node notices,
// reserves on the third and republishes its record within 10 s of noticing.
func TestDeadRelayReplaced(t *testing.T) {
	for _, how := range []string{"stopped", "silent"} {
		t.Run(how, func(t *testing.T) { testDeadRelay(t, how) })
	}
}

func testDeadRelay(t *testing.T, how string) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bin := buildForLab(t, ctx)
	lab, err := natlab.New(ctx, natlab.Spec{
		Internet: natlab.Internet{Delay: 20 * time.Millisecond},
		Routers:  []natlab.RouterSpec{{Name: "home", Kind: natlab.PortRestricted, UDPTimeout: 30 * time.Second, TCPTimeout: 5 * time.Minute}},
		Hosts:    []natlab.HostSpec{{Name: "server1"}, {Name: "server2"}, {Name: "server3"}, {Name: "alice", Router: "home"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	servers := map[string]serverNode{} // by peer ID
	var boot []string
	for _, sv := range startServerNodes(t, ctx, lab, bin, nil, "server1", "server2", "server3") {
		servers[sv.id] = sv
		boot = append(boot, sv.boot)
	}
	alice, err := lab.Host("alice").Start(ctx, bin, append([]string{"node", "--json", "--mode", "private",
		"--bootstrap", strings.Join(boot, ","), "--tcp-holds", "none", "--nat-timeouts", "2s"}, labArgs...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { alice.Stop(5 * time.Second) })

	// Wait for a record naming two relays.
	relaysOf := func(addrs []string) []string {
		var out []string
		for _, a := range addrs {
			if i := strings.Index(a, "/p2p/"); i >= 0 {
				id := strings.TrimSuffix(a[i+len("/p2p/"):], "/p2p-circuit")
				out = append(out, id)
			}
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	var held []string
	for len(held) < 2 {
		var l relayLossLine
		if err := alice.NextJSON(ctx, &l); err != nil {
			t.Fatalf("alice: %v: %s", err, alice.Stderr())
		}
		if l.Event == "published" && l.Publish != nil && l.Publish.Error == "" {
			held = relaysOf(l.Publish.RelayAddrs)
		}
	}
	dead := held[0]
	switch how {
	case "stopped":
		servers[dead].proc.Stop(5 * time.Second)
	case "silent":
		// Everything to and from the relay is dropped from now on.
		out, err := servers[dead].host.Command(ctx, "nft", "add table inet dead; "+
			"add chain inet dead in { type filter hook input priority -300; policy drop; }; "+
			"add chain inet dead out { type filter hook output priority -300; policy drop; }").CombinedOutput()
		if err != nil {
			t.Fatalf("nft: %v: %s", err, out)
		}
	}
	killed := time.Now()
	var noticed, republished time.Time
	for republished.IsZero() {
		var l relayLossLine
		if err := alice.NextJSON(ctx, &l); err != nil {
			t.Fatalf("alice, after the relay died: %v: %s", err, alice.Stderr())
		}
		switch l.Event {
		case "relays":
			ids := make([]string, 0, len(l.Relays))
			for _, r := range l.Relays {
				ids = append(ids, r.Relay)
			}
			if noticed.IsZero() && !slices.Contains(ids, dead) {
				noticed = time.Now()
			}
		case "published":
			if l.Publish == nil || l.Publish.Error != "" {
				continue
			}
			now := relaysOf(l.Publish.RelayAddrs)
			if !slices.Contains(now, dead) && len(now) == 2 {
				republished = time.Now()
				if noticed.IsZero() {
					noticed = republished
				}
			}
		}
	}
	b, _ := json.Marshal(map[string]any{"how": how, "noticed_s": noticed.Sub(killed).Seconds(),
		"republished_after_noticing_s": republished.Sub(noticed).Seconds()})
	t.Logf("relay %s %s: %s", dead, how, b)
	if testing.Verbose() {
		t.Logf("alice: %s", alice.Stderr())
	}
	if d := republished.Sub(noticed); d > 10*time.Second {
		t.Errorf("republished %v after noticing the dead relay, want within 10 s", d)
	}
}
