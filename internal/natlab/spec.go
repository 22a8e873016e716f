package natlab

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"time"
)

// Kind is the behaviour of a router. A public host is not behind any router,
// so "public" is not a Kind.
type Kind string

// Router kinds. See the package doc for what each one does and how.
const (
	// FullCone maps endpoint-independently and filters endpoint-independently:
	// once a LAN socket has sent a packet out, anyone may send to its mapping.
	FullCone Kind = "full-cone"
	// Restricted maps endpoint-independently and filters by address: a remote
	// IP the socket has sent to may reach the mapping from any port.
	Restricted Kind = "restricted"
	// PortRestricted maps endpoint-independently and filters by address and
	// port. This is what most home routers do.
	PortRestricted Kind = "port-restricted"
	// Symmetric maps address-and-port dependently with random ports and
	// filters by address and port.
	Symmetric Kind = "symmetric"
	// CGNAT is two NAT layers: a carrier-grade NAT in front of a
	// PortRestricted home router. Hosts of a CGNAT router sit behind the
	// home router.
	CGNAT Kind = "cgnat"
	// UDPBlocked is PortRestricted for TCP and drops every UDP packet from
	// the LAN to the internet.
	UDPBlocked Kind = "udp-blocked"
	// UPnP is PortRestricted plus miniupnpd on the LAN side, answering UPnP
	// IGD, NAT-PMP and PCP.
	UPnP Kind = "upnp"
	// Blackhole is a deliberately broken router: PortRestricted rules with
	// every packet it would route, receive or send dropped. It exists so
	// that tests can prove they notice a network that does not work.
	Blackhole Kind = "blackhole"
)

// Kinds returns every router kind, in a stable order.
func Kinds() []Kind {
	return []Kind{FullCone, Restricted, PortRestricted, Symmetric, CGNAT, UDPBlocked, UPnP, Blackhole}
}

func (k Kind) valid() bool {
	for _, v := range Kinds() {
		if k == v {
			return true
		}
	}
	return false
}

// Spec declares a lab. The zero Spec is an empty internet.
type Spec struct {
	// Internet shapes the links of the lab's internet.
	Internet Internet
	// Routers are built in dependency order (a router after the one it sits
	// Behind), whatever their order here.
	Routers []RouterSpec
	// Hosts are endpoints: public ones on the internet, or behind a router.
	Hosts []HostSpec
}

// Internet shapes the lab's internet: every IPv4 packet crossing it (from a
// public host or router WAN to another) is dropped with probability Loss,
// or else delayed by Delay. Traffic within a LAN is not shaped. The zero
// value is a perfect wire. Shaping needs br_netfilter and iptables-legacy
// (see the package doc); without them New fails with ErrUnsupported.
type Internet struct {
	// Delay is added to every packet, one way: a round trip between two
	// internet nodes takes at least 2*Delay. At most 10s.
	Delay time.Duration
	// Loss is the probability, in [0, 1), that a packet is dropped.
	Loss float64
}

func (in Internet) shaped() bool { return in.Delay != 0 || in.Loss != 0 }

// RouterSpec declares a router.
type RouterSpec struct {
	// Name is unique among routers and hosts: lower-case letters, digits
	// and '-', at most 24 characters.
	Name string
	Kind Kind
	// UDPTimeout is how long an idle UDP mapping lives (both conntrack's
	// unreplied and stream timeouts, and the filter entries of FullCone and
	// Restricted). 0 keeps the kernel default. Whole seconds, at least 1s.
	UDPTimeout time.Duration
	// TCPTimeout is how long an idle established TCP mapping lives. 0 keeps
	// the kernel default. Whole seconds, at least 1s.
	TCPTimeout time.Duration
	// Behind is the name of the router whose LAN this router's WAN sits on;
	// "" puts it on the internet. Behind a CGNAT router means on the
	// carrier's LAN, beside its home router.
	Behind string
}

// HostSpec declares a host.
type HostSpec struct {
	// Name is unique among routers and hosts, as for RouterSpec.Name.
	Name string
	// Router is the name of the router the host sits behind; "" makes it a
	// public host on the internet.
	Router string
	// SecondAddr gives a public host a second internet address on the same
	// link, as RFC 5780 servers have (see Host.Addrs).
	SecondAddr bool
}

