package natlab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Router is a NAT router: a namespace whose WAN link sits on the internet
// (or on another router's LAN) and whose LAN is a bridge its hosts hang on.
type Router struct {
	lab      *Lab
	name     string
	kind     Kind
	n        int // 1-based router number: LAN subnet and link names
	ns       string
	wanIf    string
	lanIf    string
	wanAddr  netip.Addr
	wanGW    netip.Addr
	lan      netip.Prefix
	upstream *Router // nil: on the internet
	inner    *Router // CGNAT: the home router its hosts sit behind

	udpTimeout time.Duration // effective, read back from the kernel
	tcpTimeout time.Duration

	nextHost int // next host number on the LAN; guarded by building, single goroutine
	upnp     *upnpd

	mu        sync.Mutex
	blackhole bool // guarded by mu
}

// Name returns the router's name. The home router of a CGNAT router "x" is
// named "x/home".
func (r *Router) Name() string { return r.name }

// Kind returns the router's kind. The home router of a CGNAT router is
// PortRestricted.
func (r *Router) Kind() Kind { return r.kind }

// Namespace returns the name of the router's network namespace.
func (r *Router) Namespace() string { return r.ns }

// WANAddr returns the router's address on its WAN side: for a router on the
// internet, the public address its LAN hosts' mappings use.
func (r *Router) WANAddr() netip.Addr { return r.wanAddr }

// LANAddr returns the router's own address on its LAN (the hosts' gateway,
// and where miniupnpd listens on UPnP routers).
func (r *Router) LANAddr() netip.Addr { return r.lanAddr() }

// LANPrefix returns the router's LAN. For a CGNAT router this is the
// carrier's LAN in 100.64.0.0/10; its hosts are on Inner().LANPrefix().
func (r *Router) LANPrefix() netip.Prefix { return r.lan }

// Inner returns the home router behind a CGNAT router, nil for other kinds.
func (r *Router) Inner() *Router { return r.inner }

// Upstream returns the router whose LAN this router's WAN is on, nil for a
// router on the internet.
func (r *Router) Upstream() *Router { return r.upstream }

// UDPTimeout returns the idle lifetime of UDP mappings in force: the
// RouterSpec's, or the kernel's default.
func (r *Router) UDPTimeout() time.Duration { return r.udpTimeout }

// TCPTimeout returns the idle lifetime of established TCP mappings in force.
func (r *Router) TCPTimeout() time.Duration { return r.tcpTimeout }

func (r *Router) lanAddr() netip.Addr { return nthAddr(r.lan, 1) }

// hostLAN returns the router whose LAN hosts of r sit on.
func (r *Router) hostLAN() *Router {
	if r.inner != nil {
		return r.inner
	}
	return r
}

func (r *Router) allocLAN() (netip.Addr, error) {
	if r.nextHost >= maxLANHosts+2 {
		return netip.Addr{}, fmt.Errorf("natlab: router %s: LAN full", r.name)
	}
	a := nthAddr(r.lan, r.nextHost)
	r.nextHost++
	return a, nil
}

// Command returns a command that runs a program inside the router's
// namespace (with `ip netns exec`), for example conntrack or nft.
func (r *Router) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", r.ns, name}, args...)...)
}

// FlushConntrack forgets every connection the router tracks, and so every
// mapping made by traffic. Mappings miniupnpd made stay.
func (r *Router) FlushConntrack(ctx context.Context) error {
	_, err := nsExec(ctx, r.ns, "", "conntrack", "-F")
	return err
}

// Counters are packet and byte counts of a router, from nftables counters.
type Counters struct {
	// In and Out count everything received and sent on the WAN link.
	InPackets, InBytes   uint64
	OutPackets, OutBytes uint64
	// Dropped counts what the firewall dropped: unsolicited packets from the
	// WAN, UDP on UDPBlocked routers, everything while blackholed.
	DroppedPackets, DroppedBytes uint64
}

