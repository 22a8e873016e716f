package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/p2pos/rendezvous/scope"
)

var loop = scope.With(netip.MustParsePrefix("127.0.0.0/8"))

func newHost(t *testing.T, ip string) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/"+ip+"/udp/0/quic-v1"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// newPunchHost starts a host on all addresses, as nodes run (QUIC dials
// then leave from the listening socket, whose mapping a NAT would keep),
// that announces only its loopback address.
func newPunchHost(t *testing.T) (host.Host, *PunchService) {
	t.Helper()
	h := newHost(t, "0.0.0.0")
	loopback := func() []ma.Multiaddr {
		var out []ma.Multiaddr
		for _, a := range h.Addrs() {
			if manet.IsIPLoopback(a) {
				out = append(out, a)
			}
		}
		return out
	}
	s := NewPunchService(h, loop, loopback, nil)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return h, s
}

func connectHosts(t *testing.T, ctx context.Context, from, to host.Host) {
	t.Helper()
	var addrs []ma.Multiaddr
	for _, a := range to.Addrs() {
		if manet.IsIPLoopback(a) {
			addrs = append(addrs, a)
		}
	}
	if err := from.Connect(ctx, peer.AddrInfo{ID: to.ID(), Addrs: addrs}); err != nil {
		t.Fatal(err)
	}
}

// TestPunchThroughRelay: A asks R to coordinate with B, which R holds a
// connection to; B dials A back and A ends up with a direct connection.
// R refuses while it is not a relay, and for a peer it does not know.
func TestPunchThroughRelay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, rs := newPunchHost(t)
	a, as := newPunchHost(t)
	b, _ := newPunchHost(t)
	c := newHost(t, "127.0.0.1")
	connectHosts(t, ctx, a, r)
	connectHosts(t, ctx, b, r)

	var pe *PunchError
	if _, err := as.Punch(ctx, r.ID(), b.ID(), nil); !errors.As(err, &pe) || pe.Status != PunchRefused {
		t.Fatalf("relay off: %v, want refused", err)
	}
	rs.SetRelay(true)
	if _, err := as.Punch(ctx, r.ID(), c.ID(), nil); !errors.As(err, &pe) || pe.Status != PunchUnknownPeer {
		t.Fatalf("unknown target: %v, want unknown peer", err)
	}
	conn, err := as.Punch(ctx, r.ID(), b.ID(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if conn.RemotePeer() != b.ID() || IsRelayed(conn.RemoteMultiaddr()) {
		t.Fatalf("connection %s to %s", conn.RemoteMultiaddr(), conn.RemotePeer())
	}
}

// TestPunchRateLimited: a relay takes PerPeerBurst requests from one
// initiator at once, then refuses.
func TestPunchRateLimited(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, rs := newPunchHost(t)
	a, as := newPunchHost(t)
	rs.SetRelay(true)
	connectHosts(t, ctx, a, r)
	missing := newHost(t, "127.0.0.3").ID()
	var pe *PunchError
	for i := range DefaultPunchLimits().PerPeerBurst + 1 {
		_, err := as.Punch(ctx, r.ID(), missing, nil)
		want := PunchUnknownPeer
		if i == DefaultPunchLimits().PerPeerBurst {
			want = PunchRateLimited
		}
		if !errors.As(err, &pe) || pe.Status != want {
			t.Fatalf("request %d: %v, want %s", i, err, want)
		}
	}
}

func TestDialable(t *testing.T) {
	obs := ma.StringCast("/ip4/1.2.3.4/udp/4001/quic-v1")
	in := []ma.Multiaddr{
		ma.StringCast("/ip4/1.2.3.4/udp/5000/quic-v1"), // at the observed IP
		ma.StringCast("/ip4/5.6.7.8/udp/4001/quic-v1"), // a third party
		ma.StringCast("/ip4/192.168.1.20/tcp/4001"),    // LAN
		ma.StringCast("/ip4/127.0.0.1/tcp/4001"),       // loopback, out of scope
	}
	got := dialable(scope.Internet(), obs, in)
	// The LAN's TCP port is guessed at the observed IP: the peer was seen
	// over QUIC only.
	guess := ma.StringCast("/ip4/1.2.3.4/tcp/4001")
	if len(got) != 3 || !got[0].Equal(in[0]) || !got[1].Equal(guess) || !got[2].Equal(in[2]) {
		t.Fatalf("dialable %v", got)
	}
}

func TestGuessedAddrs(t *testing.T) {
	ip := netip.MustParseAddr("1.2.3.4")
	cases := []struct {
		name     string
		in, want []string
	}{
		{"tcp seen: nothing guessed",
			[]string{"/ip4/192.168.1.2/tcp/4001", "/ip4/1.2.3.4/tcp/33000"},
			[]string{"/ip4/1.2.3.4/tcp/33000", "/ip4/192.168.1.2/tcp/4001"}},
		{"quic seen: tcp guessed, once",
			[]string{"/ip4/192.168.1.2/udp/4001/quic-v1", "/ip4/192.168.1.2/tcp/4001", "/ip4/10.0.0.2/tcp/4002", "/ip4/1.2.3.4/udp/4001/quic-v1"},
			[]string{"/ip4/1.2.3.4/udp/4001/quic-v1", "/ip4/1.2.3.4/tcp/4001", "/ip4/192.168.1.2/udp/4001/quic-v1", "/ip4/192.168.1.2/tcp/4001", "/ip4/10.0.0.2/tcp/4002"}},
		{"no guess from loopback, another family or a public address",
			[]string{"/ip4/127.0.0.1/tcp/4001", "/ip6/fd00::2/tcp/4001", "/ip4/5.6.7.8/tcp/4001"},
			[]string{"/ip4/127.0.0.1/tcp/4001", "/ip6/fd00::2/tcp/4001", "/ip4/5.6.7.8/tcp/4001"}},
	}
	for _, c := range cases {
		var in []ma.Multiaddr
		for _, a := range c.in {
			in = append(in, ma.StringCast(a))
		}
		got := withGuessedAddrs(ip, in)
		var gs []string
		for _, a := range got {
			gs = append(gs, a.String())
		}
		if !slices.Equal(gs, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, gs, c.want)
		}
	}
	if got := withGuessedAddrs(netip.Addr{}, nil); got != nil {
		t.Errorf("no IP: %v", got)
	}
}

