package nat

import (
	"context"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/p2pos/rendezvous/nat/probe"
	"github.com/p2pos/rendezvous/scope"
)

// loop is the scope of the tests: loopback counts as public.
var loop = scope.With(netip.MustParsePrefix("127.0.0.0/8"))

// newHost starts a libp2p host listening on ip, a loopback address.
func newHost(t *testing.T, ip string) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/"+ip+"/udp/0/quic-v1"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// testService is a probe service whose host has the interface addresses
// ifaces, with a channel that hears of every change of its siblings.
type testService struct {
	*ProbeService
	changed chan struct{}
}

func newService(t *testing.T, h host.Host, ifaces ...string) *testService {
	t.Helper()
	var addrs []netip.Addr
	for _, a := range ifaces {
		addrs = append(addrs, netip.MustParseAddr(a))
	}
	ts := &testService{changed: make(chan struct{}, 1)}
	ts.ProbeService = NewProbeService(h, WithProbeScope(loop), func(s *probeSettings) {
		s.interfaceAddrs = func() ([]netip.Addr, error) { return addrs, nil }
		s.onChange = func() {
			select {
			case ts.changed <- struct{}{}:
			default:
			}
		}
	})
	t.Cleanup(func() {
		if err := ts.Close(); err != nil {
			t.Error(err)
		}
	})
	return ts
}

// waitSiblings waits until the service's siblings are exactly want.
func (ts *testService) waitSiblings(t *testing.T, ctx context.Context, want map[peer.ID]netip.AddrPort) {
	t.Helper()
	for {
		got := ts.Siblings()
		if len(got) == len(want) {
			same := true
			for p, a := range want {
				if got[p] != a {
					same = false
				}
			}
			if same {
				return
			}
		}
		select {
		case <-ts.changed:
		case <-ctx.Done():
			t.Fatalf("siblings %v, want %v", got, want)
		}
	}
}

func connect(t *testing.T, ctx context.Context, from, to host.Host) {
	t.Helper()
	if err := from.Connect(ctx, peer.AddrInfo{ID: to.ID(), Addrs: to.Addrs()}); err != nil {
		t.Fatal(err)
	}
}

func loopbackSockets(ip string) func() (net.PacketConn, error) {
	return func() (net.PacketConn, error) {
		return net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
	}
}

func classify(t *testing.T, ctx context.Context, found []ProbeServer, ip string) probe.Result {
	t.Helper()
	var primaries []netip.AddrPort
	for _, s := range found {
		primaries = append(primaries, s.Primary)
	}
	res, err := probe.Classify(ctx, primaries, loopbackSockets(ip), probe.WithWait(100*time.Millisecond), probe.WithHairpin(false))
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestProbeService finds a peer's probe server over libp2p and classifies
// the (absent) NAT of loopback with it.
func TestProbeService(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	server, client := newHost(t, "127.0.0.1"), newHost(t, "127.0.0.1")
	svc := newService(t, server, "127.0.0.1", "10.0.0.1")
	connect(t, ctx, client, server)
	// Disabled: nobody to ask.
	if _, err := FindProbeServers(ctx, client, loop, []peer.ID{server.ID()}, 2); !errors.Is(err, ErrNoProbeServers) {
		t.Fatalf("disabled service: %v, want ErrNoProbeServers", err)
	}
	if err := svc.SetEnabled(true); err != nil {
		t.Fatal(err)
	}
	// One public address (10.0.0.1 is not in scope): one server, on it.
	if got := svc.Servers(); len(got) != 1 || got[0].Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("servers %v", got)
	}
	// The protocol list reaches the client by identify push; ask again
	// once it knows.
	client.Peerstore().AddProtocols(server.ID(), ProbeProtocol)
	found, err := FindProbeServers(ctx, client, loop, []peer.ID{server.ID(), server.ID()}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0].Peer != server.ID() || found[0].Primary != svc.Servers()[0] || !found[0].Alt.IsValid() {
		t.Fatalf("found %+v", found)
	}
	// Out of scope: the internet scope does not count loopback.
	if _, err := FindProbeServers(ctx, client, scope.Internet(), []peer.ID{server.ID()}, 2); !errors.Is(err, ErrNoProbeServers) {
		t.Fatalf("out of scope: %v, want ErrNoProbeServers", err)
	}
	res := classify(t, ctx, found, "127.0.0.1")
	if res.Mapping != probe.EndpointIndependent || res.External.Addr() != netip.MustParseAddr("127.0.0.1") || res.Servers != 1 {
		t.Fatalf("classified loopback as %+v", res)
	}
	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := svc.SetEnabled(true); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("SetEnabled after Close: %v", err)
	}
	if err := svc.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestProbeServiceSiblings: the probe servers of two connected peers
