package relay

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	logging "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"golang.org/x/time/rate"

	"github.com/p2pos/rendezvous/scope"
)

// PunchProtocol coordinates a hole punch through a relay, without a
// relayed connection first. The initiator A, which found the target B's
// record, asks one of B's relays R with a request naming B and carrying
// A's addresses. R forwards it to B over the connection B holds to it,
// adding A's address as R's connection sees it. B answers with its own
// addresses, R passes the answer back, and both dial each other at once:
// B at A's addresses, A at B's (it started on the addresses in B's record
// as it sent the request, so its NAT is open when B's first packet
// arrives). The wire format is described in punch_wire.go.
//
// Bounds: R forwards only to peers it has a direct connection to, at most
// PunchLimits.PerPeer requests per second from one initiator and
// PunchLimits.Total in all; B dials only addresses at the IP address R saw
// A at, or private (LAN) addresses, at most maxPunchAddrs, with at most
// maxPunchDials punches at once; every message is at most maxPunchMsg
// bytes.
const PunchProtocol = protocol.ID("/p2pos/punch/1.0.0")

// PunchStatus is the status of a punch answer.
type PunchStatus byte

// Punch statuses.
const (
	PunchOK PunchStatus = iota
	// PunchUnknownPeer: the relay has no direct connection to the target.
	PunchUnknownPeer
	// PunchRateLimited: the relay or the target refused, over a limit.
	PunchRateLimited
	// PunchRefused: the relay does not relay (it is not public), or the
	// target does not take hole punches.
	PunchRefused
	// PunchNoAnswer: the relay got no answer from the target.
	PunchNoAnswer
)

func (s PunchStatus) String() string {
	switch s {
	case PunchOK:
		return "ok"
	case PunchUnknownPeer:
		return "target unknown to the relay"
	case PunchRateLimited:
		return "rate-limited"
	case PunchRefused:
		return "refused"
	case PunchNoAnswer:
		return "target did not answer"
	}
	return fmt.Sprintf("status %d", byte(s))
}

// PunchError is returned by Punch when the relay or the target said no.
type PunchError struct {
	Relay  peer.ID
	Status PunchStatus
}

func (e *PunchError) Error() string {
	return fmt.Sprintf("relay: hole punch through %s: %s", e.Relay, e.Status)
}

// PunchLimits bound what a relay forwards.
type PunchLimits struct {
	// PerPeer is the requests per second one initiator may make (burst
	// PerPeerBurst); Total those of all initiators (burst TotalBurst).
	PerPeer      rate.Limit
	PerPeerBurst int
	Total        rate.Limit
	TotalBurst   int
}

// DefaultPunchLimits: 1 request per second per initiator with bursts of 4,
// 200 per second in all with bursts of 400.
func DefaultPunchLimits() PunchLimits {
	return PunchLimits{PerPeer: 1, PerPeerBurst: 4, Total: 200, TotalBurst: 400}
}

// Bounds of the punch service.
const (
	punchStreamTimeout = 5 * time.Second
	// punchDialTimeout bounds the target's dial back.
	punchDialTimeout = 10 * time.Second
	// maxPunchDials is how many dials back the target runs at once.
	maxPunchDials = 8
	// maxPunchPeers is how many initiators' limiters a relay keeps.
	maxPunchPeers = 4096
)

// PunchService serves PunchProtocol: as a relay when enabled (SetRelay),
// and always as a target. It also starts punches (Punch). Its goroutines
// are owned by it and end with Close.
type PunchService struct {
	h       host.Host
	scope   scope.Scope
	addrs   func() []ma.Multiaddr
	limits  PunchLimits
	log     *logging.ZapEventLogger
	observe func(role string, status PunchStatus)
	// observeSpray is told of every spray punch's end: the part this side
	// took ("catch" or "spray"), whether a probe got through, and the
	// probes sent.
	observeSpray func(role string, hit bool, probes int)

	nat        func() PunchNAT
	sharedUDP  func(*net.UDPAddr) (net.PacketConn, error)
	sprayPorts [2]int // lowest and highest port a spray probes

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	dials  chan struct{} // semaphore of dials back
	sprays chan struct{} // semaphore of sprays and catches

	mu      sync.Mutex
	relay   bool                      // guarded by mu
	noPunch bool                      // guarded by mu
	closed  bool                      // guarded by mu
	total   *rate.Limiter             // guarded by mu
	perPeer map[peer.ID]*rate.Limiter // guarded by mu

	forwarders int                     // guarded by mu
	forwarded  map[string]ma.Multiaddr // thin waist of a forwarder's local end: the peer's address; guarded by mu
	probes     uint64                  // spray probes sent; guarded by mu
}

