package relay

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/libp2p/go-libp2p/core/transport"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/quicreuse"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// A spray punch gets QUIC through a NAT that maps endpoint-dependently
// (a new, random port for every destination) when the other side's NAT
// maps endpoint-independently but filters by address and port, the pair
// an ordinary punch cannot open: the dependent side's port toward the
// other is unknown, and the other side's filter lets in only what comes
// from a port it sent to.
//
// It is the birthday paradox. The dependent side, the catcher, opens
// spraySockets UDP sockets and sends one hello from each to the other
// side's QUIC address: its NAT opens as many mappings, at random ports,
// each letting in only that address. The other side, the sprayer, sends
// probes from its QUIC socket to the catcher's IP address at random ports,
// sprayRate a second, at most sprayProbes: each probe hits one of the
// mappings with probability spraySockets/64512, so 1536 probes hit one
// with probability 1-(1-256/64512)^1536 > 99.7%, after 250 on average
// (a quarter of a second). The socket hit answers; the answer passes the
// sprayer's filter, since the sprayer sent to that port, and tells it the
// port. The sprayer dials QUIC there, and the catcher's socket forwards
// the connection's packets to and from its own QUIC listener.
//
// Probes and answers are sprayPacketLen bytes: a first byte that no QUIC
// packet has (so that the QUIC socket hands them over), three more bytes
// of magic, the kind (hello, probe, answer) and the punch's 8-byte token,
// which the initiator drew at random and both sides learned through the
// relay. A socket answers only a probe with its punch's token from the
// address it sent its hello to.
const (
	spraySockets = 256
	sprayProbes  = 1536
	// sprayRate is probes per second, sent sprayBatch at a time.
	sprayRate  = 2000
	sprayBatch = 4
	// sprayWait is how long the catcher's sockets wait for a probe, and
	// the sprayer for an answer.
	sprayWait = 4 * time.Second
	// forwardIdle closes a catcher's forwarder that carried nothing for
	// that long: QUIC sends a keep-alive every 15 s.
	forwardIdle = time.Minute
	// maxForwarders bounds the connections a node forwards at once.
	maxForwarders = 32

	sprayPacketLen = 13
	sprayHello     = 1
	sprayProbe     = 2
	sprayAnswer    = 3
)

var sprayMagic = [4]byte{0x00, 'r', 'z', 'p'}

// ErrNoSprayAnswer is the error of a spray that no socket answered.
var ErrNoSprayAnswer = errors.New("relay: no answer to the spray")

func sprayPacket(kind byte, token [8]byte) []byte {
	b := make([]byte, 0, sprayPacketLen)
	b = append(b, sprayMagic[:]...)
	b = append(b, kind)
	return append(b, token[:]...)
}

// parseSprayPacket returns the kind of b if it is a spray packet with
// token.
func parseSprayPacket(b []byte, token [8]byte) (byte, bool) {
	if len(b) != sprayPacketLen || [4]byte(b[:4]) != sprayMagic {
		return 0, false
	}
	if subtle.ConstantTimeCompare(b[5:], token[:]) != 1 {
		return 0, false
	}
	return b[4], true
}

// SharedQUIC adds libp2p's QUIC transport to a host, as
// libp2p.Transport(libp2pquic.NewTransport) does, and keeps its
// connection manager, so that a spray punch's probes can leave from the
// QUIC socket (WithSharedUDP(s.PacketConn)). The zero value is ready.
type SharedQUIC struct {
	mu sync.Mutex
	cm *quicreuse.ConnManager
}

// Transport is the libp2p option that adds the transport.
func (s *SharedQUIC) Transport() libp2p.Option {
	return libp2p.Transport(func(key crypto.PrivKey, cm *quicreuse.ConnManager, psk pnet.PSK, gater connmgr.ConnectionGater, rm network.ResourceManager) (transport.Transport, error) {
		s.mu.Lock()
		s.cm = cm
		s.mu.Unlock()
		return libp2pquic.NewTransport(key, cm, psk, gater, rm)
	})
}

