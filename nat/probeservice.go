package nat

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	logging "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/p2pos/rendezvous/nat/probe"
	"github.com/p2pos/rendezvous/scope"
)

// ProbeProtocol is the libp2p protocol through which a public peer tells
// where its probe servers listen. The answer is 4 bytes: the primary UDP
// port and the alternate UDP port (0: none), big-endian, of the server at
// the IP address the asking peer is connected to. One more byte may follow:
// the number N of probe servers listed with their address (at most 8), then
// N times 8 bytes: the IPv4 address, the primary port and the alternate
// port. A host with servers on several addresses lists them all there, the
// first one's too: a connection accepted on an unspecified address (QUIC
// on 0.0.0.0) does not tell the answering host which of its addresses the
// asker dialed, so the asker takes the listed server at the address it
// connected to, and the first 4 bytes only when none is listed there.
// Askers that read only the first 4 bytes get what they always got.
const ProbeProtocol = protocol.ID("/p2pos/nat-probe/1.0.0")

// ErrNoProbeServers is returned when no peer asked runs a probe server.
var ErrNoProbeServers = errors.New("nat: no probe server found")

// Bounds of the probe service.
const (
	// DefaultMaxSiblings is how many other peers' probe servers a
	// ProbeService configures as siblings at most.
	DefaultMaxSiblings = 32
	// maxLocalServers is how many servers a host with several public
	// addresses runs: RFC 5780 needs two.
	maxLocalServers = 2
	// maxExtraServers is how many other servers an answer may list.
	maxExtraServers = 8
	// askTimeout bounds one question to a peer.
	askTimeout = 5 * time.Second
	// maxAsking is how many peers the service asks at once.
	maxAsking = 4
	// maxAskAttempts is how many times a peer is asked before the service
	// gives up until it reconnects.
	maxAskAttempts = 5
)

var errNotConnected = errors.New("nat: peer not connected")

// probeSettings is what ProbeServiceOptions write into.
type probeSettings struct {
	scope       scope.Scope
	scopeSet    bool // scope was given: public addresses are known
	log         *logging.ZapEventLogger
	maxSiblings int
	// interfaceAddrs lists the host's interface addresses (replaced in
	// tests).
	interfaceAddrs func() ([]netip.Addr, error)
	// onChange, when set, is called with the service's lock held each time
	// its siblings change (for tests).
	onChange func()
}

// ProbeServiceOption configures NewProbeService.
type ProbeServiceOption func(*probeSettings)

// WithProbeScope sets which of the host's interface addresses count as
// public. With two or more, the service runs a probe server on two of them,
// siblings of each other, so that a single public host can tell every NAT
// behaviour apart. With none (a host public only through a port mapping,
// which does not cover the probe ports), it runs no server. Without this
// option the addresses public on the internet count, and a host with none
// still runs one server, on all IPv4 addresses, since its network may
// count other addresses as public.
func WithProbeScope(sc scope.Scope) ProbeServiceOption {
	return func(s *probeSettings) { s.scope, s.scopeSet = sc, true }
}

// WithProbeLogger sets the logger.
func WithProbeLogger(l *logging.ZapEventLogger) ProbeServiceOption {
	return func(s *probeSettings) {
		if l != nil {
			s.log = l
		}
	}
}

// WithMaxSiblings sets how many other peers' probe servers the service
// configures as siblings at most (default DefaultMaxSiblings). Values
// below 0 mean 0: no sibling but the host's own servers.
func WithMaxSiblings(n int) ProbeServiceOption {
	return func(s *probeSettings) { s.maxSiblings = max(0, n) }
}