// PunchOption configures a PunchService.
type PunchOption func(*PunchService)

// WithPunchNAT has the service tell peers what nat returns of the host's
// NAT; with WithSharedUDP too, it takes part in spray punches.
func WithPunchNAT(nat func() PunchNAT) PunchOption {
	return func(s *PunchService) { s.nat = nat }
}

// WithSharedUDP gives the service a way to send and receive non-QUIC
// packets on the host's QUIC socket bound to an address, as
// quicreuse.ConnManager.SharedNonQUICPacketConn does: a spray punch's
// probes go out from that socket.
func WithSharedUDP(shared func(laddr *net.UDPAddr) (net.PacketConn, error)) PunchOption {
	return func(s *PunchService) { s.sharedUDP = shared }
}

// WithSprayObserver has observe called when a spray punch ends, with
// this side's part ("catch": it opened the sockets; "spray": it sent the
// probes), whether a probe got through, and how many probes it sent; for
// metrics.
func WithSprayObserver(observe func(role string, hit bool, probes int)) PunchOption {
	return func(s *PunchService) { s.observeSpray = observe }
}

// WithPunchObserver has observe called with the status of every request
// the service forwarded (role "relay") or took (role "target"), for
// metrics.
func WithPunchObserver(observe func(role string, status PunchStatus)) PunchOption {
	return func(s *PunchService) { s.observe = observe }
}

// NewPunchService starts serving PunchProtocol on h. addrs returns the
// addresses to announce (as for NewHolePunch); sc decides which of a
// peer's addresses may be dialed besides LAN ones.
func NewPunchService(h host.Host, sc scope.Scope, addrs func() []ma.Multiaddr, log *logging.ZapEventLogger, opts ...PunchOption) *PunchService {
	if log == nil {
		log = logging.Logger("rendezvous/relay")
	}
	l := DefaultPunchLimits()
	ctx, cancel := context.WithCancel(context.Background())
	s := &PunchService{
		h: h, scope: sc, addrs: addrs, limits: l, log: log,
		ctx: ctx, cancel: cancel,
		dials:      make(chan struct{}, maxPunchDials),
		sprays:     make(chan struct{}, 1),
		sprayPorts: [2]int{minSprayPort, maxSprayPort},
		forwarded:  map[string]ma.Multiaddr{},
		nat:        func() PunchNAT { return PunchNAT{} },
		total:      rate.NewLimiter(l.Total, l.TotalBurst),
		perPeer:    map[peer.ID]*rate.Limiter{},
		observe:    func(string, PunchStatus) {},
	}
	for _, o := range opts {
		o(s)
	}
	h.SetStreamHandler(PunchProtocol, s.handle)
	return s
}

// SetRelay turns forwarding for other peers on or off: public nodes
// forward.
func (s *PunchService) SetRelay(on bool) {
	s.mu.Lock()
	s.relay = on
	s.mu.Unlock()
}

// SetPunching turns taking and starting punches on or off (default on).
func (s *PunchService) SetPunching(on bool) {
	s.mu.Lock()
	s.noPunch = !on
	s.mu.Unlock()
}

// Close stops serving and waits for the service's goroutines. It is
// idempotent.
func (s *PunchService) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.h.RemoveStreamHandler(PunchProtocol)
	s.cancel()
	s.wg.Wait()
	return nil
}