// become siblings, so that a client tells filtering apart; the siblings
// go when the peers disconnect or a service is disabled, and come back
// when they reconnect.
func TestProbeServiceSiblings(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ha, hb, hc := newHost(t, "127.0.0.1"), newHost(t, "127.0.0.2"), newHost(t, "127.0.0.3")
	a, b := newService(t, ha, "127.0.0.1"), newService(t, hb, "127.0.0.2")
	if err := a.SetEnabled(true); err != nil {
		t.Fatal(err)
	}
	if err := b.SetEnabled(true); err != nil {
		t.Fatal(err)
	}
	// a dials: b sees it at the source address the kernel picks towards
	// b, 127.0.0.1, where a's server is.
	connect(t, ctx, ha, hb)
	pa, pb := a.Servers()[0], b.Servers()[0]
	a.waitSiblings(t, ctx, map[peer.ID]netip.AddrPort{hb.ID(): pb})
	b.waitSiblings(t, ctx, map[peer.ID]netip.AddrPort{ha.ID(): pa})
	if got := a.servers[0].srv.Siblings(); !slices.Equal(got, []netip.AddrPort{pb}) {
		t.Errorf("a's server has siblings %v, want %v", got, pb)
	}

	// A client connected to both classifies loopback for sure.
	connect(t, ctx, hc, ha)
	connect(t, ctx, hc, hb)
	hc.Peerstore().AddProtocols(ha.ID(), ProbeProtocol)
	hc.Peerstore().AddProtocols(hb.ID(), ProbeProtocol)
	found, err := FindProbeServers(ctx, hc, loop, []peer.ID{ha.ID(), hb.ID()}, 2)
	if err != nil || len(found) != 2 {
		t.Fatalf("found %+v, %v", found, err)
	}
	res := classify(t, ctx, found, "127.0.0.3")
	if res.Mapping != probe.EndpointIndependent || res.Filtering != probe.EndpointIndependent || !res.Determined() ||
		!res.SiblingChecked || res.Servers != 2 {
		t.Errorf("with siblings: %+v", res)
	}

	// Disconnected: the siblings go, and the client says what it cannot
	// tell.
	ha.Network().ClosePeer(hb.ID())
	a.waitSiblings(t, ctx, nil)
	b.waitSiblings(t, ctx, nil)
	if got := a.servers[0].srv.Siblings(); len(got) != 0 {
		t.Errorf("a's server still has siblings %v", got)
	}
	res = classify(t, ctx, found, "127.0.0.3")
	if res.Siblings || res.FilteringAmbiguousWith != probe.EndpointIndependent || res.Determined() {
		t.Errorf("without siblings: %+v", res)
	}

	// Reconnected: siblings again.
	connect(t, ctx, ha, hb)
	a.waitSiblings(t, ctx, map[peer.ID]netip.AddrPort{hb.ID(): pb})
	b.waitSiblings(t, ctx, map[peer.ID]netip.AddrPort{ha.ID(): pa})

	// b's service is disabled: a hears it by identify push.
	if err := b.SetEnabled(false); err != nil {
		t.Fatal(err)
	}
	a.waitSiblings(t, ctx, nil)
}