func TestPunchWire(t *testing.T) {
	id := testID(t)
	m := punchMsg{Type: msgForward, NAT: PunchNAT{Known: true, Dependent: true, Sprays: true}, Token: [8]byte{1, 2, 3, 4, 5, 6, 7, 8},
		Peer: id, Observed: ma.StringCast("/ip4/1.2.3.4/udp/4001/quic-v1"),
		Addrs: []ma.Multiaddr{ma.StringCast("/ip4/192.168.1.20/tcp/4001"), ma.StringCast("/ip6/::1/udp/1/quic-v1")}}
	b, err := m.encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := readPunchMsg(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if got.Type != m.Type || got.NAT != m.NAT || got.Token != m.Token || got.Peer != m.Peer || !got.Observed.Equal(m.Observed) || len(got.Addrs) != 2 || !got.Addrs[1].Equal(m.Addrs[1]) {
		t.Fatalf("round trip: %+v", got)
	}
	// Every truncation is refused, and so is a byte more.
	for i := range len(b) - 2 {
		if _, err := parsePunchMsg(b[2 : 2+i]); !errors.Is(err, errMalformed) {
			t.Errorf("truncated to %d: %v", i, err)
		}
	}
	if _, err := parsePunchMsg(append(b[2:], 0)); !errors.Is(err, errMalformed) {
		t.Errorf("trailing byte: %v", err)
	}
	bad := bytes.Clone(b[2:])
	bad[2] = 0x20 // an unknown NAT flag
	if _, err := parsePunchMsg(bad); !errors.Is(err, errMalformed) {
		t.Errorf("unknown NAT flag: %v", err)
	}
	too := m
	too.Addrs = make([]ma.Multiaddr, maxPunchAddrs+1)
	for i := range too.Addrs {
		too.Addrs[i] = m.Addrs[0]
	}
	if _, err := too.encode(); err == nil {
		t.Error("encoded too many addresses")
	}
}

func FuzzPunchMsg(f *testing.F) {
	id, _ := peer.Decode("12D3KooWGieGVbRfiLBt6RkfEGnqazHevw5sdKDjh2xDQsXdMEhD")
	for _, m := range []punchMsg{
		{Type: msgRequest, NAT: PunchNAT{Known: true, Strict: true, Sprays: true}, Token: [8]byte{9, 9, 9}, Peer: id,
			Addrs: []ma.Multiaddr{ma.StringCast("/ip4/1.2.3.4/udp/4001/quic-v1")}},
		{Type: msgForward, Peer: id, Observed: ma.StringCast("/ip4/1.2.3.4/tcp/4001")},
		{Type: msgAnswer, Status: PunchRateLimited},
	} {
		b, err := m.encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[2:])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parsePunchMsg(b)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("error %v does not wrap errMalformed", err)
			}
			return
		}
		if len(m.Addrs) > maxPunchAddrs {
			t.Fatalf("%d addresses", len(m.Addrs))
		}
		// What parses encodes again, to the same bytes.
		out, err := m.encode()
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", m, err)
		}
		if !bytes.Equal(out[2:], b) {
			t.Fatalf("re-encoded %x, parsed %x", out[2:], b)
		}
	})
}

