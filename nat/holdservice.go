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

	logging "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/p2pos/rendezvous/nat/tcpprobe"
)

// HoldProtocol is the libp2p protocol through which a public peer tells
// where its TCP hold server (package tcpprobe) listens. The answer is 2
// bytes, big-endian: the server's TCP port, at the IP address the asking
// peer is connected to.
const HoldProtocol = protocol.ID("/p2pos/tcp-hold/1.0.0")

// ErrNoHoldServer is returned by AskHoldServer when the peer runs none.
var ErrNoHoldServer = errors.New("nat: peer runs no TCP hold server")

// HoldService runs a TCP hold server while enabled, on all IPv4 addresses
// of the host, and answers HoldProtocol with its port.
type HoldService struct {
	h   host.Host
	log *logging.ZapEventLogger

	mu     sync.Mutex
	srv    *tcpprobe.Server // guarded by mu; nil while disabled
	closed bool             // guarded by mu
}

// NewHoldService returns a disabled HoldService for h. log may be nil.
func NewHoldService(h host.Host, log *logging.ZapEventLogger) *HoldService {
	if log == nil {
		log = logging.Logger("rendezvous/nat")
	}
	return &HoldService{h: h, log: log}
}

// SetEnabled starts or stops the server. It is a no-op when nothing changes
// and fails with net.ErrClosed after Close.
func (s *HoldService) SetEnabled(on bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return net.ErrClosed
	}
	if on == (s.srv != nil) {
		return nil
	}
	if !on {
		s.h.RemoveStreamHandler(HoldProtocol)
		err := s.srv.Close()
		s.srv = nil
		return err
	}
	ln, err := net.Listen("tcp4", ":0")
	if err != nil {
		return fmt.Errorf("nat: hold server: %w", err)
	}
	srv, err := tcpprobe.NewServer(ln, tcpprobe.WithLogf(func(f string, args ...any) { s.log.Debugf(f, args...) }))
	if err != nil {
		ln.Close()
		return fmt.Errorf("nat: hold server: %w", err)
	}
	s.srv = srv
	s.h.SetStreamHandler(HoldProtocol, s.handle)
	return nil
}

// Port returns the hold server's port, 0 while disabled.
func (s *HoldService) Port() uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return 0
	}
	if a, ok := s.srv.Addr().(*net.TCPAddr); ok {
		return uint16(a.Port)
	}
	return 0
}

func (s *HoldService) handle(st network.Stream) {
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(askTimeout))
	_, _ = st.Write(binary.BigEndian.AppendUint16(nil, s.Port()))
}

// Close stops the server. It is idempotent.
func (s *HoldService) Close() error {
	err := s.SetEnabled(false)
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// AskHoldServer asks p, over an existing direct connection, where its hold
// server is. The address is the IP of that connection with the port p
// names.
func AskHoldServer(ctx context.Context, h host.Host, p peer.ID) (netip.AddrPort, error) {
	var ip netip.Addr
	for _, c := range h.Network().ConnsToPeer(p) {
		if c.Stat().Limited {
			continue
		}
		if a, err := manet.ToIP(c.RemoteMultiaddr()); err == nil {
			if addr, ok := netip.AddrFromSlice(a); ok && addr.Unmap().Is4() {
				ip = addr.Unmap()
				break
			}
		}
	}
	if !ip.IsValid() {
		return netip.AddrPort{}, fmt.Errorf("nat: no direct IPv4 connection to %s", p)
	}
	ctx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	s, err := h.NewStream(network.WithNoDial(ctx, "hold server"), p, HoldProtocol)
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	var b [2]byte
	if _, err := io.ReadFull(s, b[:]); err != nil {
		_ = s.Reset()
		return netip.AddrPort{}, fmt.Errorf("nat: hold server answer: %w", err)
	}
	port := binary.BigEndian.Uint16(b[:])
	if port == 0 {
		return netip.AddrPort{}, ErrNoHoldServer
	}
	return netip.AddrPortFrom(ip, port), nil
}