// ProbeService runs probe servers (package probe) while enabled and tells
// peers where they are. Each server has two UDP ports. A host with one
// public IPv4 address (see WithProbeScope) runs one server on it, and a
// host with two or more runs one on each of two of them, siblings of each
// other; a host with none runs none (without WithProbeScope: one on all
// IPv4 addresses). The addresses are read when the service is enabled.
//
// While enabled, the service also makes the probe servers of the peers it
// is connected to siblings of its own, so that clients can tell
// endpoint-independent filtering from address-dependent: when a peer that
// announces ProbeProtocol is identified on a direct connection, the service
// asks it where its server is and adds the server's primary address, at
// the IP address of the connection (which the connection's handshake
// proved is the peer's), as a sibling of the local server at the
// connection's local address. Addresses the peer only claims (its other
// servers) are never made siblings. A question that fails is asked again
// 1, 2, 4 and 8 seconds later, five questions in all. The
// sibling is removed when the peer disconnects or stops announcing the
// protocol. Both peers do the same, so siblings list each other.
type ProbeService struct {
	h host.Host
	s probeSettings

	op sync.Mutex // serializes SetEnabled and Close

	// mu guards the fields below; it is never held while talking to a
	// peer.
	mu      sync.Mutex
	servers []*localServer      // nil while disabled
	remote  map[peer.ID]sibling // other peers' servers configured as siblings
	asking  map[peer.ID]bool    // peers being asked
	queued  map[peer.ID]bool    // peers to ask
	// failures counts the failed questions to a peer since its last
	// answer.
	failures map[peer.ID]int
	cancel   context.CancelFunc // stops the watcher; nil while disabled
	closed   bool

	wg sync.WaitGroup // the watcher and the questions it started
}

// localServer is one of the host's probe servers.
type localServer struct {
	srv          *probe.Server
	ip           netip.Addr // bound address; invalid when bound to all
	primary, alt uint16
}

// sibling is another peer's probe server configured as a sibling.
type sibling struct {
	addr  netip.AddrPort
	local netip.Addr // the local address of the connection it was learned on
}

// NewProbeService returns a disabled probe service for h.
func NewProbeService(h host.Host, opts ...ProbeServiceOption) *ProbeService {
	s := probeSettings{scope: scope.Internet(), maxSiblings: DefaultMaxSiblings, interfaceAddrs: interfaceAddrs}
	for _, o := range opts {
		o(&s)
	}
	if s.log == nil {
		s.log = logging.Logger("rendezvous/nat")
	}
	return &ProbeService{h: h, s: s}
}

// SetEnabled starts or stops the probe servers, and the sibling watcher
// with them.
func (s *ProbeService) SetEnabled(on bool) error {
	s.op.Lock()
	defer s.op.Unlock()
	s.mu.Lock()
	closed, running := s.closed, s.servers != nil
	s.mu.Unlock()
	switch {
	case closed:
		return net.ErrClosed
	case on && !running:
		return s.start()
	case !on && running:
		return s.stop()
	}
	return nil
}

// start runs the servers and the watcher. s.op is held.
func (s *ProbeService) start() error {
	servers, err := s.startServers()
	if err != nil {
		return fmt.Errorf("nat: probe server: %w", err)
	}
	if len(servers) == 0 {
		// Enabled, with nothing to serve: no protocol to announce.
		s.mu.Lock()
		s.servers, s.cancel = []*localServer{}, func() {}
		s.mu.Unlock()
		s.s.log.Infow("no probe server: no public IPv4 interface address", "scope", s.s.scope)
		return nil
	}
	sub, err := s.h.EventBus().Subscribe([]any{
		new(event.EvtPeerIdentificationCompleted),
		new(event.EvtPeerProtocolsUpdated),
		new(event.EvtPeerConnectednessChanged),
	})
	if err != nil {
		return errors.Join(fmt.Errorf("nat: probe service: %w", err), closeServers(servers))
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	s.servers, s.cancel = servers, cancel
	s.remote, s.asking, s.queued, s.failures = map[peer.ID]sibling{}, map[peer.ID]bool{}, map[peer.ID]bool{}, map[peer.ID]int{}
	s.mu.Unlock()
	s.wg.Add(1)
	go s.watch(ctx, sub)
	s.h.SetStreamHandler(ProbeProtocol, s.handle)
	return nil
}

// stop stops the watcher and the servers. s.op is held.
func (s *ProbeService) stop() error {
	s.h.RemoveStreamHandler(ProbeProtocol)
	s.mu.Lock()
	servers, cancel := s.servers, s.cancel
	s.servers, s.cancel, s.remote, s.asking, s.queued, s.failures = nil, nil, nil, nil, nil, nil
	s.mu.Unlock()
	cancel()
	s.wg.Wait()
	return closeServers(servers)
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

// Siblings returns the primary addresses of the other peers' probe servers
// configured as siblings, by peer.
func (s *ProbeService) Siblings() map[peer.ID]netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[peer.ID]netip.AddrPort, len(s.remote))
	for p, sib := range s.remote {
		out[p] = sib.addr
	}
	return out
}