// ErrUnsupported is returned by New for a Spec this machine's kernel cannot
// build.
var ErrUnsupported = errors.New("natlab: unsupported")

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,23}$`)

const (
	maxRouters     = 200 // LAN 192.168.n.0/24, n in [1, maxRouters]
	maxWANRouters  = 250 // WAN 10.77.1.n
	maxPublicHosts = 240 // 10.77.0.10 and up
	maxLANHosts    = 250 // per LAN, .2 and up
	maxHosts       = 999 // link names carry the host number
)

// validate checks a Spec and returns its routers in build order.
func (s Spec) validate() ([]RouterSpec, error) {
	if d := s.Internet.Delay; d < 0 || d > maxDelay {
		return nil, fmt.Errorf("natlab: internet delay %v: want [0, %v]", d, maxDelay)
	}
	if l := s.Internet.Loss; !(l >= 0 && l < 1) {
		return nil, fmt.Errorf("natlab: internet loss %v: want [0, 1)", l)
	}
	if len(s.Hosts) > maxHosts {
		return nil, fmt.Errorf("natlab: more than %d hosts", maxHosts)
	}
	names := map[string]bool{}
	byName := map[string]RouterSpec{}
	for _, r := range s.Routers {
		if !nameRE.MatchString(r.Name) {
			return nil, fmt.Errorf("natlab: router name %q: want %s", r.Name, nameRE)
		}
		if names[r.Name] {
			return nil, fmt.Errorf("natlab: name %q used twice", r.Name)
		}
		names[r.Name] = true
		if !r.Kind.valid() {
			return nil, fmt.Errorf("natlab: router %q: unknown kind %q", r.Name, r.Kind)
		}
		for _, d := range []time.Duration{r.UDPTimeout, r.TCPTimeout} {
			if d < 0 || (d > 0 && (d < time.Second || d%time.Second != 0)) {
				return nil, fmt.Errorf("natlab: router %q: timeout %v: want 0 or whole seconds", r.Name, d)
			}
		}
		byName[r.Name] = r
	}
	for _, h := range s.Hosts {
		if !nameRE.MatchString(h.Name) {
			return nil, fmt.Errorf("natlab: host name %q: want %s", h.Name, nameRE)
		}
		if names[h.Name] {
			return nil, fmt.Errorf("natlab: name %q used twice", h.Name)
		}
		names[h.Name] = true
		if _, ok := byName[h.Router]; h.Router != "" && !ok {
			return nil, fmt.Errorf("natlab: host %q: no router %q", h.Name, h.Router)
		}
	}
	// Order routers so that each comes after the router it sits behind.
	var order []RouterSpec
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(r RouterSpec) error
	visit = func(r RouterSpec) error {
		switch state[r.Name] {
		case 1:
			return fmt.Errorf("natlab: router %q: Behind forms a cycle", r.Name)
		case 2:
			return nil
		}
		state[r.Name] = 1
		if r.Behind != "" {
			up, ok := byName[r.Behind]
			if !ok {
				return fmt.Errorf("natlab: router %q: Behind names no router %q", r.Name, r.Behind)
			}
			if up.Kind == Blackhole {
				return fmt.Errorf("natlab: router %q: cannot sit behind blackhole router %q", r.Name, r.Behind)
			}
			if err := visit(up); err != nil {
				return err
			}
		}
		state[r.Name] = 2
		order = append(order, r)
		return nil
	}
	for _, r := range s.Routers {
		if err := visit(r); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// Addressing. The lab's internet is 10.77.0.0/16: a private range standing in
// for the public internet, which the library under test must be told to
// treat as public.
var (
	internetPrefix = netip.MustParsePrefix("10.77.0.0/16")
	internetGW     = netip.MustParseAddr("10.77.0.1")
	stunAddr1      = netip.MustParseAddr("10.77.255.1")
	stunAddr2      = netip.MustParseAddr("10.77.255.2")
)

// InternetPrefix returns the address range of the lab's internet,
// 10.77.0.0/16. Public hosts and router WAN addresses are in it.
func InternetPrefix() netip.Prefix { return internetPrefix }

func publicHostAddr(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 77, 0, byte(10 + i)}) }
func wanRouterAddr(i int) netip.Addr  { return netip.AddrFrom4([4]byte{10, 77, 1, byte(1 + i)}) }
func homeLAN(n int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(n), 0}), 24)
}
func carrierLAN(n int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, byte(n), 0}), 24)
}

// nthAddr returns the n-th address of p (p.Addr() + n).
func nthAddr(p netip.Prefix, n int) netip.Addr {
	a := p.Masked().Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
