package probe

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// filterConn wraps a loopback socket and drops what arrives as a NAT with
// endpoint-independent mapping and the given filtering would: nothing
// (EndpointIndependent), packets from IP addresses the socket never sent
// to (AddressDependent), or from addresses and ports it never sent to
// (AddressAndPortDependent).
type filterConn struct {
	net.PacketConn
	filtering Behavior
	mu        sync.Mutex
	sent      map[netip.AddrPort]bool
}

func (c *filterConn) WriteTo(b []byte, a net.Addr) (int, error) {
	if ap, ok := addrPortOf(a); ok {
		c.mu.Lock()
		c.sent[ap] = true
		c.mu.Unlock()
	}
	return c.PacketConn.WriteTo(b, a)
}

func (c *filterConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, from, err := c.PacketConn.ReadFrom(b)
		if err != nil {
			return n, from, err
		}
		if ap, ok := addrPortOf(from); ok && c.allowed(ap) {
			return n, from, nil
		}
	}
}

func (c *filterConn) allowed(from netip.AddrPort) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.filtering {
	case AddressDependent:
		for a := range c.sent {
			if a.Addr() == from.Addr() {
				return true
			}
		}
		return false
	case AddressAndPortDependent:
		return c.sent[from]
	}
	return true
}

func filteringSockets(t *testing.T, f Behavior) func() (net.PacketConn, error) {
	return func() (net.PacketConn, error) {
		pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return nil, err
		}
		return &filterConn{PacketConn: pc, filtering: f, sent: map[netip.AddrPort]bool{}}, nil
	}
}

// generous limits: every test client shares 127.0.0.1.
var generous = WithLimits(Limits{Rate: 10000, Burst: 10000})

