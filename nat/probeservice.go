package nat

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/p2pos/rendezvous/nat/probe"
	"github.com/p2pos/rendezvous/scope"
)

// ProbeProtocol is the libp2p protocol through which a public peer tells
// where its probe server listens. The answer is 4 bytes: the primary UDP
// port and the alternate UDP port (0: none), big-endian; the IP address is
// the one the asking peer is connected to.
const ProbeProtocol = protocol.ID("/p2pos/nat-probe/1.0.0")

// ErrNoProbeServers is returned when no peer asked runs a probe server.
var ErrNoProbeServers = errors.New("nat: no probe server found")

// ProbeService runs a probe server (package probe) while enabled, on two
// UDP ports of all IPv4 interfaces, and tells peers where it is.
type ProbeService struct {
	h host.Host

	mu     sync.Mutex
	srv    *probe.Server // guarded by mu; nil while disabled
	ports  [4]byte       // guarded by mu
	closed bool          // guarded by mu
}

// NewProbeService returns a disabled probe service for h.
func NewProbeService(h host.Host) *ProbeService { return &ProbeService{h: h} }

// SetEnabled starts or stops the probe server.
func (s *ProbeService) SetEnabled(on bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return net.ErrClosed
	}
	switch {
	case on && s.srv == nil:
		primary, err := net.ListenUDP("udp4", nil)
		if err != nil {
			return fmt.Errorf("nat: probe server: %w", err)
		}
		alt, err := net.ListenUDP("udp4", nil)
		if err != nil {
			primary.Close()
			return fmt.Errorf("nat: probe server: %w", err)
		}
		binary.BigEndian.PutUint16(s.ports[0:], uint16(primary.LocalAddr().(*net.UDPAddr).Port))
		binary.BigEndian.PutUint16(s.ports[2:], uint16(alt.LocalAddr().(*net.UDPAddr).Port))
		srv, err := probe.NewServer(primary, probe.WithAltConn(alt))
		if err != nil {
			return fmt.Errorf("nat: probe server: %w", err)
		}
		s.srv = srv
		s.h.SetStreamHandler(ProbeProtocol, s.handle)
	case !on && s.srv != nil:
		s.h.RemoveStreamHandler(ProbeProtocol)
		err := s.srv.Close()
		s.srv = nil
		return err
	}
	return nil
}

func (s *ProbeService) handle(st network.Stream) {
	defer st.Close()
	s.mu.Lock()
	ports, on := s.ports, s.srv != nil
	s.mu.Unlock()
	if !on {
		st.Reset()
		return
	}
	st.SetWriteDeadline(time.Now().Add(5 * time.Second))
	st.Write(ports[:])
}

// Close stops the service for good. It is idempotent.
func (s *ProbeService) Close() error {
	err := s.SetEnabled(false)
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// ProbeServer is a peer's probe server.
type ProbeServer struct {
	Peer    peer.ID
	Primary netip.AddrPort
	Alt     netip.AddrPort // invalid when the server has one port
}

// FindProbeServers asks peers (over direct connections whose address is in
// sc) where their probe servers are, and returns up to n, at distinct IP
// addresses where possible.
func FindProbeServers(ctx context.Context, h host.Host, sc scope.Scope, peers []peer.ID, n int) ([]ProbeServer, error) {
	var out []ProbeServer
	seenIP := map[netip.Addr]bool{}
	asked := map[peer.ID]bool{}
	for _, p := range peers {
		if len(out) >= n || ctx.Err() != nil {
			break
		}
		if asked[p] {
			continue
		}
		asked[p] = true
		if ok, _ := h.Peerstore().SupportsProtocols(p, ProbeProtocol); len(ok) == 0 {
			continue
		}
		ps, err := askProbeServer(ctx, h, sc, p)
		if err != nil || seenIP[ps.Primary.Addr()] {
			continue
		}
		seenIP[ps.Primary.Addr()] = true
		out = append(out, ps)
	}
	if len(out) == 0 {
		return nil, ErrNoProbeServers
	}
	return out, nil
}

func askProbeServer(ctx context.Context, h host.Host, sc scope.Scope, p peer.ID) (ProbeServer, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := h.NewStream(ctx, p, ProbeProtocol)
	if err != nil {
		return ProbeServer{}, err
	}
	defer st.Close()
	remote := st.Conn().RemoteMultiaddr()
	if st.Conn().Stat().Limited || !sc.IsPublic(remote) {
		st.Reset()
		return ProbeServer{}, errors.New("nat: probe server not on a direct in-scope connection")
	}
	ip, err := manet.ToIP(remote)
	if err != nil {
		st.Reset()
		return ProbeServer{}, err
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		st.Reset()
		return ProbeServer{}, errors.New("nat: bad probe server address")
	}
	addr = addr.Unmap()
	st.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [4]byte
	if _, err := io.ReadFull(st, b[:]); err != nil {
		st.Reset()
		return ProbeServer{}, err
	}
	primary := binary.BigEndian.Uint16(b[0:])
	alt := binary.BigEndian.Uint16(b[2:])
	if primary == 0 {
		return ProbeServer{}, errors.New("nat: probe server without a port")
	}
	ps := ProbeServer{Peer: p, Primary: netip.AddrPortFrom(addr, primary)}
	if alt != 0 {
		ps.Alt = netip.AddrPortFrom(addr, alt)
	}
	return ps, nil
}