// PacketConn sends and receives non-QUIC packets on the QUIC socket bound
// to laddr. It fails before the host was built.
func (s *SharedQUIC) PacketConn(laddr *net.UDPAddr) (net.PacketConn, error) {
	s.mu.Lock()
	cm := s.cm
	s.mu.Unlock()
	if cm == nil {
		return nil, errors.New("relay: no QUIC transport")
	}
	return cm.SharedNonQUICPacketConn("udp4", laddr)
}

// quicListenAddr is the host's first IPv4 QUIC listen address.
func quicListenAddr(h host.Host) (netip.AddrPort, bool) {
	for _, a := range h.Network().ListenAddresses() {
		if len(a) < 3 || a[0].Code() != ma.P_IP4 || a[2].Code() != ma.P_QUIC_V1 {
			continue
		}
		na, err := manet.ToNetAddr(a[:2])
		if err != nil {
			continue
		}
		if u, ok := na.(*net.UDPAddr); ok {
			return netip.AddrPortFrom(u.AddrPort().Addr().Unmap(), u.AddrPort().Port()), true
		}
	}
	return netip.AddrPort{}, false
}

// Ports a spray probes: those Linux, and most NATs, map to.
const (
	minSprayPort = 1024
	maxSprayPort = 65535
)

// sprayTargets are the in-scope public QUIC (or TCP) addresses in addrs
// the catcher sends its hellos to: at most two.
func (s *PunchService) sprayTargets(addrs []ma.Multiaddr, quic bool) []netip.AddrPort {
	var out []netip.AddrPort
	for _, a := range addrs {
		if len(a) < 2 || a[0].Code() != ma.P_IP4 || !s.scope.IsPublic(a) {
			continue
		}
		if quic && (len(a) < 3 || a[1].Code() != ma.P_UDP || a[2].Code() != ma.P_QUIC_V1) || !quic && a[1].Code() != ma.P_TCP {
			continue
		}
		ap, ok := addrPortOf(a[:2])
		if ok && !containsAddrPort(out, ap) {
			out = append(out, ap)
		}
		if len(out) == 2 {
			break
		}
	}
	return out
}

// addrPortOf returns the IP and port of a thin-waist address
// (/ip4/x/udp/p or /ip4/x/tcp/p), unmapped.
func addrPortOf(a ma.Multiaddr) (netip.AddrPort, bool) {
	na, err := manet.ToNetAddr(a)
	if err != nil {
		return netip.AddrPort{}, false
	}
	var ap netip.AddrPort
	switch u := na.(type) {
	case *net.UDPAddr:
		ap = u.AddrPort()
	case *net.TCPAddr:
		ap = u.AddrPort()
	default:
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// forwardKey is the key of a forwarder in PunchService.forwarded: the
// thin waist of its local end, as the host's connection names its remote
// address.
func forwardKey(tcp bool, ap netip.AddrPort) string {
	if tcp {
		return "/tcp/" + ap.String()
	}
	return "/udp/" + ap.String()
}

// remoteAddr is the multiaddr of a peer a forwarder carries for.
func remoteAddr(tcp bool, ap netip.AddrPort) ma.Multiaddr {
	if tcp {
		a, _ := manet.FromNetAddr(net.TCPAddrFromAddrPort(ap))
		return a
	}
	a, _ := manet.FromNetAddr(net.UDPAddrFromAddrPort(ap))
	if a == nil {
		return nil
	}
	return a.Encapsulate(ma.StringCast("/quic-v1"))
}

func containsAddrPort(list []netip.AddrPort, a netip.AddrPort) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}

// catch opens the catcher's sockets and sends their hellos to dsts. The
// socket a probe reaches answers it and forwards between the prober and
// the host's QUIC listener; the others close. It returns once the hellos
// are out; the waiting runs on the service's goroutines, and release is
// called when it ended.
func (s *PunchService) catch(token [8]byte, dsts []netip.AddrPort, release func()) error {
	listen, ok := quicListenAddr(s.h)
	if !ok || len(dsts) == 0 {
		release()
		return errors.New("relay: spray: no QUIC listener or nowhere to send")
	}
	listen = loopbackIfUnspecified(listen)
	socks := make([]*net.UDPConn, 0, spraySockets)
	closeAll := func(except *net.UDPConn) {
		for _, c := range socks {
			if c != except {
				c.Close()
			}
		}
	}
	hello := sprayPacket(sprayHello, token)
	for range spraySockets {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{})
		if err != nil {
			closeAll(nil)
			release()
			return fmt.Errorf("relay: spray: %w", err)
		}
		socks = append(socks, c)
		for _, d := range dsts {
			c.WriteToUDPAddrPort(hello, d)
		}
	}
	var once sync.Once
	var hit atomic.Bool
	var waiting sync.WaitGroup
	deadline := time.Now().Add(sprayWait)
	for _, c := range socks {
		c.SetReadDeadline(deadline)
		waiting.Add(1)
		if !s.goOwned(func() {
			from, ok := awaitProbe(c, token, dsts)
			waiting.Done()
			if !ok {
				c.Close()
				return
			}
			first := false
			once.Do(func() { first = true })
			if !first {
				return
			}
			hit.Store(true)
			c.SetReadDeadline(time.Time{})
			ans := sprayPacket(sprayAnswer, token)
			for range 2 {
				c.WriteToUDPAddrPort(ans, from)
			}
			closeAll(c) // the others lost
			s.forwardTo(c, from, listen)
		}) {
			waiting.Done()
			c.Close()
		}
	}
	done := func() {
		waiting.Wait()
		release()
		s.observeSpray("catch", hit.Load(), 0)
	}
	if !s.goOwned(done) {
		done()
	}
	return nil
}

