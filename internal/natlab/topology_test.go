package natlab

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCGNAT checks the two NAT layers of a CGNAT router: the internet sees
// the carrier's address, the host sits behind a home router whose WAN is in
// 100.64.0.0/10, packets cross exactly two routers, and a second home
// router Behind the same carrier shares the carrier's address.
func TestCGNAT(t *testing.T) {
	t.Parallel()
	l := newLab(t, Spec{
		Routers: []RouterSpec{
			{Name: "isp", Kind: CGNAT},
			{Name: "home2", Kind: PortRestricted, Behind: "isp"},
		},
		Hosts: []HostSpec{{Name: "h", Router: "isp"}, {Name: "h2", Router: "home2"}, {Name: "s1"}},
	})
	shared := netip.MustParsePrefix("100.64.0.0/10")
	isp, home, home2 := l.Router("isp"), l.Router("isp").Inner(), l.Router("home2")
	h, h2 := l.Host("h"), l.Host("h2")
	if home == nil || home.Kind() != PortRestricted || home.Upstream() != isp {
		t.Fatalf("home router of a CGNAT: %+v", home)
	}
	if !InternetPrefix().Contains(isp.WANAddr()) {
		t.Errorf("carrier WAN %v not on the internet", isp.WANAddr())
	}
	for _, a := range []netip.Addr{isp.LANAddr(), home.WANAddr(), home2.WANAddr()} {
		if !shared.Contains(a) {
			t.Errorf("carrier-side address %v not in %v", a, shared)
		}
	}
	if h.Router() != home || h.Gateway() != home.LANAddr() || !home.LANPrefix().Contains(h.Addr()) {
		t.Errorf("host %v gw %v router %s: want it on %s's LAN %v", h.Addr(), h.Gateway(), h.Router().Name(), home.Name(), home.LANPrefix())
	}
	if home2.Upstream() != isp || h2.Router() != home2 {
		t.Errorf("home2 upstream %v, h2 router %v", home2.Upstream(), h2.Router())
	}

	refl := startReflector(t, l.Host("s1"))
	for _, host := range []*Host{h, h2} {
		c, err := host.ListenUDP(netip.AddrPort{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		m, ok := discover(t, c, refl.addr(0))
		if !ok {
			t.Fatalf("%s: no answer", host.Name())
		}
		if m.Addr() != isp.WANAddr() {
			t.Errorf("%s seen as %v, want the carrier's %v", host.Name(), m, isp.WANAddr())
		}
	}

	// Two layers: TTL 2 dies at the carrier, TTL 3 arrives.
	c, err := h.ListenUDP(netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		ttl  int
		want bool
	}{{2, false}, {3, true}} {
		setTTL(t, c, tc.ttl)
		if _, ok := discover(t, c, refl.addr(1)); ok != tc.want {
			t.Errorf("TTL %d reached the internet = %v, want %v", tc.ttl, ok, tc.want)
		}
	}
}

func setTTL(t *testing.T, c *net.UDPConn, ttl int) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, ttl)
	}); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
}

// TestReachability checks addressing and plain reachability between
// public hosts and between hosts on one LAN (which the router does not
// filter: they share a bridge), and Host.Command.
func TestReachability(t *testing.T) {
	t.Parallel()
	l := newLab(t, Spec{
		Routers: []RouterSpec{{Name: "r", Kind: Symmetric}},
		Hosts:   []HostSpec{{Name: "a"}, {Name: "b"}, {Name: "la", Router: "r"}, {Name: "lb", Router: "r"}},
	})
	a, b := l.Host("a"), l.Host("b")
	for _, h := range []*Host{a, b} {
		if !InternetPrefix().Contains(h.Addr()) || h.Router() != nil {
			t.Errorf("public host %s at %v behind %v", h.Name(), h.Addr(), h.Router())
		}
	}
	for _, pair := range [][2]*Host{{a, b}, {l.Host("la"), l.Host("lb")}} {
		refl := startReflector(t, pair[1])
		c, err := pair[0].ListenUDP(netip.AddrPort{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		m, ok := discover(t, c, refl.addr(0))
		if !ok || m.Addr() != pair[0].Addr() {
			t.Errorf("%s seen by %s as %v (answer %v), want its own address %v", pair[0].Name(), pair[1].Name(), m, ok, pair[0].Addr())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := a.Command(ctx, "ip", "-o", "-4", "addr", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.Contains(string(out), a.Addr().String()+"/16") {
		t.Errorf("ip addr inside %s:\n%s", a.Namespace(), out)
	}
}

// TestFlushConntrack checks that flushing a router's conntrack table
// forgets its mappings.
func TestFlushConntrack(t *testing.T) {
	t.Parallel()
	l := newLab(t, Spec{
		Routers: []RouterSpec{{Name: "r", Kind: PortRestricted}},
		Hosts:   []HostSpec{{Name: "h", Router: "r"}, {Name: "s1"}},
	})
	refl := startReflector(t, l.Host("s1"))
	c, err := l.Host("h").ListenUDP(netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m, ok := discover(t, c, refl.addr(0))
	if !ok {
		t.Fatal("no answer")
	}
	refl.send(t, 0, m, "before")
	if !await(t, c, "before", time.Second) {
		t.Fatal("reply to a live mapping lost")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Router("r").FlushConntrack(ctx); err != nil {
		t.Fatal(err)
	}
	refl.send(t, 0, m, "after")
	if await(t, c, "after", 300*time.Millisecond) {
		t.Error("mapping survived FlushConntrack")
	}
}
