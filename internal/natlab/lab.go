package natlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Option configures New.
type Option func(*settings)

type settings struct {
	logf func(format string, args ...any)
}

// WithLogf sends the lab's diagnostics to logf, for example t.Logf: what
// went wrong while removing stale labs or closing, which New and Close
// otherwise only return or swallow. The default is silence.
func WithLogf(logf func(format string, args ...any)) Option {
	return func(s *settings) { s.logf = logf }
}

// closeTimeout bounds Close.
const closeTimeout = 30 * time.Second

// Lab is a running topology. Its methods are safe for concurrent use.
type Lab struct {
	prefix string
	dir    string // state directory: owner record, miniupnpd files
	logf   func(format string, args ...any)

	internetNS string
	bridge     string

	routers      []*Router // build order, home routers of CGNATs included
	routerByName map[string]*Router
	hosts        []*Host
	hostByName   map[string]*Host
	wanRouters   int // routers on the internet so far
	publicHosts  int

	stun   *stunServer // nil without UPnP routers
	shaper *shaper     // nil for a perfect internet

	closeOnce sync.Once
	closeErr  error

	mu     sync.Mutex
	closed bool // guarded by mu
}

// nsAddMu serializes `ip netns add`: concurrent first uses race on setting
// up the /run/netns mount.
var nsAddMu sync.Mutex

// New builds the lab a Spec declares: it checks the machine (Check), removes
// leftovers of dead earlier runs (CleanStale), then creates the internet,
// the routers in dependency order, the hosts, and starts miniupnpd on UPnP
// routers. When New fails it tears down whatever it built.
func New(ctx context.Context, spec Spec, opts ...Option) (_ *Lab, err error) {
	var s settings
	for _, o := range opts {
		o(&s)
	}
	if s.logf == nil {
		s.logf = func(string, ...any) {}
	}
	order, err := spec.validate()
	if err != nil {
		return nil, err
	}
	if err := Check(); err != nil {
		return nil, err
	}
	if err := CleanStale(ctx); err != nil {
		// Leftovers use other prefixes and do not disturb this run.
		s.logf("natlab: removing stale labs: %v", err)
	}
	me, err := self()
	if err != nil {
		return nil, fmt.Errorf("natlab: %w", err)
	}
	prefix, err := newPrefix()
	if err != nil {
		return nil, fmt.Errorf("natlab: %w", err)
	}
	dir, err := claim(prefix, me)
	if err != nil {
		return nil, fmt.Errorf("natlab: claim %s: %w", prefix, err)
	}
	l := &Lab{
		prefix:       prefix,
		dir:          dir,
		logf:         s.logf,
		routerByName: map[string]*Router{},
		hostByName:   map[string]*Host{},
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.Close())
		}
	}()
	if err := l.buildInternet(ctx); err != nil {
		return nil, err
	}
	if spec.Internet.shaped() {
		if l.shaper, err = startShaper(ctx, l.internetNS, spec.Internet); err != nil {
			return nil, err
		}
	}
	if slices.ContainsFunc(order, func(r RouterSpec) bool { return r.Kind == UPnP }) {
		if err := l.buildSTUN(ctx); err != nil {
			return nil, err
		}
	}
	for _, rs := range order {
		if err := l.buildRouter(ctx, rs); err != nil {
			return nil, err
		}
	}
	for _, hs := range spec.Hosts {
		if err := l.buildHost(ctx, hs); err != nil {
			return nil, err
		}
	}
	for _, r := range l.routers {
		if r.kind == UPnP {
			if err := r.startUPnP(ctx); err != nil {
				return nil, err
			}
		}
	}
	return l, nil
}

// Prefix returns the run prefix that starts the name of every namespace and
// link of this lab.
func (l *Lab) Prefix() string { return l.prefix }

// Host returns the named host, or nil.
func (l *Lab) Host(name string) *Host { return l.hostByName[name] }

// Router returns the named router, or nil. The home router of a CGNAT router
// is reached through Router.Inner.
func (l *Lab) Router(name string) *Router { return l.routerByName[name] }

// Hosts returns every host, in Spec order.
func (l *Lab) Hosts() []*Host { return slices.Clone(l.hosts) }

// Routers returns every router in build order, home routers of CGNAT
// routers included.
func (l *Lab) Routers() []*Router { return slices.Clone(l.routers) }

// Namespaces returns the names of the network namespaces of the lab.
func (l *Lab) Namespaces() ([]string, error) { return namespaces(l.prefix) }

func (l *Lab) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// errClosed is returned by socket helpers after Close.
var errClosed = fmt.Errorf("natlab: lab closed: %w", net.ErrClosed)

// Close stops miniupnpd, the STUN server and the shaper, kills every process left in
// the lab's namespaces, deletes the namespaces (and with them every link,
// address, route and rule of the lab) and the lab's state directory. It is
// idempotent: later calls return the first call's result.
//
// Sockets made by Host or Router helpers hold a reference to their
// namespace: until they are closed the kernel keeps that namespace alive,
// unnamed and cut off from the rest of the lab.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		var errs []error
		for _, r := range l.routers {
			if r.upnp != nil {
				errs = append(errs, r.upnp.stop())
			}
		}
		if l.stun != nil {
			errs = append(errs, l.stun.Close())
		}
		if l.shaper != nil {
			errs = append(errs, l.shaper.Close())
		}
		errs = append(errs, removeRun(ctx, l.prefix))
		l.closeErr = errors.Join(errs...)
		if l.closeErr != nil {
			l.logf("natlab: close %s: %v", l.prefix, l.closeErr)
		}
	})
	return l.closeErr
}

