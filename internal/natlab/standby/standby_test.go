package standby

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	libp2ppeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2pos/rendezvous"
)

const conntrackSample = `udp      17 29 src=192.168.1.2 dst=10.77.0.10 sport=4001 dport=4001 src=10.77.0.10 dst=10.77.1.1 sport=4001 dport=4001 [ASSURED] mark=0 use=1 id=111
udp      17 27 src=192.168.1.2 dst=10.77.0.11 sport=4001 dport=4001 src=10.77.0.11 dst=10.77.1.1 sport=4001 dport=4001 [ASSURED] mark=0 use=1 id=222
udp      17 12 src=192.168.1.2 dst=10.77.0.11 sport=40000 dport=4001 [UNREPLIED] src=10.77.0.11 dst=10.77.1.1 sport=35000 dport=40000 mark=0 use=1 id=333
tcp      6 1790 ESTABLISHED src=192.168.1.2 dst=10.77.0.12 sport=4001 dport=4001 src=10.77.0.12 dst=10.77.1.1 sport=4001 dport=4001 [ASSURED] mark=0 use=1 id=444
garbage line
udp 17 29 src=192.168.1.2 dst=10.77.0.10 sport=99999 dport=4001 id=555
`

func TestParseFlows(t *testing.T) {
	flows := parseFlows(conntrackSample)
	if len(flows) != 4 {
		t.Fatalf("%d flows, want 4: %+v", len(flows), flows)
	}
	f := flows[3]
	if f.proto != "tcp" || f.src != netip.MustParseAddrPort("192.168.1.2:4001") || f.dst != netip.MustParseAddrPort("10.77.0.12:4001") || f.id != "444" || f.ttl != 1790 {
		t.Errorf("tcp flow parsed as %+v", f)
	}
	// The original direction counts, not the reply.
	if flows[0].dst.Addr() != netip.MustParseAddr("10.77.0.10") {
		t.Errorf("first flow's destination %v", flows[0].dst)
	}
}

func TestCompareFlows(t *testing.T) {
	start := parseFlows(conntrackSample)
	servers := []netip.Addr{netip.MustParseAddr("10.77.0.10"), netip.MustParseAddr("10.77.0.11"), netip.MustParseAddr("10.77.0.12"), netip.MustParseAddr("10.77.0.13")}
	// At the end the first flow is the same, the second expired and came
	// back (new id), the fourth is gone and one to another server is new;
	// the third is not from the libp2p port.
	end := parseFlows(strings.NewReplacer("id=222", "id=999", "id=444", "").Replace(conntrackSample))
	end = append(end[:3:3], flow{proto: "udp", src: netip.MustParseAddrPort("192.168.1.2:4001"), dst: netip.MustParseAddrPort("10.77.0.13:4001"), id: "1"})
	c := compareFlows(start, end, servers, 4001)
	if c.start != 3 || c.kept != 1 {
		t.Errorf("%d of %d flows kept, want 1 of 3", c.kept, c.start)
	}
	want := []string{"udp 192.168.1.2:4001 10.77.0.11:4001 replaced (27 s left at the start)", "tcp 192.168.1.2:4001 10.77.0.12:4001 gone (1790 s left at the start)"}
	if strings.Join(c.lost, "|") != strings.Join(want, "|") {
		t.Errorf("lost %q, want %q", c.lost, want)
	}
	if len(c.added) != 1 || c.added[0] != "udp 192.168.1.2:4001 10.77.0.13:4001" {
		t.Errorf("new flows %q", c.added)
	}
}

