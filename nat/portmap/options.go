package portmap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	logging "github.com/ipfs/go-log/v2"
)

// Defaults of the tunables.
const (
	// DefaultTimeout bounds one exchange with the gateway, per protocol.
	DefaultTimeout = 2 * time.Second
	// DefaultLifetime is the lifetime a Keeper asks for (RFC 6886's
	// recommendation).
	DefaultLifetime = 2 * time.Hour
)

// Well-known ports.
const (
	// GatewayPort is where gateways answer NAT-PMP and PCP.
	GatewayPort = 5351
	// SSDPPort is where UPnP devices listen for searches.
	SSDPPort = 1900
)

// ssdpMulticast is the SSDP multicast group and port.
var ssdpMulticast = netip.AddrPortFrom(netip.AddrFrom4([4]byte{239, 255, 255, 250}), SSDPPort)

// DialFunc opens a connection, as net.Dialer.DialContext does. The Client
// dials "udp4" (to the gateway's PCP and NAT-PMP port) and "tcp4" (to its
// UPnP HTTP server).
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// ListenPacketFunc opens a packet socket, as net.ListenConfig.ListenPacket
// does. The Client listens on "udp4" with an empty port for SSDP.
type ListenPacketFunc func(ctx context.Context, network, address string) (net.PacketConn, error)

type settings struct {
	gateway      netip.Addr // invalid: read the routing table
	localAddr    netip.Addr // invalid: learn from the sockets
	log          *logging.ZapEventLogger
	now          func() time.Time
	dial         DialFunc
	listenPacket ListenPacketFunc
	timeout      time.Duration
	lifetime     time.Duration
	protocols    []Protocol
	description  string

	// Test seams, set by unexported options only.
	gatewayPort uint16
	ssdpPort    uint16
	ssdpGroup   netip.AddrPort // invalid: no multicast search
	routeFile   string
	minBackoff  time.Duration
	maxBackoff  time.Duration
}

func defaultSettings() settings {
	return settings{
		now:          time.Now,
		dial:         (&net.Dialer{}).DialContext,
		listenPacket: (&net.ListenConfig{}).ListenPacket,
		timeout:      DefaultTimeout,
		lifetime:     DefaultLifetime,
		protocols:    []Protocol{PCP, NATPMP, UPnP},
		description:  "rendezvous",
		gatewayPort:  GatewayPort,
		ssdpPort:     SSDPPort,
		ssdpGroup:    ssdpMulticast,
		routeFile:    "/proc/net/route",
		minBackoff:   time.Second,
		maxBackoff:   5 * time.Minute,
	}
}

func (s *settings) validate() error {
	switch {
	case s.gateway.IsValid() && !s.gateway.Unmap().Is4():
		return fmt.Errorf("portmap: gateway %v is not IPv4", s.gateway)
	case s.localAddr.IsValid() && !s.localAddr.Unmap().Is4():
		return fmt.Errorf("portmap: local address %v is not IPv4", s.localAddr)
	case s.timeout <= 0:
		return errors.New("portmap: timeout must be positive")
	case s.lifetime < time.Second:
		return errors.New("portmap: lifetime must be at least 1s")
	case len(s.protocols) == 0:
		return errors.New("portmap: no protocol to use")
	case s.minBackoff <= 0 || s.maxBackoff < s.minBackoff:
		return errors.New("portmap: bad backoff")
	}
	seen := map[Protocol]bool{}
	for _, p := range s.protocols {
		if p != PCP && p != NATPMP && p != UPnP {
			return fmt.Errorf("portmap: unknown protocol %q", p)
		}
		if seen[p] {
			return fmt.Errorf("portmap: protocol %q listed twice", p)
		}
		seen[p] = true
	}
	return nil
}

// Option configures a Client.
type Option func(*settings) error

// WithGateway sets the gateway to ask. Default: the gateway of the IPv4
// default route, read from /proc/net/route at each operation.
func WithGateway(gw netip.Addr) Option {
	return func(s *settings) error { s.gateway = gw.Unmap(); return nil }
}

// WithLocalAddr sets the address the Client announces as its own (PCP's
// client address, UPnP's NewInternalClient). Default: the local address of
// the connection the Client dials to the gateway, which is right unless a
// proxy or a custom dialer hides it.
func WithLocalAddr(a netip.Addr) Option {
	return func(s *settings) error { s.localAddr = a.Unmap(); return nil }
}

// WithLogger sets the logger. Default: the "rendezvous/portmap" go-log
// logger, silent unless go-log is configured.
func WithLogger(l *logging.ZapEventLogger) Option {
	return func(s *settings) error {
		if l == nil {
			return errors.New("portmap: nil logger")
		}
		s.log = l
		return nil
	}
}

// WithClock sets the clock that stamps Mapping.Obtained. Default time.Now.
// Socket deadlines and the Keeper's timers use the time package's clock,
// which testing/synctest fakes.
func WithClock(now func() time.Time) Option {
	return func(s *settings) error {
		if now == nil {
			return errors.New("portmap: nil clock")
		}
		s.now = now
		return nil
	}
}

// WithDialer sets how the Client opens connected sockets: UDP to the
// gateway's port 5351 and TCP to its UPnP HTTP server. Default: a zero
// net.Dialer.
func WithDialer(dial DialFunc) Option {
	return func(s *settings) error {
		if dial == nil {
			return errors.New("portmap: nil dialer")
		}
		s.dial = dial
		return nil
	}
}

// WithListenPacket sets how the Client opens the unconnected UDP socket
// it sends SSDP searches from. Default: a zero net.ListenConfig.
func WithListenPacket(listen ListenPacketFunc) Option {
	return func(s *settings) error {
		if listen == nil {
			return errors.New("portmap: nil packet listener")
		}
		s.listenPacket = listen
		return nil
	}
}

// WithTimeout bounds each protocol's exchange with the gateway (requests
// are retransmitted within it). Default DefaultTimeout.
func WithTimeout(d time.Duration) Option {
	return func(s *settings) error { s.timeout = d; return nil }
}

// WithLifetime sets the lifetime a Keeper asks for. Default
// DefaultLifetime; at least one second.
func WithLifetime(d time.Duration) Option {
	return func(s *settings) error { s.lifetime = d; return nil }
}

// WithProtocols sets which protocols Map and Keep use, in the order tried.
// Default PCP, NATPMP, UPnP. Probe asks all three regardless.
func WithProtocols(ps ...Protocol) Option {
	return func(s *settings) error { s.protocols = append([]Protocol(nil), ps...); return nil }
}

// withPorts moves the gateway's PCP/NAT-PMP and SSDP ports (tests run fake
// gateways on loopback).
func withPorts(gateway, ssdp uint16) Option {
	return func(s *settings) error { s.gatewayPort, s.ssdpPort = gateway, ssdp; return nil }
}

// withSSDPGroup sets where multicast searches go; the zero value sends
// none.
func withSSDPGroup(ap netip.AddrPort) Option {
	return func(s *settings) error { s.ssdpGroup = ap; return nil }
}

// withRouteFile sets the file the default gateway is read from.
func withRouteFile(path string) Option {
	return func(s *settings) error { s.routeFile = path; return nil }
}

// withBackoff sets the Keeper's retry backoff bounds.
func withBackoff(minimum, maximum time.Duration) Option {
	return func(s *settings) error { s.minBackoff, s.maxBackoff = minimum, maximum; return nil }
}