// goOwned runs f on a goroutine the service waits for at Close; it
// returns false once closed.
func (s *PunchService) goOwned(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

func (s *PunchService) handle(st network.Stream) {
	defer st.Close()
	st.SetDeadline(time.Now().Add(punchStreamTimeout))
	m, err := readPunchMsg(st)
	if err != nil {
		s.log.Debugw("punch: bad message", "peer", st.Conn().RemotePeer(), "error", err)
		st.Reset()
		return
	}
	switch m.Type {
	case msgRequest:
		s.forward(st, m)
	case msgForward:
		s.answer(st, m)
	default:
		st.Reset()
	}
}

func reply(st network.Stream, m punchMsg) {
	m.Type = msgAnswer
	if len(m.Addrs) > maxPunchAddrs {
		m.Addrs = m.Addrs[:maxPunchAddrs]
	}
	if err := writePunchMsg(st, m); err != nil {
		st.Reset()
	}
}

// replyAs answers st with status alone, and tells the observer what role
// answered how.
func (s *PunchService) replyAs(st network.Stream, role string, status PunchStatus) {
	s.replyWith(st, role, punchMsg{Status: status})
}

func (s *PunchService) replyWith(st network.Stream, role string, m punchMsg) {
	s.observe(role, m.Status)
	reply(st, m)
}

// allow applies the relay's limits to a request from p.
func (s *PunchService) allow(p peer.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.perPeer[p]
	if l == nil {
		if len(s.perPeer) >= maxPunchPeers {
			clear(s.perPeer) // limiters start full again: at worst a burst more
		}
		l = rate.NewLimiter(s.limits.PerPeer, s.limits.PerPeerBurst)
		s.perPeer[p] = l
	}
	return l.Allow() && s.total.Allow()
}

// forward passes a request on to its target, as a relay.
func (s *PunchService) forward(st network.Stream, m punchMsg) {
	from := st.Conn().RemotePeer()
	s.mu.Lock()
	on := s.relay
	s.mu.Unlock()
	switch {
	case !on || st.Conn().Stat().Limited || IsRelayed(st.Conn().RemoteMultiaddr()):
		s.replyAs(st, "relay", PunchRefused)
		return
	case !s.allow(from):
		s.replyAs(st, "relay", PunchRateLimited)
		return
	case m.Peer == "" || m.Peer == from || !directlyConnected(s.h, m.Peer):
		s.replyAs(st, "relay", PunchUnknownPeer)
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, punchStreamTimeout)
	defer cancel()
	ts, err := s.h.NewStream(network.WithNoDial(ctx, "punch forward"), m.Peer, PunchProtocol)
	if err != nil {
		s.replyAs(st, "relay", PunchUnknownPeer)
		return
	}
	defer ts.Close()
	ts.SetDeadline(time.Now().Add(punchStreamTimeout))
	fwd := punchMsg{Type: msgForward, NAT: m.NAT, Token: m.Token, Peer: from, Observed: st.Conn().RemoteMultiaddr(), Addrs: m.Addrs}
	if err := writePunchMsg(ts, fwd); err != nil {
		ts.Reset()
		s.replyAs(st, "relay", PunchNoAnswer)
		return
	}
	ans, err := readPunchMsg(ts)
	if err != nil || ans.Type != msgAnswer {
		ts.Reset()
		s.replyAs(st, "relay", PunchNoAnswer)
		return
	}
	s.replyWith(st, "relay", punchMsg{Status: ans.Status, NAT: ans.NAT, Token: ans.Token,
		Observed: ts.Conn().RemoteMultiaddr(), Addrs: ans.Addrs})
}

// directlyConnected tells whether h has a direct connection to p.
func directlyConnected(h host.Host, p peer.ID) bool {
	for _, c := range h.Network().ConnsToPeer(p) {
		if !c.Stat().Limited && !IsRelayed(c.RemoteMultiaddr()) {
			return true
		}
	}
	return false
}

// answer takes a forwarded request, as its target: it answers with its
// addresses and dials the initiator back.
func (s *PunchService) answer(st network.Stream, m punchMsg) {
	s.mu.Lock()
	off := s.noPunch
	s.mu.Unlock()
	if off || st.Conn().Stat().Limited || IsRelayed(st.Conn().RemoteMultiaddr()) || m.Peer == "" || m.Peer == s.h.ID() {
		s.replyAs(st, "target", PunchRefused)
		return
	}
	targets := dialable(s.scope, m.Observed, m.Addrs)
	if len(targets) == 0 {
		s.replyAs(st, "target", PunchRefused)
		return
	}
	select {
	case s.dials <- struct{}{}:
	default:
		s.replyAs(st, "target", PunchRateLimited)
		return
	}
	own := s.ownNAT()
	s.log.Debugw("punch: forwarded request", "peer", m.Peer, "nat", m.NAT, "own", own)
	switch {
	case catches(own, m.NAT):
		// The hellos leave before the answer: the initiator sprays
		// once it has the answer.
		if quic, ok := sprayOverQUIC(own, m.NAT); ok {
			s.startCatch(m.Token, targets, quic)
		}
	case sprays(own, m.NAT):
		quic, ok := sprayOverQUIC(own, m.NAT)
		if ip, ipok := scope.IPOf(m.Observed); ok && ipok && ip.Is4() {
			s.startSpray(m.Token, m.Peer, ip, quic)
		}
	}
	s.replyWith(st, "target", punchMsg{Status: PunchOK, NAT: own, Token: m.Token, Addrs: punchable(s.scope, s.addrs())})
	if !s.goOwned(func() {
		defer func() { <-s.dials }()
		ctx, cancel := context.WithTimeout(s.ctx, punchDialTimeout)
		defer cancel()
		err := punchDial(ctx, s.h, m.Peer, targets, true)
		s.log.Debugw("punch: dialed back", "peer", m.Peer, "addrs", targets, "error", err)
	}) {
		<-s.dials
	}
}

// ownNAT is what the host tells peers of its NAT.
func (s *PunchService) ownNAT() PunchNAT {
	n := s.nat()
	_, quic := quicListenAddr(s.h)
	_, tcp := tcpListenAddr(s.h)
	n.Sprays = n.Known && quic && !n.NoUDP && (n.Dependent || s.sharedUDP != nil)
	n.SpraysTCP = n.Known && tcp
	return n
}

// catches tells whether a side that knows own of its NAT, punching to one
// behind peer, opens a spray punch's many sockets; sprays whether it sends
// the probes. Only an endpoint-dependent mapping facing a strict filter
// needs it: other pairs an ordinary punch opens.
// A record does not say whether its peer sprays: an initiator assumes it
// does.
func catches(own, peer PunchNAT) bool {
	return (own.Sprays || own.SpraysTCP) && own.Known && peer.Known && own.Dependent && !peer.Dependent && peer.Strict
}

func sprays(own, peer PunchNAT) bool {
	return (peer.Sprays || peer.SpraysTCP) && catches(peer, own)
}

// sprayOverQUIC tells which transport a spray punch between own and peer
// takes: QUIC when both take part over QUIC, TCP when both do over TCP
// only (and ok false when neither).
func sprayOverQUIC(own, peer PunchNAT) (quic, ok bool) {
	switch {
	case own.Sprays && peer.Sprays:
		return true, true
	case own.SpraysTCP && peer.SpraysTCP:
		return false, true
	}
	return false, false
}

// startCatch opens a catcher's sockets toward the peer's public addresses
// in addrs (over QUIC, or TCP), unless another spray punch runs. It
// returns whether it did.
func (s *PunchService) startCatch(token [8]byte, addrs []ma.Multiaddr, quic bool) bool {
	dsts := s.sprayTargets(addrs, quic)
	if len(dsts) == 0 {
		return false
	}
	select {
	case s.sprays <- struct{}{}:
	default:
		return false
	}
	s.log.Debugw("punch: catching", "dsts", dsts, "quic", quic)
	release := func() { <-s.sprays }
	var err error
	if quic {
		err = s.catch(token, dsts, release)
	} else {
		err = s.catchTCP(token, dsts[0], release)
	}
	if err != nil {
		s.log.Debugw("punch: spray catch", "error", err)
		return false
	}
	return true
}

// startSpray sprays ip and dials p there, on the service's goroutines.
func (s *PunchService) startSpray(token [8]byte, p peer.ID, ip netip.Addr, quic bool) {
	s.goOwned(func() {
		ctx, cancel := context.WithTimeout(s.ctx, punchDialTimeout)
		defer cancel()
		s.trySpray(ctx, token, p, ip, quic)
	})
}

// errSprayBusy: another spray punch runs.
var errSprayBusy = errors.New("relay: another spray punch runs")

// trySpray sprays ip and dials p, unless another spray punch runs.
func (s *PunchService) trySpray(ctx context.Context, token [8]byte, p peer.ID, ip netip.Addr, quic bool) error {
	select {
	case s.sprays <- struct{}{}:
	default:
		return errSprayBusy
	}
	defer func() { <-s.sprays }()
	var err error
	if quic {
		err = s.sprayDial(ctx, token, p, ip)
	} else {
		err = s.sprayDialTCP(ctx, token, p, ip)
	}
	s.log.Debugw("punch: spray", "peer", p, "ip", ip, "error", err)
	return err
}

// SprayProbes is how many spray probes the service sent.
func (s *PunchService) SprayProbes() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.probes
}

