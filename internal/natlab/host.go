package natlab

import (
	"context"
	"net"
	"net/netip"
	"os/exec"
)

// Host is an endpoint: a namespace with one link, on the internet (a public
// host) or on a router's LAN.
type Host struct {
	lab    *Lab
	name   string
	ns     string
	ifName string
	addr   netip.Addr
	addr2  netip.Addr // second address of a public host; invalid if none
	prefix netip.Prefix
	gw     netip.Addr
	router *Router // nil for a public host
}

// Name returns the host's name.
func (h *Host) Name() string { return h.name }

// Namespace returns the name of the host's network namespace.
func (h *Host) Namespace() string { return h.ns }

// Addr returns the address of the host's own interface: a public address
// for a public host, a LAN address otherwise.
func (h *Host) Addr() netip.Addr { return h.addr }

// Addrs returns the host's addresses: Addr, then the second address of a
// public host built with HostSpec.SecondAddr.
func (h *Host) Addrs() []netip.Addr {
	if h.addr2.IsValid() {
		return []netip.Addr{h.addr, h.addr2}
	}
	return []netip.Addr{h.addr}
}

// Gateway returns the host's default gateway.
func (h *Host) Gateway() netip.Addr { return h.gw }

// Router returns the router the host sits directly behind (for a host of a
// CGNAT router, the home router), or nil for a public host.
func (h *Host) Router() *Router { return h.router }

// Command returns a command that runs a program inside the host's
// namespace (with `ip netns exec`).
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.ns, name}, args...)...)
}

// Do runs fn on an OS thread switched into the host's namespace. Sockets fn
// creates live in the host's namespace. fn must create them synchronously:
// goroutines it starts run outside the namespace.
func (h *Host) Do(fn func() error) error {
	if h.lab.isClosed() {
		return errClosed
	}
	return inNamespace(h.ns, fn)
}

// ListenUDP opens a UDP socket in the host's namespace. An invalid address
// binds 0.0.0.0; port 0 picks a free port.
func (h *Host) ListenUDP(laddr netip.AddrPort) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := h.Do(func() (err error) {
		c, err = net.ListenUDP("udp4", udpAddr(laddr))
		return err
	})
	return c, err
}

// DialUDP opens a connected UDP socket in the host's namespace. Connected
// sockets report ICMP errors, which makes them the probe for silent drops.
func (h *Host) DialUDP(laddr, raddr netip.AddrPort) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := h.Do(func() (err error) {
		var l *net.UDPAddr
		if laddr.IsValid() || laddr.Port() != 0 {
			l = udpAddr(laddr)
		}
		c, err = net.DialUDP("udp4", l, net.UDPAddrFromAddrPort(raddr))
		return err
	})
	return c, err
}

// ListenTCP opens a TCP listener in the host's namespace.
func (h *Host) ListenTCP(laddr netip.AddrPort) (*net.TCPListener, error) {
	var ln *net.TCPListener
	err := h.Do(func() (err error) {
		ln, err = net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(unspecified(laddr)))
		return err
	})
	return ln, err
}

// DialTCP connects from the host's namespace. laddr may be the zero value.
// The whole handshake runs inside Do, bounded by ctx.
func (h *Host) DialTCP(ctx context.Context, laddr, raddr netip.AddrPort) (*net.TCPConn, error) {
	var c *net.TCPConn
	err := h.Do(func() error {
		d := net.Dialer{}
		if laddr.IsValid() || laddr.Port() != 0 {
			d.LocalAddr = net.TCPAddrFromAddrPort(unspecified(laddr))
		}
		conn, err := d.DialContext(ctx, "tcp4", raddr.String())
		if err != nil {
			return err
		}
		c = conn.(*net.TCPConn)
		return nil
	})
	return c, err
}

func unspecified(a netip.AddrPort) netip.AddrPort {
	if !a.Addr().IsValid() {
		return netip.AddrPortFrom(netip.IPv4Unspecified(), a.Port())
	}
	return a
}

func udpAddr(a netip.AddrPort) *net.UDPAddr { return net.UDPAddrFromAddrPort(unspecified(a)) }