func classifyLoopback(t *testing.T, servers []netip.AddrPort, f Behavior) Result {
	t.Helper()
	res, err := Classify(context.Background(), servers, filteringSockets(t, f), WithWait(100*time.Millisecond), WithHairpin(false))
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestClassifyFiltering classifies the three filtering behaviours with two
// sibling servers: each is told apart for sure.
func TestClassifyFiltering(t *testing.T) {
	a, b := startSiblings(t, generous)
	for _, f := range []Behavior{EndpointIndependent, AddressDependent, AddressAndPortDependent} {
		res := classifyLoopback(t, []netip.AddrPort{a.primary, b.primary}, f)
		if res.Mapping != EndpointIndependent || res.Filtering != f || !res.Determined() || res.Confidence != 1 ||
			res.Servers != 2 || !res.Siblings || !res.SiblingChecked {
			t.Errorf("%v filtering: got %+v", f, res)
		}
	}
}

// TestClassifyUndetermined: where the servers cannot tell two behaviours
// apart, Classify says so.
func TestClassifyUndetermined(t *testing.T) {
	t.Run("not-siblings", func(t *testing.T) {
		a := startServer(t, "127.0.0.1", generous)
		b := startServer(t, "127.0.0.2", generous)
		for _, f := range []Behavior{EndpointIndependent, AddressDependent} {
			res := classifyLoopback(t, []netip.AddrPort{a.primary, b.primary}, f)
			if res.Mapping != EndpointIndependent || res.MappingAmbiguousWith != BehaviorUnknown ||
				res.Filtering != AddressDependent || res.FilteringAmbiguousWith != EndpointIndependent ||
				res.FilteringConfidence != 0.5 || res.Siblings || res.Determined() {
				t.Errorf("%v filtering: got %+v", f, res)
			}
		}
		// Address-and-port-dependent filtering needs no sibling.
		res := classifyLoopback(t, []netip.AddrPort{a.primary, b.primary}, AddressAndPortDependent)
		if res.Filtering != AddressAndPortDependent || !res.Determined() {
			t.Errorf("APD filtering: got %+v", res)
		}
	})
	// a forwards to b, but b does not take a's forwards: a acknowledges,
	// and nothing comes. Without the check of the path, that would read as
	// address-dependent filtering for sure.
	t.Run("one-sided", func(t *testing.T) {
		b := startServer(t, "127.0.0.2", generous)
		a := startServer(t, "127.0.0.1", generous, WithSiblings(b.primary))
		res := classifyLoopback(t, []netip.AddrPort{a.primary, b.primary}, EndpointIndependent)
		if res.Filtering != AddressDependent || res.FilteringAmbiguousWith != EndpointIndependent ||
			!res.Siblings || res.SiblingChecked {
			t.Errorf("got %+v", res)
		}
		if st := a.Stats(); st.Forwarded == 0 {
			t.Error("a never forwarded")
		}
		if st := b.Stats(); st.Ignored == 0 {
			t.Error("b took a stranger's forwards")
		}
	})
}

// TestClassifyPicksServers: a server that does not answer is skipped for
// B, and the sibling is looked for among all the other servers.
func TestClassifyPicksServers(t *testing.T) {
	a, b := startSiblings(t, generous)
	dead := localAddr(listen(t, "127.0.0.3:0")) // bound, never read
	other := startServer(t, "127.0.0.4", generous)
	res := classifyLoopback(t, []netip.AddrPort{dead, a.primary, dead, other.primary, b.primary}, AddressDependent)
	if res.Mapping != EndpointIndependent || res.Filtering != AddressDependent || !res.Determined() ||
		res.Servers != 2 || !res.SiblingChecked {
		t.Errorf("got %+v", res)
	}
	if st := other.Stats(); st.Received == 0 {
		t.Error("the first answering server at another address was not used for the mapping")
	}
}

// TestSiblingsAtRunTime adds and removes siblings of running servers.
func TestSiblingsAtRunTime(t *testing.T) {
	a := startServer(t, "127.0.0.1", generous)
	b := startServer(t, "127.0.0.2", generous)
	servers := []netip.AddrPort{a.primary, b.primary}
	if res := classifyLoopback(t, servers, EndpointIndependent); res.Siblings {
		t.Fatalf("siblings before any was added: %+v", res)
	}
	if err := a.AddSibling(b.primary); err != nil {
		t.Fatal(err)
	}
	if err := b.AddSibling(netip.AddrPortFrom(netip.MustParseAddr("::ffff:127.0.0.1"), a.primary.Port())); err != nil {
		t.Fatal(err)
	}
	if err := a.AddSibling(b.primary); err != nil {
		t.Fatalf("adding twice: %v", err)
	}
	if got := a.Siblings(); len(got) != 1 || got[0] != b.primary {
		t.Errorf("a's siblings %v", got)
	}
	if res := classifyLoopback(t, servers, EndpointIndependent); res.Filtering != EndpointIndependent || !res.Determined() {
		t.Errorf("with siblings: %+v", res)
	}
	b.RemoveSibling(a.primary)
	if len(b.Siblings()) != 0 {
		t.Errorf("b's siblings after removal: %v", b.Siblings())
	}
	if res := classifyLoopback(t, servers, EndpointIndependent); res.FilteringAmbiguousWith != EndpointIndependent {
		t.Errorf("after removal: %+v", res)
	}
	for _, bad := range []netip.AddrPort{{}, netip.MustParseAddrPort("127.0.0.1:0"), netip.MustParseAddrPort("0.0.0.0:1"), netip.MustParseAddrPort("224.0.0.1:1")} {
		if err := a.AddSibling(bad); err == nil {
			t.Errorf("AddSibling(%v) accepted", bad)
		}
	}
}

// TestForwardRateLimit: a sibling's forwards beyond its budget are dropped.
func TestForwardRateLimit(t *testing.T) {
	a, b := startSiblings(t, WithLimits(Limits{ForwardRate: 0.001, ForwardBurst: 2}))
	c := newClient(t, "127.0.0.1")
	for range 3 {
		b.handleForward(0, message{Type: typePeerForward, TxID: newTxID(), Budget: 80, Addr: c.addr()}, a.primary)
	}
	for range 2 {
		if d := c.must("PEER-SEND-RESPONSE"); d.m.Type != typePeerSendResponse || d.from != b.primary {
			t.Fatalf("got %v from %v", d.m.Type, d.from)
		}
	}
	if d, ok := c.recv(20 * time.Millisecond); ok {
		t.Fatalf("got %v beyond the sibling's budget", d.m.Type)
	}
	if st := b.Stats(); st.RateLimited != 1 {
		t.Errorf("rate limited %d, want 1", st.RateLimited)
	}
}