// Servers returns the primary addresses of the host's own probe servers
// (0.0.0.0 for one bound to all addresses); none while disabled.
func (s *ProbeService) Servers() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []netip.AddrPort
	for _, ls := range s.servers {
		ip := ls.ip
		if !ip.IsValid() {
			ip = netip.IPv4Unspecified()
		}
		out = append(out, netip.AddrPortFrom(ip, ls.primary))
	}
	return out
}

// startServers starts the host's probe servers: on all IPv4 addresses
// when the public addresses are not known (no WithProbeScope), none when
// the host has no public IPv4 address; on that address when it has one, so
// that answers leave from the address clients know; on two of them when it
// has more, made siblings of each other.
func (s *ProbeService) startServers() ([]*localServer, error) {
	ips := s.publicIPv4()
	if len(ips) == 0 {
		if s.s.scopeSet {
			return nil, nil
		}
		ips = []netip.Addr{{}}
	}
	ips = ips[:min(len(ips), maxLocalServers)]
	var servers []*localServer
	for _, ip := range ips {
		ls, err := startLocalServer(ip)
		if err != nil {
			return nil, errors.Join(err, closeServers(servers))
		}
		servers = append(servers, ls)
	}
	for _, a := range servers {
		for _, b := range servers {
			if a != b {
				if err := a.srv.AddSibling(netip.AddrPortFrom(b.ip, b.primary)); err != nil {
					return nil, errors.Join(err, closeServers(servers))
				}
			}
		}
	}
	if len(servers) > 1 {
		s.s.log.Infow("probe servers on two public addresses, siblings of each other", "addrs", ips)
	}
	return servers, nil
}

// publicIPv4 returns the host's public IPv4 interface addresses, sorted.
func (s *ProbeService) publicIPv4() []netip.Addr {
	addrs, err := s.s.interfaceAddrs()
	if err != nil {
		s.s.log.Debugw("interface addresses", "error", err)
		return nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if !a.Is4() || slices.Contains(out, a) || !s.s.scope.IsPublic(ipMultiaddr(a)) {
			continue
		}
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// interfaceAddrs lists the addresses of the host's interfaces.
func interfaceAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}

// startLocalServer starts a probe server on two UDP ports of ip (of all
// IPv4 addresses when ip is invalid).
func startLocalServer(ip netip.Addr) (*localServer, error) {
	var laddr *net.UDPAddr
	if ip.IsValid() {
		laddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0))
	}
	primary, err := net.ListenUDP("udp4", laddr)
	if err != nil {
		return nil, err
	}
	alt, err := net.ListenUDP("udp4", laddr)
	if err != nil {
		primary.Close()
		return nil, err
	}
	ls := &localServer{
		ip:      ip,
		primary: uint16(primary.LocalAddr().(*net.UDPAddr).Port),
		alt:     uint16(alt.LocalAddr().(*net.UDPAddr).Port),
	}
	// NewServer closes both sockets when it fails.
	if ls.srv, err = probe.NewServer(primary, probe.WithAltConn(alt)); err != nil {
		return nil, err
	}
	return ls, nil
}

func closeServers(servers []*localServer) error {
	var errs []error
	for _, ls := range servers {
		errs = append(errs, ls.srv.Close())
	}
	return errors.Join(errs...)
}

// handle answers ProbeProtocol with the server at the IP address the peer
// is connected to, then, when the host has servers on several addresses,
// all of them with their address.
func (s *ProbeService) handle(st network.Stream) {
	defer st.Close()
	local := localIP(st.Conn())
	s.mu.Lock()
	servers := s.servers
	s.mu.Unlock()
	i := slices.IndexFunc(servers, func(ls *localServer) bool { return !ls.ip.IsValid() || ls.ip == local })
	if i < 0 {
		if len(servers) < 2 {
			st.Reset()
			return
		}
		// The connection does not tell which address the peer dialed
		// (local was guessed from the routes): it finds its own among
		// the servers listed with their addresses.
		i = 0
	}
	b := binary.BigEndian.AppendUint16(nil, servers[i].primary)
	b = binary.BigEndian.AppendUint16(b, servers[i].alt)
	var extra []extraServer
	for _, ls := range servers {
		if ls.ip.Is4() {
			extra = append(extra, extraServer{ip: ls.ip, primary: ls.primary, alt: ls.alt})
		}
	}
	b = append(b, byte(len(extra)))
	for _, e := range extra {
		b = append(b, e.ip.AsSlice()...)
		b = binary.BigEndian.AppendUint16(b, e.primary)
		b = binary.BigEndian.AppendUint16(b, e.alt)
	}
	st.SetWriteDeadline(time.Now().Add(askTimeout))
	st.Write(b)
}