// awaitProbe reads c until a probe with token comes from one of dsts, or
// c's deadline passes or c is closed.
func awaitProbe(c *net.UDPConn, token [8]byte, dsts []netip.AddrPort) (netip.AddrPort, bool) {
	buf := make([]byte, 64)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return netip.AddrPort{}, false
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if kind, ok := parseSprayPacket(buf[:n], token); ok && kind == sprayProbe && containsAddrPort(dsts, from) {
			return from, true
		}
	}
}

// forwardTo carries packets between the prober at remote, through out,
// and the host's QUIC listener at listen, until either side is idle for
// forwardIdle or the service closes.
func (s *PunchService) forwardTo(out *net.UDPConn, remote, listen netip.AddrPort) {
	if !s.startForwarding() {
		out.Close()
		return
	}
	defer s.doneForwarding()
	in, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(listen))
	if err != nil {
		out.Close()
		return
	}
	ia := in.LocalAddr().(*net.UDPAddr).AddrPort()
	defer s.track(forwardKey(false, netip.AddrPortFrom(ia.Addr().Unmap(), ia.Port())), remoteAddr(false, remote))()
	var wg sync.WaitGroup
	done := make(chan struct{})
	stop := sync.OnceFunc(func() {
		close(done)
		out.Close()
		in.Close()
	})
	wg.Go(func() {
		defer stop()
		buf := make([]byte, 65536)
		for {
			out.SetReadDeadline(time.Now().Add(forwardIdle))
			n, from, err := out.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if netip.AddrPortFrom(from.Addr().Unmap(), from.Port()) != remote ||
				(n == sprayPacketLen && [4]byte(buf[:4]) == sprayMagic) {
				continue // not the prober, or a late probe
			}
			in.Write(buf[:n])
		}
	})
	wg.Go(func() {
		defer stop()
		buf := make([]byte, 65536)
		for {
			in.SetReadDeadline(time.Now().Add(forwardIdle))
			n, err := in.Read(buf)
			if err != nil {
				return
			}
			out.WriteToUDPAddrPort(buf[:n], remote)
		}
	})
	wg.Go(func() {
		select {
		case <-s.ctx.Done():
			stop()
		case <-done:
		}
	})
	wg.Wait()
}

// startForwarding counts a forwarder in, unless maxForwarders run.
func (s *PunchService) startForwarding() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.forwarders >= maxForwarders {
		return false
	}
	s.forwarders++
	return true
}