// dialable keeps the initiator's addresses a target may dial: those at the
// IP address the relay saw it at (with guesses for transports it was not
// seen on, see withGuessedAddrs), and private (LAN) ones; never more than
// maxPunchAddrs.
func dialable(sc scope.Scope, observed ma.Multiaddr, addrs []ma.Multiaddr) []ma.Multiaddr {
	seen, ok := scope.IPOf(observed)
	var out []ma.Multiaddr
	for _, a := range withGuessedAddrs(seen, punchable(sc, addrs)) {
		ip, aok := scope.IPOf(a)
		if !aok {
			continue
		}
		if (ok && ip == seen) || (manet.IsPrivateAddr(a) && !sc.IsPublic(a)) {
			out = append(out, a)
		}
		if len(out) == maxPunchAddrs {
			break
		}
	}
	return out
}

// punchDial dials p at addrs directly, as one side of a simultaneous open:
// the client side dials; the other side sends packets that open its NAT
// and waits for the client's connection (QUIC), or dials too (TCP).
func punchDial(ctx context.Context, h host.Host, p peer.ID, addrs []ma.Multiaddr, client bool) error {
	ctx = network.WithForceDirectDial(ctx, "hole punch")
	ctx = network.WithSimultaneousConnect(ctx, client, "hole punch")
	return h.Connect(ctx, peer.AddrInfo{ID: p, Addrs: addrs})
}

