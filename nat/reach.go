package nat

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	logging "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/protocol/autonatv2"
	noise "github.com/libp2p/go-libp2p/p2p/security/noise"
	tls "github.com/libp2p/go-libp2p/p2p/security/tls"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/p2pos/rendezvous/scope"
)

// Verdict is what the Checker concluded.
type Verdict struct {
	Reachability network.Reachability
	// Confirmed are the addresses a peer dialed back.
	Confirmed []ma.Multiaddr
	// Time is when the verdict was reached.
	Time time.Time
}

// Defaults of the Checker.
const (
	DefaultRecheck = 10 * time.Minute
	retryUnknown   = 3 * time.Second
	settle         = 500 * time.Millisecond
	checkTimeout   = 30 * time.Second
	maxCandidates  = 4
)

type settings struct {
	scope    scope.Scope
	extra    func() []ma.Multiaddr
	onChange func(Verdict)
	recheck  time.Duration
	log      *logging.ZapEventLogger
	noCheck  bool
}

// Option configures a Checker.
type Option func(*settings) error

// WithScope sets which addresses may be public. Default: the internet. With
// extra ranges, AutoNAT v2 is allowed to check (and, as a server, to dial)
// private addresses; only in-scope ones are ever asked for.
func WithScope(s scope.Scope) Option { return func(st *settings) error { st.scope = s; return nil } }

// WithExtraAddrs adds candidate addresses besides the host's own, such as
// a port mapping obtained from the gateway.
func WithExtraAddrs(f func() []ma.Multiaddr) Option {
	return func(st *settings) error { st.extra = f; return nil }
}

// WithOnChange sets a function called, from the Checker's goroutine, when
// the reachability changes.
func WithOnChange(f func(Verdict)) Option {
	return func(st *settings) error { st.onChange = f; return nil }
}

// WithRecheck sets how often a settled verdict is checked again.
func WithRecheck(d time.Duration) Option {
	return func(st *settings) error {
		if d <= 0 {
			return errors.New("nat: recheck interval must be positive")
		}
		st.recheck = d
		return nil
	}
}

// ServeOnly makes the Checker answer other peers' dial-back requests
// without checking its own host, whose reachability is known.
func ServeOnly() Option { return func(st *settings) error { st.noCheck = true; return nil } }

// WithLogger sets the logger.
func WithLogger(l *logging.ZapEventLogger) Option {
	return func(st *settings) error { st.log = l; return nil }
}

// Checker finds out, by dial-back, whether a host is publicly reachable. It
// also serves dial-back requests of other peers. Its goroutines are owned
// by it and end with Close.
//
// AutoNAT v2 learns which peers can dial back only from connection and
// identify events, so a Checker must be created before its host connects
// to any peer: peers connected before are never asked. It asks for its own
// verdict from Start on, so that whoever hears the verdict can be built in
// between.
type Checker struct {
	h  host.Host
	an *autonatv2.AutoNAT
	s  settings

	wake      chan struct{}
	start     chan struct{}
	startOnce sync.Once
	cancel    context.CancelFunc
	done      chan struct{}

	mu      sync.Mutex
	verdict Verdict // guarded by mu
}

// NewChecker starts serving dial-backs on h and following which of h's
// peers serve them. It checks h's own reachability once Start is called;
// until then, and until the first check ends, the verdict is Unknown.
func NewChecker(h host.Host, opts ...Option) (_ *Checker, err error) {
	s := settings{scope: scope.Internet(), recheck: DefaultRecheck}
	for _, o := range opts {
		if err := o(&s); err != nil {
			return nil, err
		}
	}
	if s.log == nil {
		s.log = logging.Logger("rendezvous/nat")
	}
	// Dial-backs come from a host of their own, so that a successful one
	// proves a fresh connection reached us.
	dialer, err := libp2p.New(
		libp2p.NoListenAddrs,
		libp2p.Transport(libp2pquic.NewTransport),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Security(tls.ID, tls.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
		libp2p.ForceReachabilityPrivate(),
	)
	if err != nil {
		return nil, fmt.Errorf("nat: dial-back host: %w", err)
	}
	var anOpts []autonatv2.AutoNATOption
	if len(s.scope.Ranges()) > 0 {
		anOpts = append(anOpts, autonatv2.AllowPrivateAddrs)
	}
	an, err := autonatv2.New(dialer, anOpts...)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("nat: autonat v2: %w", err), dialer.Close())
	}
	if err := an.Start(h); err != nil {
		an.Close() // closes the dialer host too
		return nil, fmt.Errorf("nat: autonat v2: %w", err)
	}
	sub, err := h.EventBus().Subscribe([]any{
		new(event.EvtLocalAddressesUpdated),
		new(event.EvtPeerIdentificationCompleted),
	})
	if err != nil {
		an.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Checker{
		h: h, an: an, s: s,
		wake:    make(chan struct{}, 1),
		start:   make(chan struct{}),
		cancel:  cancel,
		done:    make(chan struct{}),
		verdict: Verdict{Reachability: network.ReachabilityUnknown, Time: time.Now()},
	}
	go c.run(ctx, sub)
	return c, nil
}

// Verdict returns the current verdict.
func (c *Checker) Verdict() Verdict {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := c.verdict
	v.Confirmed = slices.Clone(v.Confirmed)
	return v
}

