package natlab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// labTimeout is the UDP and TCP idle timeout the kind tests configure.
const labTimeout = 6 * time.Second

// natCase is what RFC 4787 / RFC 5780 say a router kind does.
type natCase struct {
	kind Kind
	// eim: endpoint-independent mapping (RFC 5780 §4.3): one external
	// address and port for every destination.
	eim bool
	// preserve: the external port is the socket's port.
	preserve bool
	// Filtering (RFC 5780 §4.4), after the host sent to reflector 1 port 1:
	// fromOtherPort: reflector 1 may answer from its port 2.
	// fromOtherAddr: reflector 2 may send to the mapping.
	fromOtherPort, fromOtherAddr bool
}

var natCases = []natCase{
	{kind: FullCone, eim: true, preserve: true, fromOtherPort: true, fromOtherAddr: true},
	{kind: Restricted, eim: true, preserve: true, fromOtherPort: true},
	{kind: PortRestricted, eim: true, preserve: true},
	{kind: Symmetric},
	{kind: CGNAT, eim: true, preserve: true},
	{kind: UPnP, eim: true, preserve: true}, // without a requested mapping
}

// TestRouterKinds builds one lab with a router of every NAT kind, each with
// one host, and two public reflectors, then checks each kind's mapping,
// filtering, silent drops and counters with plain sockets, and the UDP and
// TCP timeouts of all kinds at once (sharing the idle periods).
func TestRouterKinds(t *testing.T) {
	spec := Spec{Hosts: []HostSpec{{Name: "s1"}, {Name: "s2"}}}
	for _, tc := range natCases {
		spec.Routers = append(spec.Routers, RouterSpec{Name: "r-" + string(tc.kind), Kind: tc.kind, UDPTimeout: labTimeout, TCPTimeout: labTimeout})
		spec.Hosts = append(spec.Hosts, HostSpec{Name: "h-" + string(tc.kind), Router: "r-" + string(tc.kind)})
	}
	l := newLab(t, spec)
	r1, r2 := startReflector(t, l.Host("s1")), startReflector(t, l.Host("s2"))
	for _, tc := range natCases {
		t.Run(string(tc.kind), func(t *testing.T) {
			testKind(t, l, tc, r1, r2)
		})
	}
	t.Run("timeouts", func(t *testing.T) {
		testTimeouts(t, l, r1)
	})
}