// watch follows the peers' identification, protocols and connectedness,
// and keeps their probe servers configured as siblings.
func (s *ProbeService) watch(ctx context.Context, sub event.Subscription) {
	defer s.wg.Done()
	defer sub.Close()
	s.mu.Lock()
	s.rescanLocked(ctx)
	s.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-sub.Out():
			if !ok {
				return
			}
			switch e := ev.(type) {
			case event.EvtPeerIdentificationCompleted:
				if slices.Contains(e.Protocols, ProbeProtocol) {
					s.consider(ctx, e.Peer)
				}
			case event.EvtPeerProtocolsUpdated:
				if slices.Contains(e.Removed, ProbeProtocol) {
					s.forget(ctx, e.Peer)
				}
				if slices.Contains(e.Added, ProbeProtocol) {
					s.consider(ctx, e.Peer)
				}
			case event.EvtPeerConnectednessChanged:
				if e.Connectedness != network.Connected {
					s.forget(ctx, e.Peer)
				}
			}
		}
	}
}

// consider queues p to be asked for its probe server, unless p is known,
// queued or being asked, or there are enough siblings.
func (s *ProbeService) consider(ctx context.Context, p peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.considerLocked(ctx, p)
}

func (s *ProbeService) considerLocked(ctx context.Context, p peer.ID) {
	if s.servers == nil || p == s.h.ID() || s.asking[p] || s.queued[p] {
		return
	}
	if _, ok := s.remote[p]; ok || len(s.remote)+len(s.asking)+len(s.queued) >= s.s.maxSiblings {
		return
	}
	s.queued[p] = true
	s.pumpLocked(ctx)
}

// pumpLocked starts questions to queued peers, at most maxAsking at once.
// s.mu is held, and the watcher runs, so the group's counter is not zero.
func (s *ProbeService) pumpLocked(ctx context.Context) {
	for p := range s.queued {
		if len(s.asking) >= maxAsking || ctx.Err() != nil {
			return
		}
		delete(s.queued, p)
		s.asking[p] = true
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.learn(ctx, p)
		}()
	}
}

// rescanLocked queues the connected peers that announce ProbeProtocol, once
// a sibling's place is free. s.mu is held.
func (s *ProbeService) rescanLocked(ctx context.Context) {
	for _, p := range s.h.Network().Peers() {
		if ok, _ := s.h.Peerstore().SupportsProtocols(p, ProbeProtocol); len(ok) > 0 {
			s.considerLocked(ctx, p)
		}
	}
}

// learn asks p where its probe server is and makes it a sibling.
func (s *ProbeService) learn(ctx context.Context, p peer.ID) {
	var (
		ans           probeAnswer
		remote, local netip.Addr
		err           = errNotConnected
	)
	// A peer that left is not dialed again to be asked.
	if s.h.Network().Connectedness(p) == network.Connected {
		ans, remote, local, err = ask(ctx, s.h, p, directIPv4)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.asking, p)
	defer s.pumpLocked(ctx)
	if err != nil {
		s.s.log.Debugw("probe sibling", "peer", p, "error", err)
		if !errors.Is(err, errNotConnected) {
			s.retryLocked(ctx, p)
		}
		return
	}
	delete(s.failures, p)
	if ctx.Err() != nil || s.servers == nil || s.h.Network().Connectedness(p) != network.Connected {
		return
	}
	primary, _ := ans.at(remote)
	sib := sibling{addr: netip.AddrPortFrom(remote, primary), local: local}
	if old, ok := s.remote[p]; ok {
		s.removeLocked(p, old)
	}
	added := false
	for _, ls := range s.servers {
		if ls.ip.IsValid() && ls.ip != local {
			continue
		}
		if err := ls.srv.AddSibling(sib.addr); err != nil {
			s.s.log.Debugw("probe sibling", "peer", p, "addr", sib.addr, "error", err)
			continue
		}
		added = true
	}
	if added {
		s.remote[p] = sib
		s.s.log.Debugw("probe sibling added", "peer", p, "addr", sib.addr)
		s.changedLocked()
	}
}