func FuzzSprayPacket(f *testing.F) {
	token := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	for _, k := range []byte{sprayHello, sprayProbe, sprayAnswer} {
		f.Add(sprayPacket(k, token))
	}
	f.Add([]byte{0x40, 1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		kind, ok := parseSprayPacket(b, token)
		if !ok {
			return
		}
		if !bytes.Equal(sprayPacket(kind, token), b) {
			t.Fatalf("accepted %x", b)
		}
		// QUIC hands it over as a non-QUIC packet.
		if b[0]&0xc0 != 0 {
			t.Fatalf("first byte %#x looks like QUIC", b[0])
		}
	})
}

// portGater refuses every connection whose remote port is port.
type portGater struct{ port int }

func (g portGater) refuses(a ma.Multiaddr) bool {
	if len(a) < 2 {
		return false
	}
	na, err := manet.ToNetAddr(a[:2])
	if err != nil {
		return false
	}
	u, ok := na.(*net.UDPAddr)
	return ok && u.Port == g.port
}
func (g portGater) InterceptPeerDial(peer.ID) bool { return true }
func (g portGater) InterceptAddrDial(_ peer.ID, a ma.Multiaddr) bool {
	return !g.refuses(a)
}
func (g portGater) InterceptAccept(c network.ConnMultiaddrs) bool {
	return !g.refuses(c.RemoteMultiaddr())
}
func (g portGater) InterceptSecured(_ network.Direction, _ peer.ID, c network.ConnMultiaddrs) bool {
	return !g.refuses(c.RemoteMultiaddr())
}
func (g portGater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

// localPortRange is the kernel's range of ports for sockets bound to
// port 0.
func localPortRange(t *testing.T) [2]int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return [2]int{minSprayPort, maxSprayPort}
	}
	var r [2]int
	if _, err := fmt.Sscan(string(b), &r[0], &r[1]); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestSprayPunch: A says its mapping is endpoint-dependent and B's record