func testKind(t *testing.T, l *Lab, tc natCase, r1, r2 *reflector) {
	h, r := l.Host("h-"+string(tc.kind)), l.Router("r-"+string(tc.kind))
	if got := r.UDPTimeout(); got != labTimeout {
		t.Fatalf("UDPTimeout = %v, want %v", got, labTimeout)
	}
	public := r.WANAddr()

	t.Run("mapping", func(t *testing.T) {
		c, err := h.ListenUDP(netip.AddrPort{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		local := netip.MustParseAddrPort(c.LocalAddr().String())
		var seen []netip.AddrPort
		for _, dst := range []netip.AddrPort{r1.addr(0), r1.addr(1), r2.addr(0), r2.addr(1)} {
			m, ok := discover(t, c, dst)
			if !ok {
				t.Fatalf("no answer from %v", dst)
			}
			t.Logf("socket %v -> %v seen as %v", local, dst, m)
			if m.Addr() != public {
				t.Errorf("mapped address %v, want the router's public address %v", m.Addr(), public)
			}
			seen = append(seen, m)
		}
		for i, m := range seen {
			if tc.eim && m != seen[0] {
				t.Errorf("destination %d mapped to %v, destination 0 to %v: want endpoint-independent mapping", i, m, seen[0])
			}
			if tc.preserve && m.Port() != local.Port() {
				t.Errorf("external port %d, want the local port %d preserved", m.Port(), local.Port())
			}
			for j := range i {
				if !tc.eim && m.Port() == seen[j].Port() {
					t.Errorf("destinations %d and %d share port %d: want a mapping per destination", j, i, m.Port())
				}
			}
		}
		if !tc.eim {
			sequential := true
			for i := 1; i < len(seen); i++ {
				sequential = sequential && int(seen[i].Port())-int(seen[i-1].Port()) == 1
			}
			if sequential {
				t.Errorf("ports %v are sequential, want random", seen)
			}
		}
	})

	t.Run("filtering", func(t *testing.T) {
		before := counters(t, r)
		c, err := h.ListenUDP(netip.AddrPort{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		m, ok := discover(t, c, r1.addr(0))
		if !ok {
			t.Fatal("no answer from reflector 1")
		}
		r1.send(t, 0, m, "same-endpoint")
		r1.send(t, 1, m, "other-port")
		r2.send(t, 0, m, "other-addr")
		got := collect(t, c, 300*time.Millisecond)
		want := map[string]bool{"same-endpoint": true, "other-port": tc.fromOtherPort, "other-addr": tc.fromOtherAddr}
		for k, w := range want {
			if got[k] != w {
				t.Errorf("packet %q delivered = %v, want %v", k, got[k], w)
			}
		}
		after := counters(t, r)
		dropped := after.DroppedPackets - before.DroppedPackets
		wantDrops := !tc.fromOtherPort || !tc.fromOtherAddr
		if wantDrops && dropped == 0 {
			t.Error("unsolicited packets were not counted as dropped")
		}
		if after.InBytes <= before.InBytes || after.OutBytes <= before.OutBytes {
			t.Errorf("WAN counters did not grow: before %+v after %+v", before, after)
		}
		// Unsolicited packets draw no ICMP error, neither to a port without a
		// mapping nor (where filtered) to the mapping itself.
		if err := silent(t, r2.host, netip.AddrPortFrom(public, 1)); err != nil {
			t.Errorf("unsolicited packet to an unmapped port: %v", err)
		}
		if !tc.fromOtherAddr {
			if err := silent(t, r2.host, m); err != nil {
				t.Errorf("unsolicited packet to the mapping: %v", err)
			}
		}
	})
}

// timeoutProbe is one kind's idle UDP and TCP flows.
type timeoutProbe struct {
	tc             natCase
	udp            *net.UDPConn
	mapped         netip.AddrPort
	client, server *net.TCPConn
}

// testTimeouts proves, for every kind at once, that idle UDP and TCP
// mappings survive labTimeout-2s and are gone after labTimeout+2s.
func testTimeouts(t *testing.T, l *Lab, r1 *reflector) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*labTimeout)
	defer cancel()
	s1 := r1.host
	ln, err := s1.ListenTCP(netip.AddrPortFrom(s1.Addr(), 0))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	var probes []*timeoutProbe
	parent := t // the flows must outlive the subtest that starts them
	for _, tc := range natCases {
		t.Run("start/"+string(tc.kind), func(t *testing.T) {
			h := l.Host("h-" + string(tc.kind))
			p := &timeoutProbe{tc: tc}
			client, err := h.DialTCP(ctx, netip.AddrPort{}, netip.MustParseAddrPort(ln.Addr().String()))
			if err != nil {
				t.Fatal(err)
			}
			parent.Cleanup(func() { client.Close() })
			ln.SetDeadline(time.Now().Add(5 * time.Second))
			server, err := ln.AcceptTCP()
			if err != nil {
				t.Fatal(err)
			}
			parent.Cleanup(func() { server.Close() })
			// Keepalives would refresh the mapping.
			client.SetKeepAlive(false)
			server.SetKeepAlive(false)
			p.client, p.server = client, server
			if p.udp, err = h.ListenUDP(netip.AddrPort{}); err != nil {
				t.Fatal(err)
			}
			parent.Cleanup(func() { p.udp.Close() })
			var ok bool
			if p.mapped, ok = discover(t, p.udp, r1.addr(0)); !ok {
				t.Fatal("no answer from reflector 1")
			}
			probes = append(probes, p)
		})
	}

	idle(t, ctx, labTimeout-2*time.Second)
	for _, p := range probes {
		r1.send(t, 0, p.mapped, "still")
		if _, err := p.server.Write([]byte{'a'}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range probes {
		t.Run("alive/"+string(p.tc.kind), func(t *testing.T) {
			if !await(t, p.udp, "still", time.Second) {
				t.Errorf("UDP mapping gone after %v idle, want it alive until %v", labTimeout-2*time.Second, labTimeout)
			}
			if err := readByte(p.client, 'a', time.Second); err != nil {
				t.Errorf("TCP mapping after %v idle: %v", labTimeout-2*time.Second, err)
			}
		})
	}

	idle(t, ctx, labTimeout+2*time.Second)
	for _, p := range probes {
		r1.send(t, 0, p.mapped, "gone")
		if _, err := p.server.Write([]byte{'b'}); err != nil {
			t.Fatal(err)
		}
	}
	idle(t, ctx, time.Second) // delivery takes well under a millisecond
	for _, p := range probes {
		t.Run("gone/"+string(p.tc.kind), func(t *testing.T) {
			if got := collect(t, p.udp, 10*time.Millisecond); got["gone"] {
				t.Errorf("UDP mapping alive after %v idle, want it gone after %v", labTimeout+2*time.Second, labTimeout)
			}
			if err := readByte(p.client, 'b', 10*time.Millisecond); err == nil {
				t.Errorf("TCP mapping alive after %v idle, want it gone after %v", labTimeout+2*time.Second, labTimeout)
			}
			// A new outbound flow gets a fresh mapping, and it works.
			m2, ok := discover(t, p.udp, r1.addr(0))
			if !ok {
				t.Fatal("no answer from reflector 1 after the timeout")
			}
			t.Logf("mapping %v before the timeout, %v after", p.mapped, m2)
			if !p.tc.eim && m2 == p.mapped {
				t.Errorf("symmetric router reused mapping %v after it expired", m2)
			}
		})
	}
}

// readByte reports whether byte b arrives on c within window.
func readByte(c *net.TCPConn, b byte, window time.Duration) error {
	c.SetReadDeadline(time.Now().Add(window))
	buf := make([]byte, 1)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if buf[0] != b {
		return fmt.Errorf("got %q, want %q", buf[0], b)
	}
	return nil
}

// TestUDPBlocked checks that UDP never leaves while TCP connects out.
func TestUDPBlocked(t *testing.T) {
	t.Parallel()
	l := newLab(t, Spec{
		Routers: []RouterSpec{{Name: "r", Kind: UDPBlocked}},
		Hosts:   []HostSpec{{Name: "h", Router: "r"}, {Name: "s1"}},
	})
	h, r, s1 := l.Host("h"), l.Router("r"), l.Host("s1")
	refl := startReflector(t, s1)
	before := counters(t, r)
	c, err := h.ListenUDP(netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if m, ok := discover(t, c, refl.addr(0)); ok {
		t.Fatalf("UDP went through, seen as %v", m)
	}
	after := counters(t, r)
	if after.DroppedPackets-before.DroppedPackets < 3 {
		t.Errorf("dropped %d packets, want the 3 probes", after.DroppedPackets-before.DroppedPackets)
	}
	if after.OutPackets != before.OutPackets {
		t.Errorf("%d packets left on the WAN", after.OutPackets-before.OutPackets)
	}

	ln, err := s1.ListenTCP(netip.AddrPortFrom(s1.Addr(), 0))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := h.DialTCP(ctx, netip.AddrPort{}, netip.MustParseAddrPort(ln.Addr().String()))
	if err != nil {
		t.Fatalf("TCP out: %v", err)
	}
	defer conn.Close()
	ln.SetDeadline(time.Now().Add(5 * time.Second))
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if got := netip.MustParseAddrPort(sc.RemoteAddr().String()).Addr(); got != r.WANAddr() {
		t.Errorf("TCP seen from %v, want %v", got, r.WANAddr())
	}
}

// TestBlackhole checks that a Blackhole router drops everything, that its
// counters show it, and that SetBlackhole turns it on and off.
func TestBlackhole(t *testing.T) {
	t.Parallel()
	l := newLab(t, Spec{
		Routers: []RouterSpec{{Name: "r", Kind: Blackhole}},
		Hosts:   []HostSpec{{Name: "h", Router: "r"}, {Name: "s1"}},
	})
	h, r, s1 := l.Host("h"), l.Router("r"), l.Host("s1")
	refl := startReflector(t, s1)
	c, err := h.ListenUDP(netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if !r.Blackholed() {
		t.Fatal("Blackhole router starts working")
	}
	before := counters(t, r)
	if m, ok := discover(t, c, refl.addr(0)); ok {
		t.Fatalf("UDP went through a blackhole, seen as %v", m)
	}
	ln, err := s1.ListenTCP(netip.AddrPortFrom(s1.Addr(), 0))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dctx, dcancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	conn, err := h.DialTCP(dctx, netip.AddrPort{}, netip.MustParseAddrPort(ln.Addr().String()))
	dcancel()
	if err == nil {
		conn.Close()
		t.Fatal("TCP went through a blackhole")
	}
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("TCP through a blackhole: %v, want a timeout", err)
	}
	after := counters(t, r)
	if after.DroppedPackets-before.DroppedPackets < 4 {
		t.Errorf("dropped %d packets, want at least the 3 UDP probes and a SYN", after.DroppedPackets-before.DroppedPackets)
	}

	if err := r.SetBlackhole(ctx, false); err != nil {
		t.Fatal(err)
	}
	if _, ok := discover(t, c, refl.addr(0)); !ok {
		t.Fatal("no UDP after SetBlackhole(false)")
	}
	if err := r.SetBlackhole(ctx, true); err != nil {
		t.Fatal(err)
	}
	if _, ok := discover(t, c, refl.addr(1)); ok {
		t.Fatal("UDP went through after SetBlackhole(true)")
	}
}