// retryLocked asks p again later, after a failed question (a stream
// reset or timed out on a busy host): without, a sibling that one of the
// two peers failed to learn would stay one-sided. The delay doubles from
// one second, for maxAskAttempts questions at most. s.mu is held, and the
// caller is counted in the group.
func (s *ProbeService) retryLocked(ctx context.Context, p peer.ID) {
	if s.failures == nil || ctx.Err() != nil {
		return // stopped while the question ran
	}
	n := s.failures[p] + 1
	if n >= maxAskAttempts {
		return
	}
	s.failures[p] = n
	delay := time.Second << (n - 1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
			s.consider(ctx, p)
		case <-ctx.Done():
		}
	}()
}

// forget removes p's server from the siblings, and looks for another
// peer to take its place.
func (s *ProbeService) forget(ctx context.Context, p peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.queued, p)
	delete(s.failures, p)
	if sib, ok := s.remote[p]; ok {
		s.removeLocked(p, sib)
		s.rescanLocked(ctx)
	}
}

// removeLocked removes p's server sib, unless another peer's server has the
// same address. s.mu is held.
func (s *ProbeService) removeLocked(p peer.ID, sib sibling) {
	delete(s.remote, p)
	defer s.changedLocked()
	for _, o := range s.remote {
		if o.addr == sib.addr {
			return
		}
	}
	for _, ls := range s.servers {
		ls.srv.RemoveSibling(sib.addr)
	}
	s.s.log.Debugw("probe sibling removed", "peer", p, "addr", sib.addr)
}

func (s *ProbeService) changedLocked() {
	if s.s.onChange != nil {
		s.s.onChange()
	}
}

// ProbeServer is a peer's probe server.
type ProbeServer struct {
	Peer    peer.ID
	Primary netip.AddrPort
	Alt     netip.AddrPort // invalid when the server has one port
}

// FindProbeServers asks peers (over direct connections whose address is in
// sc) where their probe servers are, and returns up to n, at distinct IP
// addresses where possible. A peer whose host has two public addresses
// may give two servers; its other servers are taken only at addresses in
// sc.
func FindProbeServers(ctx context.Context, h host.Host, sc scope.Scope, peers []peer.ID, n int) ([]ProbeServer, error) {
	var out []ProbeServer
	seenIP := map[netip.Addr]bool{}
	asked := map[peer.ID]bool{}
	inScope := func(remote ma.Multiaddr) bool { return sc.IsPublic(remote) }
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
		ans, ip, _, err := ask(ctx, h, p, inScope)
		if err != nil && ctx.Err() == nil {
			// The connection the question went on may have just been
			// replaced (a relay's moved to TCP): ask once more.
			ans, ip, _, err = ask(ctx, h, p, inScope)
		}
		if err != nil {
			continue
		}
		primary, alt := ans.at(ip)
		found := []ProbeServer{ans.server(p, ip, primary, alt)}
		for _, e := range ans.extra {
			if e.ip != ip && sc.IsPublic(ipMultiaddr(e.ip)) {
				found = append(found, ans.server(p, e.ip, e.primary, e.alt))
			}
		}
		for _, ps := range found {
			if len(out) < n && !seenIP[ps.Primary.Addr()] {
				seenIP[ps.Primary.Addr()] = true
				out = append(out, ps)
			}
		}
	}
	if len(out) == 0 {
		return nil, ErrNoProbeServers
	}
	return out, nil
}

// probeAnswer is a decoded ProbeProtocol answer.
type probeAnswer struct {
	primary, alt uint16
	extra        []extraServer
}

// at returns the ports of the server at ip, the address the asker
// connected to: the one listed with that address, or else the first.
func (a probeAnswer) at(ip netip.Addr) (primary, alt uint16) {
	for _, e := range a.extra {
		if e.ip == ip {
			return e.primary, e.alt
		}
	}
	return a.primary, a.alt
}