// addNamespace creates a namespace named prefix-suffix with loopback up and
// IPv6 off (the lab is IPv4 only; this keeps router solicitations and DAD
// out of the counters).
func (l *Lab) addNamespace(ctx context.Context, suffix string) (string, error) {
	ns := l.prefix + "-" + suffix
	nsAddMu.Lock()
	err := ip(ctx, "netns", "add", ns)
	nsAddMu.Unlock()
	if err != nil {
		return "", err
	}
	if err := ip(ctx, "-n", ns, "link", "set", "lo", "up"); err != nil {
		return "", err
	}
	if err := sysctl(ctx, ns, true, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
		return "", err
	}
	return ns, nil
}

// ifName returns a link name: the run prefix and a short role tag, at most
// 15 characters.
func (l *Lab) ifName(tag string, n int) string {
	s := fmt.Sprintf("%s%s%d", l.prefix, tag, n)
	if len(s) > 15 {
		panic("natlab: link name too long: " + s) // bounded by validate
	}
	return s
}

// buildInternet creates the internet: a bridge in its own namespace, with
// the lab's gateway address 10.77.0.1. The namespace does not forward, so
// packets for addresses outside the lab end there.
func (l *Lab) buildInternet(ctx context.Context) error {
	ns, err := l.addNamespace(ctx, "internet")
	if err != nil {
		return err
	}
	l.internetNS = ns
	l.bridge = l.prefix + "br"
	steps := [][]string{
		{"-n", ns, "link", "add", l.bridge, "type", "bridge"},
		{"-n", ns, "addr", "add", netip.PrefixFrom(internetGW, internetPrefix.Bits()).String(), "dev", l.bridge},
		{"-n", ns, "link", "set", l.bridge, "up"},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return err
		}
	}
	return sysctl(ctx, ns, true, "net.ipv4.ip_forward=0", "net.bridge.bridge-nf-call-iptables=0")
}

// veth creates a veth pair directly between two namespaces, so that no link
// ever exists in the root namespace, and sets both ends up. The outer end is
// enslaved to bridge.
func veth(ctx context.Context, outerNS, outer, bridge, innerNS, inner string) error {
	steps := [][]string{
		{"-n", outerNS, "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", innerNS},
		{"-n", outerNS, "link", "set", outer, "master", bridge},
		{"-n", outerNS, "link", "set", outer, "up"},
		{"-n", innerNS, "link", "set", inner, "up"},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return err
		}
	}
	return nil
}

// address gives a link an address and the namespace a default route.
func address(ctx context.Context, ns, dev string, addr netip.Prefix, gw netip.Addr) error {
	if err := ip(ctx, "-n", ns, "addr", "add", addr.String(), "dev", dev); err != nil {
		return err
	}
	return ip(ctx, "-n", ns, "route", "add", "default", "via", gw.String(), "dev", dev)
}

// buildSTUN creates the namespace of the lab's STUN server, which miniupnpd
// asks at start whether its WAN address is reachable from outside (see
// upnp.go).
func (l *Lab) buildSTUN(ctx context.Context) error {
	ns, err := l.addNamespace(ctx, "stun")
	if err != nil {
		return err
	}
	dev := l.ifName("s", 0)
	if err := veth(ctx, l.internetNS, l.ifName("t", 0), l.bridge, ns, dev); err != nil {
		return err
	}
	if err := address(ctx, ns, dev, netip.PrefixFrom(stunAddr1, internetPrefix.Bits()), internetGW); err != nil {
		return err
	}
	if err := ip(ctx, "-n", ns, "addr", "add", netip.PrefixFrom(stunAddr2, internetPrefix.Bits()).String(), "dev", dev); err != nil {
		return err
	}
	l.stun, err = startSTUN(ns)
	return err
}

// buildHost creates a host namespace on the internet or on a router's LAN.
func (l *Lab) buildHost(ctx context.Context, hs HostSpec) error {
	j := len(l.hosts) + 1
	h := &Host{lab: l, name: hs.Name, ifName: l.ifName("h", j)}
	var err error
	if h.ns, err = l.addNamespace(ctx, fmt.Sprintf("h%d-%s", j, hs.Name)); err != nil {
		return err
	}
	if hs.Router == "" {
		if l.publicHosts >= maxPublicHosts {
			return fmt.Errorf("natlab: more than %d public hosts", maxPublicHosts)
		}
		h.addr = publicHostAddr(l.publicHosts)
		l.publicHosts++
		h.prefix = netip.PrefixFrom(h.addr, internetPrefix.Bits())
		h.gw = internetGW
		if err := veth(ctx, l.internetNS, l.ifName("p", j), l.bridge, h.ns, h.ifName); err != nil {
			return err
		}
	} else {
		r := l.routerByName[hs.Router].hostLAN()
		h.router = r
		if h.addr, err = r.allocLAN(); err != nil {
			return err
		}
		h.prefix = netip.PrefixFrom(h.addr, r.lan.Bits())
		h.gw = r.lanAddr()
		if err := veth(ctx, r.ns, l.ifName("p", j), r.lanIf, h.ns, h.ifName); err != nil {
			return err
		}
	}
	if err := address(ctx, h.ns, h.ifName, h.prefix, h.gw); err != nil {
		return err
	}
	if hs.SecondAddr && hs.Router == "" {
		if l.publicHosts >= maxPublicHosts {
			return fmt.Errorf("natlab: more than %d public host addresses", maxPublicHosts)
		}
		h.addr2 = publicHostAddr(l.publicHosts)
		l.publicHosts++
		if err := ip(ctx, "-n", h.ns, "addr", "add", netip.PrefixFrom(h.addr2, internetPrefix.Bits()).String(), "dev", h.ifName); err != nil {
			return err
		}
	}
	l.hosts = append(l.hosts, h)
	l.hostByName[h.name] = h
	return nil
}