// Counters reads the router's counters.
func (r *Router) Counters(ctx context.Context) (Counters, error) {
	out, err := nsExec(ctx, r.ns, "", "nft", "-j", "list", "counters", "table", "inet", nftTable)
	if err != nil {
		return Counters{}, err
	}
	var doc struct {
		Nftables []struct {
			Counter *struct {
				Name    string `json:"name"`
				Packets uint64 `json:"packets"`
				Bytes   uint64 `json:"bytes"`
			} `json:"counter"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return Counters{}, fmt.Errorf("natlab: parse nft counters: %w", err)
	}
	var c Counters
	for _, e := range doc.Nftables {
		if e.Counter == nil {
			continue
		}
		switch e.Counter.Name {
		case "wan_in":
			c.InPackets, c.InBytes = e.Counter.Packets, e.Counter.Bytes
		case "wan_out":
			c.OutPackets, c.OutBytes = e.Counter.Packets, e.Counter.Bytes
		case "dropped":
			c.DroppedPackets, c.DroppedBytes = e.Counter.Packets, e.Counter.Bytes
		}
	}
	return c, nil
}

// SetBlackhole makes the router drop every packet it would route, receive
// or send (on), or work again (off). Routers of kind Blackhole start on.
func (r *Router) SetBlackhole(ctx context.Context, on bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := nft(ctx, r.ns, blackholeRules(on)); err != nil {
		return err
	}
	r.blackhole = on
	return nil
}

// Blackholed reports whether the router drops everything.
func (r *Router) Blackholed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.blackhole
}

// buildRouter creates a router from its spec; a CGNAT spec creates the
// carrier router and its home router.
func (l *Lab) buildRouter(ctx context.Context, rs RouterSpec) error {
	var up *Router
	if rs.Behind != "" {
		up = l.routerByName[rs.Behind]
	}
	r, err := l.newRouter(ctx, rs.Name, rs.Kind, up, rs)
	if err != nil {
		return err
	}
	l.routerByName[rs.Name] = r
	if rs.Kind == CGNAT {
		home, err := l.newRouter(ctx, rs.Name+"/home", PortRestricted, r, rs)
		if err != nil {
			return err
		}
		r.inner = home
	}
	return nil
}

// newRouter creates one router namespace with its WAN link on up's LAN (the
// internet if up is nil), its LAN bridge, sysctls and ruleset.
func (l *Lab) newRouter(ctx context.Context, name string, kind Kind, up *Router, rs RouterSpec) (*Router, error) {
	n := len(l.routers) + 1
	if n > maxRouters {
		return nil, fmt.Errorf("natlab: more than %d routers", maxRouters)
	}
	r := &Router{
		lab:      l,
		name:     name,
		kind:     kind,
		n:        n,
		upstream: up,
		wanIf:    l.ifName("w", n),
		lanIf:    l.ifName("l", n),
		nextHost: 2,
	}
	if kind == CGNAT {
		r.lan = carrierLAN(n)
	} else {
		r.lan = homeLAN(n)
	}
	var err error
	if r.ns, err = l.addNamespace(ctx, fmt.Sprintf("r%d-%s", n, strings.ReplaceAll(name, "/", "-"))); err != nil {
		return nil, err
	}
	l.routers = append(l.routers, r)

	var wanPrefix netip.Prefix
	if up == nil {
		if l.wanRouters >= maxWANRouters {
			return nil, fmt.Errorf("natlab: more than %d routers on the internet", maxWANRouters)
		}
		r.wanAddr = wanRouterAddr(l.wanRouters)
		l.wanRouters++
		r.wanGW = internetGW
		wanPrefix = netip.PrefixFrom(r.wanAddr, internetPrefix.Bits())
		if err := veth(ctx, l.internetNS, l.ifName("u", n), l.bridge, r.ns, r.wanIf); err != nil {
			return nil, err
		}
	} else {
		if r.wanAddr, err = up.allocLAN(); err != nil {
			return nil, err
		}
		r.wanGW = up.lanAddr()
		wanPrefix = netip.PrefixFrom(r.wanAddr, up.lan.Bits())
		if err := veth(ctx, up.ns, l.ifName("u", n), up.lanIf, r.ns, r.wanIf); err != nil {
			return nil, err
		}
	}
	if err := address(ctx, r.ns, r.wanIf, wanPrefix, r.wanGW); err != nil {
		return nil, err
	}
	steps := [][]string{
		{"-n", r.ns, "link", "add", r.lanIf, "type", "bridge"},
		{"-n", r.ns, "addr", "add", netip.PrefixFrom(r.lanAddr(), r.lan.Bits()).String(), "dev", r.lanIf},
		{"-n", r.ns, "link", "set", r.lanIf, "up"},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return nil, err
		}
	}
	if err := r.configureKernel(ctx, rs); err != nil {
		return nil, err
	}
	if err := nft(ctx, r.ns, ruleset(r.ruleParams())); err != nil {
		return nil, err
	}
	if kind == Blackhole {
		if err := r.SetBlackhole(ctx, true); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// configureKernel turns forwarding on, keeps bridged LAN traffic out of the
// firewall, and sets the conntrack timeouts of the router's namespace.
func (r *Router) configureKernel(ctx context.Context, rs RouterSpec) error {
	if err := sysctl(ctx, r.ns, false, "net.ipv4.ip_forward=1"); err != nil {
		return err
	}
	if err := sysctl(ctx, r.ns, true, "net.bridge.bridge-nf-call-iptables=0"); err != nil {
		return err
	}
	var kv []string
	if s := int(rs.UDPTimeout / time.Second); s > 0 {
		kv = append(kv,
			fmt.Sprintf("net.netfilter.nf_conntrack_udp_timeout=%d", s),
			fmt.Sprintf("net.netfilter.nf_conntrack_udp_timeout_stream=%d", s))
	}
	if s := int(rs.TCPTimeout / time.Second); s > 0 {
		kv = append(kv, fmt.Sprintf("net.netfilter.nf_conntrack_tcp_timeout_established=%d", s))
	}
	if len(kv) > 0 {
		if err := sysctl(ctx, r.ns, false, kv...); err != nil {
			return err
		}
	}
	// A flow that saw replies lives by the stream timeout, one that did not
	// by the plain one; report the longer.
	udp, err := sysctlRead(ctx, r.ns, "net.netfilter.nf_conntrack_udp_timeout")
	if err != nil {
		return err
	}
	stream, err := sysctlRead(ctx, r.ns, "net.netfilter.nf_conntrack_udp_timeout_stream")
	if err != nil {
		return err
	}
	tcp, err := sysctlRead(ctx, r.ns, "net.netfilter.nf_conntrack_tcp_timeout_established")
	if err != nil {
		return err
	}
	r.udpTimeout = time.Duration(max(udp, stream)) * time.Second
	r.tcpTimeout = time.Duration(tcp) * time.Second
	return nil
}

func (r *Router) ruleParams() ruleParams {
	p := ruleParams{
		wan:        r.wanIf,
		lan:        r.lanIf,
		lanPrefix:  r.lan,
		udpTimeout: r.udpTimeout,
		tcpTimeout: r.tcpTimeout,
	}
	switch r.kind {
	case FullCone:
		p.filter = filterNone
	case Restricted:
		p.filter = filterAddr
	case Symmetric:
		p.mapping = mapRandom
	case UDPBlocked:
		p.blockUDP = true
	case UPnP:
		p.upnp = true
		p.stunServers = []netip.Addr{stunAddr1, stunAddr2}
	}
	return p
}