// TestProbeServiceRetries: a peer whose first answer fails is asked again.
func TestProbeServiceRetries(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ha, hb := newHost(t, "127.0.0.1"), newHost(t, "127.0.0.2")
	a := newService(t, ha, "127.0.0.1")
	if err := a.SetEnabled(true); err != nil {
		t.Fatal(err)
	}
	// b answers by hand: it resets the first question.
	var mu sync.Mutex
	asked := 0
	hb.SetStreamHandler(ProbeProtocol, func(st network.Stream) {
		mu.Lock()
		asked++
		first := asked == 1
		mu.Unlock()
		if first {
			st.Reset()
			return
		}
		st.Write([]byte{0x10, 0xe1, 0x10, 0xe2})
		st.Close()
	})
	connect(t, ctx, ha, hb)
	a.waitSiblings(t, ctx, map[peer.ID]netip.AddrPort{hb.ID(): netip.MustParseAddrPort("127.0.0.2:4321")})
	mu.Lock()
	defer mu.Unlock()
	if asked != 2 {
		t.Errorf("b asked %d times, want 2", asked)
	}
}

// TestProbeServiceTwoAddresses: a host with two public addresses runs a
// server on each, siblings of each other, and a client with that one peer
// tells every behaviour apart.
func TestProbeServiceTwoAddresses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	server, client := newHost(t, "127.0.0.4"), newHost(t, "127.0.0.6")
	svc := newService(t, server, "127.0.0.5", "127.0.0.4", "10.0.0.1", "::1")
	if err := svc.SetEnabled(true); err != nil {
		t.Fatal(err)
	}
	servers := svc.Servers()
	if len(servers) != 2 || servers[0].Addr() != netip.MustParseAddr("127.0.0.4") || servers[1].Addr() != netip.MustParseAddr("127.0.0.5") {
		t.Fatalf("servers %v", servers)
	}
	if got := svc.servers[0].srv.Siblings(); !slices.Equal(got, servers[1:]) {
		t.Errorf("first server's siblings %v, want %v", got, servers[1:])
	}
	connect(t, ctx, client, server)
	client.Peerstore().AddProtocols(server.ID(), ProbeProtocol)
	found, err := FindProbeServers(ctx, client, loop, []peer.ID{server.ID()}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 2 || found[0].Primary != servers[0] || found[1].Primary != servers[1] ||
		found[1].Peer != server.ID() || !found[1].Alt.IsValid() {
		t.Fatalf("found %+v, want %v", found, servers)
	}
	// Asked for one, a client gets the server at the address it is
	// connected to.
	if one, err := FindProbeServers(ctx, client, loop, []peer.ID{server.ID()}, 1); err != nil || len(one) != 1 || one[0].Primary != servers[0] {
		t.Fatalf("one server: %+v, %v", one, err)
	}
	res := classify(t, ctx, found, "127.0.0.6")
	if res.Mapping != probe.EndpointIndependent || res.Filtering != probe.EndpointIndependent || !res.Determined() || res.Servers != 2 {
		t.Errorf("one peer with two addresses: %+v", res)
	}
	// A client whose scope does not hold the second address gets one.
	only4 := scope.Only(netip.MustParsePrefix("127.0.0.4/32"))
	if one, err := FindProbeServers(ctx, client, only4, []peer.ID{server.ID()}, 2); err != nil || len(one) != 1 {
		t.Fatalf("narrow scope: %+v, %v", one, err)
	}
}

// TestProbeServiceUnspecifiedListener: a host with two addresses that
// accepts QUIC on 0.0.0.0 cannot tell from the connection which address a
// peer dialed; a peer that dialed the second gets the second's server.
func TestProbeServiceUnspecifiedListener(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	server, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/0.0.0.0/udp/0/quic-v1"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	client := newHost(t, "127.0.0.6")
	svc := newService(t, server, "127.0.0.4", "127.0.0.5")
	if err := svc.SetEnabled(true); err != nil {
		t.Fatal(err)
	}
	servers := svc.Servers()
	if len(servers) != 2 {
		t.Fatalf("servers %v", servers)
	}
	port, err := server.Addrs()[0].ValueForProtocol(ma.P_UDP)
	if err != nil {
		t.Fatal(err)
	}
	second := ma.StringCast("/ip4/127.0.0.5/udp/" + port + "/quic-v1")
	if err := client.Connect(ctx, peer.AddrInfo{ID: server.ID(), Addrs: []ma.Multiaddr{second}}); err != nil {
		t.Fatal(err)
	}
	if local := server.Network().ConnsToPeer(client.ID())[0].LocalMultiaddr(); !manet.IsIPUnspecified(local) {
		t.Logf("the connection reports its local address %s: the case is not exercised", local)
	}
	client.Peerstore().AddProtocols(server.ID(), ProbeProtocol)
	one, err := FindProbeServers(ctx, client, loop, []peer.ID{server.ID()}, 1)
	if err != nil || len(one) != 1 || one[0].Primary != servers[1] {
		t.Fatalf("found %+v, %v; want the server at %v", one, err, servers[1])
	}
}