// Start begins checking the host's reachability. Later calls do nothing.
func (c *Checker) Start() {
	c.startOnce.Do(func() { close(c.start) })
}

// Recheck asks for a check soon, for example after a port mapping changed.
func (c *Checker) Recheck() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Close stops checking and serving dial-backs, and waits for the Checker's
// goroutines. It is idempotent.
func (c *Checker) Close() error {
	c.cancel()
	<-c.done
	return nil
}

func (c *Checker) run(ctx context.Context, sub event.Subscription) {
	defer close(c.done)
	defer c.an.Close()
	events := make(chan struct{})
	go func() { // read events apart, so the event bus never waits on a check
		defer close(events)
		defer sub.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-sub.Out():
				if !ok {
					return
				}
				// A new address is worth a check; a newly identified peer
				// only while there is no verdict yet (it may be the first
				// server): with one, each connection would cost a check.
				if _, peerEvent := e.(event.EvtPeerIdentificationCompleted); peerEvent &&
					c.Verdict().Reachability != network.ReachabilityUnknown {
					continue
				}
				c.Recheck()
			}
		}
	}()
	defer func() { <-events }()

	if c.s.noCheck {
		<-ctx.Done()
		return
	}
	select {
	case <-ctx.Done():
		return
	case <-c.start:
	}
	timer := time.NewTimer(settle)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
			// Let a burst of events settle before asking a peer.
			timer.Reset(settle)
			continue
		case <-timer.C:
		}
		timer.Reset(c.check(ctx))
	}
}

// candidates are the in-scope, non-relay addresses peers could dial, the
// ones confirmed before first. Only addresses of the machine's own
// interfaces and port mappings are candidates, not addresses peers observed
// through a NAT: a NAT that filters by address alone lets the dial-back in
// from the very server we just talked to, and would pass for no NAT.
func (c *Checker) candidates(confirmed []ma.Multiaddr) []ma.Multiaddr {
	local := map[string]bool{}
	for _, ip := range InterfaceIPs() {
		local[ip] = true
	}
	var all []ma.Multiaddr
	for _, a := range c.h.Addrs() {
		if ip, err := manet.ToIP(a); err == nil && local[ip.String()] {
			all = append(all, a)
		}
	}
	if c.s.extra != nil {
		all = append(all, c.s.extra()...)
	}
	var out []ma.Multiaddr
	add := func(a ma.Multiaddr) {
		for _, x := range out {
			if x.Equal(a) {
				return
			}
		}
		out = append(out, a)
	}
	for _, a := range confirmed {
		add(a)
	}
	for _, a := range c.s.scope.Filter(all) {
		if !isRelayed(a) {
			add(a)
		}
	}
	// Keep only addresses the node still has.
	out = slices.DeleteFunc(out, func(a ma.Multiaddr) bool {
		return !slices.ContainsFunc(all, func(b ma.Multiaddr) bool { return b.Equal(a) })
	})
	return out[:min(len(out), maxCandidates)]
}

// InterfaceIPs returns the IP addresses of the machine's interfaces,
// sorted.
func InterfaceIPs() []string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []string
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			out = append(out, ipn.IP.String())
		}
	}
	slices.Sort(out)
	return out
}

func isRelayed(a ma.Multiaddr) bool {
	return slices.ContainsFunc(a, func(c ma.Component) bool { return c.Code() == ma.P_CIRCUIT })
}

// check asks one peer to dial back and returns when to check again.
func (c *Checker) check(ctx context.Context) time.Duration {
	prev := c.Verdict()
	cands := c.candidates(prev.Confirmed)
	if len(cands) == 0 {
		c.set(Verdict{Reachability: network.ReachabilityPrivate, Time: time.Now()})
		return c.s.recheck
	}
	reqs := make([]autonatv2.Request, len(cands))
	for i, a := range cands {
		reqs[i] = autonatv2.Request{Addr: a}
	}
	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	res, err := c.an.GetReachability(cctx, reqs)
	cancel()
	switch {
	case ctx.Err() != nil:
		return c.s.recheck
	case err != nil || res.AllAddrsRefused:
		c.s.log.Debugw("dial-back check inconclusive", "error", err, "refused", res.AllAddrsRefused)
		return retryUnknown
	}
	switch res.Reachability {
	case network.ReachabilityPublic:
		c.set(Verdict{Reachability: network.ReachabilityPublic, Confirmed: []ma.Multiaddr{res.Addr}, Time: time.Now()})
	case network.ReachabilityPrivate:
		c.set(Verdict{Reachability: network.ReachabilityPrivate, Time: time.Now()})
	default:
		c.s.log.Debugw("dial-back check without verdict", "addr", res.Addr, "reachability", res.Reachability)
		return retryUnknown
	}
	return c.s.recheck
}

func (c *Checker) set(v Verdict) {
	c.mu.Lock()
	changed := c.verdict.Reachability != v.Reachability
	c.verdict = v
	c.mu.Unlock()
	c.s.log.Debugw("reachability", "verdict", v.Reachability, "confirmed", v.Confirmed)
	if changed && c.s.onChange != nil {
		c.s.onChange(v)
	}
}