func newID(t *testing.T) string {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := libp2ppeer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

func line(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRendezvousTrackerSettles(t *testing.T) {
	self, r1, r2, r3 := newID(t), newID(t), newID(t), newID(t)
	circuit := func(r string) string { return "/ip4/10.77.0.10/udp/4001/quic-v1/p2p/" + r + "/p2p-circuit" }
	relays := func(ids ...string) []rendezvous.RelayStatus {
		var out []rendezvous.RelayStatus
		for _, id := range ids {
			out = append(out, rendezvous.RelayStatus{Relay: id, Addr: "/ip4/10.77.0.10/udp/4001/quic-v1"})
		}
		return out
	}
	now := time.Now()
	tr := &rdvTracker{want: 2}
	steps := []struct {
		line    any
		settled bool
		missing string
	}{
		{map[string]any{"event": "ready", "peer_id": self, "status": rendezvous.Status{
			Relays:  relays(r1),
			Publish: &rendezvous.PublishStatus{RelayAddrs: []string{circuit(r1)}},
		}}, false, "1 of 2 relays held"},
		{rendezvous.Event{Type: rendezvous.EventRelays, Relays: relays(r1, r2)}, false, "record lacks the relays held"},
		{rendezvous.Event{Type: rendezvous.EventPublished, Publish: &rendezvous.PublishStatus{RelayAddrs: []string{circuit(r2), circuit(r1)}}}, false, "NAT survey not done"},
		{rendezvous.Event{Type: rendezvous.EventNAT, NAT: &rendezvous.NATStatus{Mapping: "endpoint-independent", TimeoutMeasuring: true}}, false, "still measuring"},
		{rendezvous.Event{Type: rendezvous.EventNAT, NAT: &rendezvous.NATStatus{Mapping: "endpoint-independent", UDPTimeout: 30 * time.Second}}, false, "not republished after the NAT survey"},
		{rendezvous.Event{Type: rendezvous.EventPublished, Publish: &rendezvous.PublishStatus{RelayAddrs: []string{circuit(r1), circuit(r2)}}}, true, ""},
	}
	for i, s := range steps {
		tr.apply(line(t, s.line), now)
		ok, missing := tr.settled()
		if ok != s.settled || !strings.Contains(missing, s.missing) {
			t.Fatalf("step %d: settled %v (%q), want %v (%q)", i, ok, missing, s.settled, s.missing)
		}
	}
	if tr.peerID() != self {
		t.Errorf("peer ID %q", tr.peerID())
	}

	// In the window: one relay replaced, one republish, a reachability
	// change; nothing counted after the window.
	tr.openWindow(now)
	tr.apply(line(t, rendezvous.Event{Type: rendezvous.EventRelays, Relays: relays(r1, r3)}), now)
	tr.apply(line(t, rendezvous.Event{Type: rendezvous.EventPublished, Publish: &rendezvous.PublishStatus{RelayAddrs: []string{circuit(r1), circuit(r3)}}}), now)
	tr.apply(line(t, rendezvous.Event{Type: rendezvous.EventReachability, Reachability: "unknown"}), now)
	tr.closeWindow(now)
	tr.apply(line(t, rendezvous.Event{Type: rendezvous.EventRelays}), now)
	w := tr.window()
	if w.lost != 1 || w.republishes != 1 || w.reachChanges != 1 || len(w.events) != 2 {
		t.Errorf("window: %+v", w)
	}
	if len(w.relaysStart) != 2 || len(w.relaysEnd) != 2 || w.relaysEnd[0] == w.relaysStart[0] && w.relaysEnd[1] == w.relaysStart[1] {
		t.Errorf("relays %v then %v", w.relaysStart, w.relaysEnd)
	}
}

func TestVanillaTracker(t *testing.T) {
	now := time.Now()
	tr := &vanillaTracker{want: 3}
	tr.apply([]byte(`{"event":"ready","peer_id":"12D3KooWSelf","addrs":[]}`), now)
	if ok, missing := tr.settled(); ok || missing != "no status yet" {
		t.Errorf("settled %v %q before any status", ok, missing)
	}
	tr.apply([]byte(`{"event":"status","connections":3,"routing_table":3,"relays":["c","a"],"circuit_addrs":["/x"]}`), now)
	if ok, missing := tr.settled(); ok || missing != "2 of 3 relays held" {
		t.Errorf("settled %v %q with 2 relays", ok, missing)
	}
	tr.apply([]byte(`{"event":"status","connections":3,"routing_table":3,"relays":["c","a","b"]}`), now)
	if ok, _ := tr.settled(); !ok {
		t.Error("not settled with 3 relays")
	}
	tr.openWindow(now)
	tr.apply([]byte(`{"event":"disconnected","peer":"12D3KooWRelay","remote_addr":"/ip4/10.77.0.10/udp/4001/quic-v1"}`), now)
	tr.apply([]byte(`{"event":"status","connections":2,"routing_table":3,"relays":["a","b"]}`), now)
	tr.closeWindow(now)
	tr.apply([]byte(`{"event":"disconnected","peer":"12D3KooWOther"}`), now)
	w := tr.window()
	if w.lost != 1 || strings.Join(w.relaysStart, ",") != "a,b,c" || strings.Join(w.relaysEnd, ",") != "a,b" || len(w.events) != 2 {
		t.Errorf("window: %+v", w)
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{RendezvousBinary: "r", VanillaBinary: "v"}
	if err := c.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if c.Duration != time.Hour || c.Settle != 10*time.Minute || c.TCPTimeout != 30*time.Minute || len(c.UDPTimeouts) != 2 || c.Servers != 3 {
		t.Errorf("defaults: %+v", c)
	}
	for _, bad := range []Config{
		{VanillaBinary: "v"},
		{RendezvousBinary: "r", VanillaBinary: "v", UDPTimeouts: []time.Duration{30 * time.Second, 30 * time.Second}},
		{RendezvousBinary: "r", VanillaBinary: "v", UDPTimeouts: []time.Duration{1500 * time.Millisecond}},
		{RendezvousBinary: "r", VanillaBinary: "v", Duration: -time.Second},
	} {
		if err := bad.setDefaults(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	// Names fit the lab's limits.
	if s := spec(Config{Servers: 3, UDPTimeouts: []time.Duration{30 * time.Second, 86400 * time.Second}}); len(s.Routers) != 4 || len(s.Hosts) != 8 {
		t.Errorf("spec: %+v", s)
	}
}

func TestMarkdown(t *testing.T) {
	r := &Result{Servers: 3, DurationS: 3600, SettleS: 600, Seconds: 3700, Rows: []Row{
		{Implementation: Rendezvous, Host: "rdv-30", UDPTimeoutS: 30, TCPTimeoutS: 1800, Settled: true, SettleS: 44,
			WindowS: 3600, InBytes: 70000, OutBytes: 60000, InBytesPerHour: 70000, OutBytesPerHour: 60000, PacketsPerHour: 2000,
			Reachable: true, Path: "relayed", FlowsStart: 3, FlowsKept: 3, RelaysSame: true},
		{Implementation: Vanilla, Host: "van-30", UDPTimeoutS: 30, TCPTimeoutS: 1800, SettleS: 600, Unsettled: "2 of 3 relays held",
			WindowS: 3600, LostConnections: 2, ReachError: "ping: no | answer", FlowsError: "conntrack -L: exit 1"},
	}}
	md := r.Markdown()
	for _, want := range []string{
		"| rendezvous | 30s | 30m0s | 1h0m0s | 70000 | 60000 | 130.0 | 2000 | 0 | yes, relayed | 3/3 |",
		"| vanilla go-libp2p | 30s | 30m0s | 1h0m0s | 0 | 0 | 0.0 | 0 | 2 | no: ping: no / answer | ? |",
		"NOT settled within 600 s (2 of 3 relays held)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

// FuzzParseFlows: any text parses without panicking, into flows with
// valid original tuples.
func FuzzParseFlows(f *testing.F) {
	f.Add(conntrackSample)
	f.Fuzz(func(t *testing.T, s string) {
		for _, fl := range parseFlows(s) {
			if !fl.src.IsValid() || !fl.dst.IsValid() {
				t.Fatalf("invalid flow %+v from %q", fl, s)
			}
		}
	})
}

// FuzzTrackers: any line is taken or ignored by both trackers without
// panicking.
func FuzzTrackers(f *testing.F) {
	f.Add([]byte(`{"event":"ready","peer_id":"x","status":{"relays":[{"relay":"a"}],"publish":{"relay_addrs":["/p2p-circuit"]}}}`))
	f.Add([]byte(`{"event":"status","relays":["a"],"routing_table":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		now := time.Now()
		for _, tr := range []tracker{&rdvTracker{want: 2}, &vanillaTracker{want: 3}} {
			tr.openWindow(now)
			tr.apply(b, now)
			tr.settled()
			tr.closeWindow(now)
			tr.window()
		}
	})
}
