package nat

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2pos/rendezvous/nat/probe"
	"github.com/p2pos/rendezvous/scope"
)

// waitObserved waits, on o's change signal, until cond holds for o's
// addresses with at least min observers.
func waitObserved(t *testing.T, ctx context.Context, o *Observed, min int, cond func([]ObservedAddr) bool) []ObservedAddr {
	t.Helper()
	for {
		got := o.Addrs(min)
		if cond(got) {
			return got
		}
		select {
		case <-o.Changed():
		case <-ctx.Done():
			t.Fatalf("observed addresses %v: %v", got, ctx.Err())
		}
	}
}

// TestObserved: two peers at different addresses see the host at its
// listen address; when one leaves, one observer is left.
func TestObserved(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHost(t, "127.0.0.1")
	b, c := newHost(t, "127.0.0.2"), newHost(t, "127.0.0.3")
	o, err := NewObserved(h, loop, ObservedLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	lingering, err := NewObserved(h, loop)
	if err != nil {
		t.Fatal(err)
	}
	defer lingering.Close()
	connect(t, ctx, h, b)
	connect(t, ctx, h, c)
	waitObserved(t, ctx, lingering, 2, func(a []ObservedAddr) bool { return len(a) == 1 })
	listen := thinWaist(h.Addrs()[0])
	got := waitObserved(t, ctx, o, 2, func(a []ObservedAddr) bool { return len(a) == 1 })
	if !got[0].Addr.Equal(listen) || got[0].Observers != 2 {
		t.Fatalf("observed %v, want %s seen by 2", got, listen)
	}
	if m := o.Mapping(); m != probe.EndpointIndependent {
		t.Fatalf("UDP mapping %v, want endpoint-independent: two observers saw one address", m)
	}
	select { // what was signalled before is known
	case <-lingering.Changed():
	default:
	}
	if err := h.Network().ClosePeer(c.ID()); err != nil {
		t.Fatal(err)
	}
	select { // the lingering tracker saw the connection close
	case <-lingering.Changed():
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	waitObserved(t, ctx, o, 2, func(a []ObservedAddr) bool { return len(a) == 0 })
	if got := o.Addrs(1); len(got) != 1 || got[0].Observers != 1 {
		t.Fatalf("after one left: %v", got)
	}
	// By default an observation outlives its connection: the mapping
	// does not change when an idle connection is closed.
	if got := lingering.Addrs(2); len(got) != 1 || got[0].Observers != 2 {
		t.Fatalf("lingering after one left: %v", got)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
}

// fakeConn stands for a connection in observations put by hand.
type fakeConn struct {
	network.Conn
	n int
}

// TestObservedMapping: one socket seen at two ports by two observers
// is mapped dependently; one observer, or one observer twice, says
// nothing.
func TestObservedMapping(t *testing.T) {
	o := &Observed{conns: map[network.Conn]observation{}, linger: time.Minute}
	sock := string(ma.StringCast("/ip4/0.0.0.0/udp/4001/quic-v1").Bytes())
	put := func(n int, observer, addr string) {
		o.conns[fakeConn{n: n}] = observation{observer: observer, addr: ma.StringCast(addr), local: sock}
	}
	put(1, "198.51.100.1", "/ip4/203.0.113.7/udp/40001/quic-v1")
	if m := o.Mapping(); m != probe.BehaviorUnknown {
		t.Fatalf("one observer: %v", m)
	}
	put(2, "198.51.100.1", "/ip4/203.0.113.7/udp/40002/quic-v1")
	if m := o.Mapping(); m != probe.BehaviorUnknown {
		t.Fatalf("one observer twice: %v", m)
	}
	put(3, "198.51.100.2", "/ip4/203.0.113.7/udp/40001/quic-v1")
	if m := o.Mapping(); m != probe.AddressAndPortDependent {
		t.Fatalf("two ports for one socket: %v", m)
	}
	delete(o.conns, fakeConn{n: 2})
	if m := o.Mapping(); m != probe.EndpointIndependent {
		t.Fatalf("two observers, one address: %v", m)
	}
	// Observations of another socket speak for that socket only.
	tcp := string(ma.StringCast("/ip4/0.0.0.0/tcp/4001").Bytes())
	o.conns[fakeConn{n: 4}] = observation{observer: "198.51.100.3", addr: ma.StringCast("/ip4/203.0.113.7/tcp/1"), local: tcp}
	if m := o.Mapping(); m != probe.EndpointIndependent {
		t.Fatalf("with a TCP observation: %v", m)
	}
	o.conns[fakeConn{n: 5}] = observation{observer: "198.51.100.1", addr: ma.StringCast("/ip4/203.0.113.7/tcp/2"), local: tcp}
	if m := o.Mapping(); m != probe.AddressAndPortDependent {
		t.Fatalf("two ports for the TCP socket: %v", m)
	}
}

func TestThinWaist(t *testing.T) {
	for in, want := range map[string]string{
		"/ip4/1.2.3.4/udp/4001/quic-v1/p2p/12D3KooWGieGVbRfiLBt6RkfEGnqazHevw5sdKDjh2xDQsXdMEhD": "/ip4/1.2.3.4/udp/4001/quic-v1",
		"/ip4/1.2.3.4/tcp/4001":                  "/ip4/1.2.3.4/tcp/4001",
		"/ip6/::1/udp/4001/quic-v1/webtransport": "/ip6/::1/udp/4001/quic-v1",
		"/ip4/1.2.3.4/udp/4001":                  "",
		"/dns4/example.com/tcp/4001":             "",
	} {
		got := thinWaist(ma.StringCast(in))
		if (want == "" && got != nil) || (want != "" && (got == nil || got.String() != want)) {
			t.Errorf("thinWaist(%s) = %v, want %q", in, got, want)
		}
	}
}

// TestObservedScope: only peers at in-scope addresses are believed.
func TestObservedScope(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHost(t, "127.0.0.1")
	b, c := newHost(t, "127.0.0.2"), newHost(t, "127.0.0.3")
	o, err := NewObserved(h, scope.Only(netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("127.0.0.2/32")))
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	connect(t, ctx, h, c) // out of scope: c's report is ignored
	connect(t, ctx, h, b)
	got := waitObserved(t, ctx, o, 1, func(a []ObservedAddr) bool { return len(a) == 1 })
	if got[0].Observers != 1 {
		t.Fatalf("observed %v, want one observer", got)
	}
}

// TestObservedTrust: peers the trust function refuses are not believed.
func TestObservedTrust(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHost(t, "127.0.0.1")
	b, c := newHost(t, "127.0.0.2"), newHost(t, "127.0.0.3")
	const marker = protocol.ID("/test/observer")
	c.SetStreamHandler(marker, func(s network.Stream) { s.Reset() })
	o, err := NewObserved(h, loop, TrustObservers(func(ps []protocol.ID) bool { return slices.Contains(ps, marker) }))
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	connect(t, ctx, h, b) // not trusted
	connect(t, ctx, h, c)
	got := waitObserved(t, ctx, o, 1, func(a []ObservedAddr) bool { return len(a) == 1 })
	if got[0].Observers != 1 {
		t.Fatalf("observed %v, want one trusted observer", got)
	}
}