func (s *PunchService) doneForwarding() {
	s.mu.Lock()
	s.forwarders--
	s.mu.Unlock()
}

// track has Forwarded name remote as the peer of the host's connection
// whose remote address is key, until the returned function is called.
func (s *PunchService) track(key string, remote ma.Multiaddr) (untrack func()) {
	s.mu.Lock()
	s.forwarded[key] = remote
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.forwarded, key)
		s.mu.Unlock()
	}
}

// spray sends probes from the host's QUIC socket to ip at random ports
// until one of the catcher's sockets answers, and returns its address.
func (s *PunchService) spray(ctx context.Context, token [8]byte, ip netip.Addr) (netip.AddrPort, error) {
	if s.sharedUDP == nil {
		return netip.AddrPort{}, errors.New("relay: spray: no shared QUIC socket")
	}
	listen, ok := quicListenAddr(s.h)
	if !ok {
		return netip.AddrPort{}, errors.New("relay: spray: no QUIC listener")
	}
	pc, err := s.sharedUDP(net.UDPAddrFromAddrPort(listen))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("relay: spray: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, sprayWait)
	defer cancel()
	pc.SetReadDeadline(time.Now().Add(sprayWait))
	answer := make(chan netip.AddrPort, 1)
	var wg sync.WaitGroup
	defer func() {
		pc.Close() // ends the reader
		wg.Wait()
	}()
	wg.Go(func() {
		buf := make([]byte, 64)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			u, ok := from.(*net.UDPAddr)
			if !ok {
				continue
			}
			ap := netip.AddrPortFrom(u.AddrPort().Addr().Unmap(), u.AddrPort().Port())
			if kind, ok := parseSprayPacket(buf[:n], token); ok && kind == sprayAnswer && ap.Addr() == ip {
				answer <- ap
				return
			}
		}
	})
	probe := sprayPacket(sprayProbe, token)
	tick := time.NewTicker(time.Second * sprayBatch / sprayRate)
	defer tick.Stop()
	for sent := 0; ; {
		if sent < sprayProbes {
			for range sprayBatch {
				port := uint16(s.sprayPorts[0] + rand.IntN(s.sprayPorts[1]-s.sprayPorts[0]+1))
				pc.WriteTo(probe, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, port)))
				sent++
			}
		}
		select {
		case ap := <-answer:
			s.sprayed(sent, true)
			return ap, nil
		case <-ctx.Done():
			s.sprayed(sent, false)
			return netip.AddrPort{}, fmt.Errorf("%w after %d probes: %w", ErrNoSprayAnswer, sent, ctx.Err())
		case <-tick.C:
		}
	}
}

// sprayed counts probes sent.
func (s *PunchService) sprayed(n int, hit bool) {
	s.mu.Lock()
	s.probes += uint64(n)
	s.mu.Unlock()
	s.observeSpray("spray", hit, n)
}

// sprayDial sprays ip and dials p's QUIC at the port that answered.
func (s *PunchService) sprayDial(ctx context.Context, token [8]byte, p peer.ID, ip netip.Addr) error {
	ap, err := s.spray(ctx, token, ip)
	if err != nil {
		return err
	}
	a, err := manet.FromNetAddr(net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return err
	}
	return punchDial(ctx, s.h, p, []ma.Multiaddr{a.Encapsulate(ma.StringCast("/quic-v1"))}, true)
}

// Forwarded returns the address of the peer a spray punch's forwarder
// carries the connection to c for: such a connection has a forwarder's
// loopback address as its remote address.
func (s *PunchService) Forwarded(c ma.Multiaddr) (ma.Multiaddr, bool) {
	if len(c) < 2 {
		return nil, false
	}
	ap, ok := addrPortOf(c[:2])
	if !ok {
		return nil, false
	}
	s.mu.Lock()
	remote, ok := s.forwarded[forwardKey(c[1].Code() == ma.P_TCP, ap)]
	s.mu.Unlock()
	return remote, ok && remote != nil
}