// says B filters strictly, so A opens its sockets and B sprays. B refuses
// every connection from or to A's QUIC socket, so that only the spray can
// connect them: B's connection goes to one of A's spray sockets, and A's
// comes from the forwarder that socket became.
func TestSprayPunch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, rs := newPunchHost(t)
	rs.SetRelay(true)
	var aq, bq SharedQUIC
	ah, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/0.0.0.0/udp/0/quic-v1"), libp2p.DisableMetrics(), aq.Transport())
	if err != nil {
		t.Fatal(err)
	}
	defer ah.Close()
	aListen, ok := quicListenAddr(ah)
	if !ok {
		t.Fatal("A has no QUIC listener")
	}
	bh, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/0.0.0.0/udp/0/quic-v1"), libp2p.DisableMetrics(), bq.Transport(),
		libp2p.ConnectionGater(portGater{port: int(aListen.Port())}))
	if err != nil {
		t.Fatal(err)
	}
	defer bh.Close()
	loopAddrs := func(h host.Host) func() []ma.Multiaddr {
		return func() []ma.Multiaddr {
			var out []ma.Multiaddr
			for _, a := range h.Addrs() {
				if manet.IsIPLoopback(a) {
					out = append(out, a)
				}
			}
			return out
		}
	}
	dependent := PunchNAT{Known: true, Dependent: true, Strict: true}
	strict := PunchNAT{Known: true, Strict: true}
	type sprayEnd struct {
		role   string
		hit    bool
		probes int
	}
	ends := make(chan sprayEnd, 4)
	observe := WithSprayObserver(func(role string, hit bool, probes int) { ends <- sprayEnd{role, hit, probes} })
	as := NewPunchService(ah, loop, loopAddrs(ah), nil, WithPunchNAT(func() PunchNAT { return dependent }), WithSharedUDP(aq.PacketConn), observe)
	defer as.Close()
	bs := NewPunchService(bh, loop, loopAddrs(bh), nil, WithPunchNAT(func() PunchNAT { return strict }), WithSharedUDP(bq.PacketConn), observe)
	if bs.sprayPorts != [2]int{minSprayPort, maxSprayPort} {
		t.Fatalf("spray ports %v by default", bs.sprayPorts)
	}
	bs.sprayPorts = localPortRange(t) // where A's sockets are: a sure hit
	defer bs.Close()
	connectHosts(t, ctx, ah, r)
	connectHosts(t, ctx, bh, r)

	c, tr, err := as.PunchTraced(ctx, r.ID(), bh.ID(), loopAddrs(bh)(), strict)
	if err != nil {
		t.Fatalf("punch: %v (trace %+v)", err, tr)
	}
	if tr.Spray != "catch" {
		t.Fatalf("A's part %q, want catch", tr.Spray)
	}
	real, ok := as.Forwarded(c.RemoteMultiaddr())
	if !ok {
		t.Fatalf("A's connection from %s did not come through a forwarder (B listens on %v; trace %+v; B probes %d)", c.RemoteMultiaddr(), bh.Network().ListenAddresses(), tr, bs.SprayProbes())
	}
	if p := bs.SprayProbes(); p == 0 || p > sprayProbes {
		t.Fatalf("B sent %d probes", p)
	}
	// B's side of the connection is there once B's dial completes.
	bc, err := WaitDirect(ctx, bh, ah.ID())
	if err != nil {
		t.Fatalf("B has no connection to A: %v", err)
	}
	na, _ := manet.ToNetAddr(bc.RemoteMultiaddr()[:2])
	if port := na.(*net.UDPAddr).Port; port == int(aListen.Port()) {
		t.Fatalf("B reached A's QUIC socket %s, not a spray socket", bc.RemoteMultiaddr())
	}
	t.Logf("B sent %d probes; B reaches A at %s, A sees B at %s through %s", bs.SprayProbes(), bc.RemoteMultiaddr(), real, c.RemoteMultiaddr())
	// Each side says how its part went.
	got := map[string]sprayEnd{}
	for len(got) < 2 {
		select {
		case e := <-ends:
			got[e.role] = e
		case <-ctx.Done():
			t.Fatalf("spray ends reported: %+v", got)
		}
	}
	if c, sp := got["catch"], got["spray"]; !c.hit || c.probes != 0 || !sp.hit || uint64(sp.probes) != bs.SprayProbes() {
		t.Fatalf("spray ends %+v", got)
	}
	// The connection carries streams both ways.
	if _, err := ah.NewStream(ctx, bh.ID(), PunchProtocol); err != nil {
		t.Fatal(err)
	}
}