// ErrPunchOff is returned by Punch when punching is turned off.
var ErrPunchOff = errors.New("relay: hole punching is off")

// ErrPunchFailed is returned by Punch when no direct connection came.
var ErrPunchFailed = errors.New("relay: hole punch failed")

// Punch asks relayID, one of target's relays, to coordinate a hole punch,
// and dials target at once at known (the addresses in its record) and at
// the addresses it answers with. It returns the direct connection that
// came, or an error: a *PunchError when the relay or the target refused,
// ErrPunchFailed (wrapping ctx's error) when nothing came in time.
func (s *PunchService) Punch(ctx context.Context, relayID, target peer.ID, known []ma.Multiaddr) (network.Conn, error) {
	c, _, err := s.PunchTraced(ctx, relayID, target, known, PunchNAT{})
	return c, err
}

// PunchTrace tells how a punch went.
type PunchTrace struct {
	// Answered is when the relay's answer came, from the start; 0 if none
	// came.
	Answered time.Duration
	// Known are the addresses dialed from the start; Answered the ones
	// the target answered with.
	Known, Addrs []ma.Multiaddr
	// Spray is the side's part in a spray punch: "catch", "spray" or
	// empty.
	Spray string
	// SprayErr is why the spray made no connection, if it did not.
	SprayErr error
}