// extraServer is a probe server of the answering host listed with its
// address.
type extraServer struct {
	ip           netip.Addr
	primary, alt uint16
}

func (probeAnswer) server(p peer.ID, ip netip.Addr, primary, alt uint16) ProbeServer {
	ps := ProbeServer{Peer: p, Primary: netip.AddrPortFrom(ip, primary)}
	if alt != 0 {
		ps.Alt = netip.AddrPortFrom(ip, alt)
	}
	return ps
}

// maxAnswer is the longest ProbeProtocol answer.
const maxAnswer = 4 + 1 + 8*maxExtraServers

// parseProbeAnswer decodes a ProbeProtocol answer (see ProbeProtocol).
// Extra servers without a primary port, or at an address that is not a
// unicast IPv4 address, are skipped.
func parseProbeAnswer(b []byte) (probeAnswer, error) {
	var a probeAnswer
	if len(b) < 4 {
		return a, errors.New("nat: probe answer too short")
	}
	a.primary, a.alt = binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:])
	if a.primary == 0 {
		return a, errors.New("nat: probe server without a port")
	}
	b = b[4:]
	if len(b) == 0 {
		return a, nil // an answer of the first version
	}
	n := int(b[0])
	b = b[1:]
	if n > maxExtraServers || len(b) != 8*n {
		return a, fmt.Errorf("nat: probe answer: %d other servers in %d bytes", n, len(b))
	}
	for ; len(b) > 0; b = b[8:] {
		e := extraServer{
			ip:      netip.AddrFrom4([4]byte(b[:4])),
			primary: binary.BigEndian.Uint16(b[4:]),
			alt:     binary.BigEndian.Uint16(b[6:]),
		}
		if e.primary == 0 || e.ip.IsUnspecified() || e.ip.IsMulticast() || e.ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			continue
		}
		a.extra = append(a.extra, e)
	}
	return a, nil
}

// directIPv4 accepts any direct connection over IPv4: a sibling need not
// be in any scope, since its address is the one the connection's
// handshake proved.
func directIPv4(remote ma.Multiaddr) bool {
	ip, ok := scope.IPOf(remote)
	return ok && ip.Is4()
}

// ask asks p where its probe servers are, over a direct connection whose
// remote address accept takes. It returns the answer and the remote and
// local IP addresses of the connection.
func ask(ctx context.Context, h host.Host, p peer.ID, accept func(remote ma.Multiaddr) bool) (_ probeAnswer, remote, local netip.Addr, err error) {
	ctx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	st, err := h.NewStream(ctx, p, ProbeProtocol)
	if err != nil {
		return probeAnswer{}, remote, local, err
	}
	defer st.Close()
	ra := st.Conn().RemoteMultiaddr()
	var ok bool
	if remote, ok = scope.IPOf(ra); !ok || st.Conn().Stat().Limited || !accept(ra) {
		st.Reset()
		return probeAnswer{}, remote, local, errors.New("nat: probe server not on a direct in-scope connection")
	}
	local = localIP(st.Conn())
	st.SetReadDeadline(time.Now().Add(askTimeout))
	b, err := io.ReadAll(io.LimitReader(st, maxAnswer+1))
	if err != nil {
		st.Reset()
		return probeAnswer{}, remote, local, err
	}
	ans, err := parseProbeAnswer(b)
	return ans, remote, local, err
}

// localIP returns the local IP address of c: the one peers see. A
// connection this host dialed may report its socket's unspecified address;
// the address is then the one the kernel's routing picks as source towards
// the peer, which a UDP socket learns by connecting, without sending.
func localIP(c network.Conn) netip.Addr {
	local, _ := scope.IPOf(c.LocalMultiaddr())
	if !local.IsUnspecified() {
		return local
	}
	remote, ok := scope.IPOf(c.RemoteMultiaddr())
	if !ok || !remote.Is4() {
		return local
	}
	u, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(remote, 9)))
	if err != nil {
		return local
	}
	defer u.Close()
	return u.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
}

// ipMultiaddr returns the multiaddr of an IP address alone (nil for an
// invalid one, which no scope counts as public).
func ipMultiaddr(a netip.Addr) ma.Multiaddr {
	m, err := manet.FromIP(a.AsSlice())
	if err != nil {
		return nil
	}
	return m
}