// TestProbeServiceNoPublicAddress: a host with no public address (one
// public only through a port mapping) runs no probe server, and does not
// announce one; without a scope, it runs one on all addresses.
func TestProbeServiceNoPublicAddress(t *testing.T) {
	h := newHost(t, "127.0.0.1")
	svc := newService(t, h, "192.168.1.2")
	if err := svc.SetEnabled(true); err != nil {
		t.Fatal(err)
	}
	if got := svc.Servers(); len(got) != 0 || slices.Contains(h.Mux().Protocols(), ProbeProtocol) {
		t.Errorf("servers %v, protocols %v", got, h.Mux().Protocols())
	}
	if err := svc.SetEnabled(false); err != nil {
		t.Fatal(err)
	}

	unscoped := NewProbeService(h, func(s *probeSettings) {
		s.interfaceAddrs = func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("192.168.1.2")}, nil }
	})
	defer unscoped.Close()
	if err := unscoped.SetEnabled(true); err != nil {
		t.Fatal(err)
	}
	if got := unscoped.Servers(); len(got) != 1 || !got[0].Addr().IsUnspecified() || !slices.Contains(h.Mux().Protocols(), ProbeProtocol) {
		t.Errorf("without a scope: servers %v", got)
	}
}

func TestParseProbeAnswer(t *testing.T) {
	tests := []struct {
		hex   string
		want  probeAnswer
		error bool
	}{
		{"10e110e2", probeAnswer{primary: 4321, alt: 4322}, false},
		{"10e10000" + "00", probeAnswer{primary: 4321}, false},
		{"10e110e2" + "01" + "c6336401" + "10e3" + "10e4", probeAnswer{primary: 4321, alt: 4322,
			extra: []extraServer{{netip.MustParseAddr("198.51.100.1"), 4323, 4324}}}, false},
		// Unusable extras are skipped.
		{"10e110e2" + "02" + "00000000" + "10e3" + "10e4" + "c6336401" + "0000" + "10e4", probeAnswer{primary: 4321, alt: 4322}, false},
		{"10e1", probeAnswer{}, true},
		{"000010e2", probeAnswer{}, true},
		{"10e110e2" + "01" + "c6336401", probeAnswer{}, true},
		{"10e110e2" + "09", probeAnswer{}, true},
	}
	for _, tt := range tests {
		b, _ := hex.DecodeString(tt.hex)
		got, err := parseProbeAnswer(b)
		if (err != nil) != tt.error {
			t.Errorf("%s: error %v", tt.hex, err)
			continue
		}
		if err == nil && (got.primary != tt.want.primary || got.alt != tt.want.alt || !slices.Equal(got.extra, tt.want.extra)) {
			t.Errorf("%s: got %+v, want %+v", tt.hex, got, tt.want)
		}
	}
}

func FuzzParseProbeAnswer(f *testing.F) {
	for _, s := range []string{"10e110e2", "10e110e200", "10e110e201c633640110e310e4"} {
		b, _ := hex.DecodeString(s)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := parseProbeAnswer(b)
		if err != nil {
			return
		}
		if a.primary == 0 || len(a.extra) > maxExtraServers || len(b) > maxAnswer {
			t.Fatalf("accepted %x as %+v", b, a)
		}
		for _, e := range a.extra {
			if !e.ip.Is4() || e.primary == 0 || e.ip.IsUnspecified() || e.ip.IsMulticast() {
				t.Fatalf("accepted extra %+v in %x", e, b)
			}
		}
	})
}