// PunchTraced is Punch, and tells how the punch went. nat is what the
// target's record says of its NAT: with it, a pair an ordinary punch
// cannot open is spray-punched (spray.go).
func (s *PunchService) PunchTraced(ctx context.Context, relayID, target peer.ID, known []ma.Multiaddr, nat PunchNAT) (_ network.Conn, tr PunchTrace, _ error) {
	start := time.Now()
	s.mu.Lock()
	off := s.noPunch
	s.mu.Unlock()
	if off {
		return nil, tr, ErrPunchOff
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	own := punchable(s.scope, s.addrs())
	if len(own) > maxPunchAddrs {
		own = own[:maxPunchAddrs]
	}
	known = punchable(s.scope, known)
	tr.Known = known
	me := s.ownNAT()
	var token [8]byte
	crand.Read(token[:])
	if catches(me, nat) {
		// The hellos leave before the request: the target sprays once
		// it has it. The record does not say how the target takes part:
		// QUIC if it has a QUIC address, else TCP.
		if s.startCatch(token, known, me.Sprays) || (me.Sprays && s.startCatch(token, known, false)) {
			tr.Spray = "catch"
		}
	}
	dial := func(addrs []ma.Multiaddr) {
		if len(addrs) == 0 {
			return
		}
		wg.Go(func() { punchDial(ctx, s.h, target, addrs, false) })
	}
	dial(known)

	st, err := s.h.NewStream(ctx, relayID, PunchProtocol)
	if err != nil {
		return nil, tr, fmt.Errorf("relay: hole punch through %s: %w", relayID, err)
	}
	st.SetDeadline(time.Now().Add(punchStreamTimeout))
	if err := writePunchMsg(st, punchMsg{Type: msgRequest, NAT: me, Token: token, Peer: target, Addrs: own}); err != nil {
		st.Reset()
		return nil, tr, fmt.Errorf("relay: hole punch through %s: %w", relayID, err)
	}
	ans, err := readPunchMsg(st)
	st.Close()
	if err == nil {
		tr.Answered = time.Since(start)
		tr.Addrs = ans.Addrs
	}
	if err != nil {
		return nil, tr, fmt.Errorf("relay: hole punch through %s: %w", relayID, err)
	}
	if ans.Type != msgAnswer {
		return nil, tr, fmt.Errorf("%w: answer of type %d", errMalformed, ans.Type)
	}
	if ans.Status != PunchOK {
		return nil, tr, &PunchError{Relay: relayID, Status: ans.Status}
	}
	var fresh []ma.Multiaddr
	seen, _ := scope.IPOf(ans.Observed)
	for _, a := range withGuessedAddrs(seen, punchable(s.scope, ans.Addrs)) {
		if !containsAddr(known, a) {
			fresh = append(fresh, a)
		}
	}
	dial(fresh)
	s.log.Debugw("punch: answered", "peer", target, "nat", ans.NAT, "own", me, "observed", ans.Observed)
	var sprayErr chan error
	quic, both := sprayOverQUIC(me, ans.NAT)
	if ip, ok := scope.IPOf(ans.Observed); ok && ip.Is4() && both && sprays(me, ans.NAT) {
		tr.Spray = "spray"
		sprayErr = make(chan error, 1)
		wg.Go(func() { sprayErr <- s.trySpray(ctx, token, target, ip, quic) })
	}
	// A spray that fails ends the punch: nothing else opens such a pair.
	direct := make(chan network.Conn, 1)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	wg.Go(func() {
		if c, err := WaitDirect(wctx, s.h, target); err == nil {
			direct <- c
		}
	})
	for {
		select {
		case c := <-direct:
			return c, tr, nil
		case err := <-sprayErr:
			sprayErr = nil
			if err == nil {
				continue // sprayed and dialed: the connection is coming
			}
			tr.SprayErr = err
			if c := BestConn(s.h, target); c != nil && !c.Stat().Limited && !IsRelayed(c.RemoteMultiaddr()) {
				return c, tr, nil
			}
			return nil, tr, fmt.Errorf("%w: the spray missed: %w", ErrPunchFailed, err)
		case <-ctx.Done():
			return nil, tr, fmt.Errorf("%w: %w", ErrPunchFailed, ctx.Err())
		}
	}
}

func containsAddr(list []ma.Multiaddr, a ma.Multiaddr) bool {
	for _, x := range list {
		if x.Equal(a) {
			return true
		}
	}
	return false
}
