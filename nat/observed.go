package nat

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/p2pos/rendezvous/nat/probe"
	"github.com/p2pos/rendezvous/scope"
)

// Observed tracks the addresses at which the host's peers see it: the
// address identify reports on each direct connection to a peer with an
// in-scope public address. Behind a NAT whose mapping is endpoint
// independent, every peer sees the same address for a listen socket: the
// one another NATed peer can punch a hole to.
//
// libp2p's own observed-address manager trusts an address only once four
// peers reported it; a small network has fewer. Observed counts distinct
// observer IP addresses per address and leaves the threshold to the
// caller, who knows the NAT's mapping behaviour.
type Observed struct {
	h      host.Host
	scope  scope.Scope
	trust  func([]protocol.ID) bool
	linger time.Duration

	cancel  context.CancelFunc
	done    chan struct{}
	changed chan struct{}

	mu    sync.Mutex
	conns map[network.Conn]observation // guarded by mu
}

// observation is what one connection's peer reported.
type observation struct {
	observer string       // the observer's IP address
	addr     ma.Multiaddr // the observed address, thin waist only
	local    string       // the connection's local address, thin waist only
	closed   time.Time    // when the connection closed; zero while open
}

// DefaultObservedLinger is how long an observation outlives its
// connection: a private node closes idle connections to DHT servers after a
// minute, and the NAT's mapping, and the record that names it, should not
// change with them.
const DefaultObservedLinger = 30 * time.Minute

// ObservedLinger sets how long an observation outlives its connection
// (default DefaultObservedLinger).
func ObservedLinger(d time.Duration) ObservedOption {
	return func(o *Observed) { o.linger = d }
}

// ObservedAddr is an address peers see, with how many distinct observer IP
// addresses reported it.
type ObservedAddr struct {
	Addr      ma.Multiaddr
	Observers int
}

// ObservedOption configures an Observed.
type ObservedOption func(*Observed)

// TrustObservers believes only peers whose identify protocols pass trust,
// for example the DHT's servers: a NATed peer that connects for a moment
// would otherwise count as an observer, and change the set for as long.
func TrustObservers(trust func([]protocol.ID) bool) ObservedOption {
	return func(o *Observed) { o.trust = trust }
}

// NewObserved starts tracking h's observed addresses; only peers whose
// address sc counts as public are believed. Close stops it.
func NewObserved(h host.Host, sc scope.Scope, opts ...ObservedOption) (*Observed, error) {
	sub, err := h.EventBus().Subscribe([]any{
		new(event.EvtPeerIdentificationCompleted),
		new(event.EvtPeerConnectednessChanged),
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	o := &Observed{h: h, scope: sc, linger: DefaultObservedLinger, cancel: cancel, done: make(chan struct{}), changed: make(chan struct{}, 1),
		conns: map[network.Conn]observation{}}
	for _, opt := range opts {
		opt(o)
	}
	go o.run(ctx, sub)
	return o, nil
}

// Changed receives a value, without blocking the tracker, after the
// observations changed; one value may stand for several changes.
func (o *Observed) Changed() <-chan struct{} { return o.changed }

func (o *Observed) signal() {
	select {
	case o.changed <- struct{}{}:
	default:
	}
}

// Close stops tracking and waits for the tracker's goroutine. It is
// idempotent.
func (o *Observed) Close() error {
	o.cancel()
	<-o.done
	return nil
}

func (o *Observed) run(ctx context.Context, sub event.Subscription) {
	defer close(o.done)
	defer sub.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-sub.Out():
			if !ok {
				return
			}
			switch e := e.(type) {
			case event.EvtPeerIdentificationCompleted:
				if o.trust == nil || o.trust(e.Protocols) {
					o.observe(e.Conn, e.ObservedAddr)
				}
			case event.EvtPeerConnectednessChanged:
				o.prune()
			}
		}
	}
}

// observe records what the peer on c reported.
func (o *Observed) observe(c network.Conn, observed ma.Multiaddr) {
	if c == nil || len(observed) == 0 || c.Stat().Limited || isRelayed(c.RemoteMultiaddr()) {
		return
	}
	if !o.scope.IsPublic(c.RemoteMultiaddr()) || !o.scope.IsPublic(observed) {
		return
	}
	observer, err := manet.ToIP(c.RemoteMultiaddr())
	if err != nil {
		return
	}
	addr := thinWaist(observed)
	if addr == nil || !sameTransport(addr, c.LocalMultiaddr()) {
		return
	}
	var local string
	if l := thinWaist(c.LocalMultiaddr()); l != nil {
		local = string(l.Bytes())
	}
	ob := observation{observer: observer.String(), addr: addr, local: local}
	o.mu.Lock()
	old, had := o.conns[c]
	o.conns[c] = ob
	o.mu.Unlock()
	if !had || old.observer != ob.observer || !old.addr.Equal(ob.addr) {
		o.signal()
	}
	o.prune()
}

// prune marks the observations of closed connections, and forgets those
// closed longer than the linger time.
func (o *Observed) prune() {
	open := map[network.Conn]bool{}
	for _, c := range o.h.Network().Conns() {
		open[c] = true
	}
	now := time.Now()
	o.mu.Lock()
	n := len(o.conns)
	marked := false
	for c, ob := range o.conns {
		switch {
		case open[c]:
		case ob.closed.IsZero():
			ob.closed = now
			o.conns[c] = ob
			marked = true
		}
		if !ob.closed.IsZero() && now.Sub(ob.closed) >= o.linger {
			delete(o.conns, c)
		}
	}
	pruned := len(o.conns) != n
	o.mu.Unlock()
	if pruned || marked {
		o.signal()
	}
}

// Addrs returns the observed addresses with at least min distinct
// observers, most observed first.
func (o *Observed) Addrs(min int) []ObservedAddr {
	o.mu.Lock()
	observers := map[string]map[string]bool{}
	addrs := map[string]ma.Multiaddr{}
	for _, ob := range o.conns {
		if !ob.closed.IsZero() && time.Since(ob.closed) >= o.linger {
			continue
		}
		k := string(ob.addr.Bytes())
		if observers[k] == nil {
			observers[k] = map[string]bool{}
		}
		observers[k][ob.observer] = true
		addrs[k] = ob.addr
	}
	o.mu.Unlock()
	var out []ObservedAddr
	for k, set := range observers {
		if len(set) >= min {
			out = append(out, ObservedAddr{Addr: addrs[k], Observers: len(set)})
		}
	}
	slices.SortFunc(out, func(a, b ObservedAddr) int {
		if a.Observers != b.Observers {
			return b.Observers - a.Observers
		}
		return slices.Compare(a.Addr.Bytes(), b.Addr.Bytes())
	})
	return out
}

// Mapping tells how the NAT maps the host's sockets, as far as its peers'
// observations show: EndpointIndependent when two observers at different
// IP addresses saw one socket (QUIC's, or TCP's listening one, which
// libp2p dials from too) at the same address, AddressAndPortDependent
// when they saw it at different ones, and BehaviorUnknown before two
// observers spoke for one socket. It is known after a few connections,
// long before a NAT survey ends.
func (o *Observed) Mapping() probe.Behavior {
	type seen struct{ observer, addr string }
	o.mu.Lock()
	bySocket := map[string][]seen{}
	for _, ob := range o.conns {
		if ob.local == "" || (!ob.closed.IsZero() && time.Since(ob.closed) >= o.linger) {
			continue
		}
		bySocket[ob.local] = append(bySocket[ob.local], seen{ob.observer, string(ob.addr.Bytes())})
	}
	o.mu.Unlock()
	verdict := probe.BehaviorUnknown
	for _, obs := range bySocket {
		for i, a := range obs {
			for _, b := range obs[i+1:] {
				if a.observer == b.observer {
					continue
				}
				if a.addr != b.addr {
					return probe.AddressAndPortDependent
				}
				verdict = probe.EndpointIndependent
			}
		}
	}
	return verdict
}

// thinWaist returns the IP, transport and port part of a, with QUIC's
// version kept (/ip4/x/udp/p/quic-v1, /ip4/x/tcp/p); nil for anything
// else.
func thinWaist(a ma.Multiaddr) ma.Multiaddr {
	if len(a) < 2 {
		return nil
	}
	switch a[0].Code() {
	case ma.P_IP4, ma.P_IP6:
	default:
		return nil
	}
	switch a[1].Code() {
	case ma.P_TCP:
		return a[:2]
	case ma.P_UDP:
		if len(a) >= 3 && a[2].Code() == ma.P_QUIC_V1 {
			return a[:3]
		}
	}
	return nil
}

// sameTransport tells whether a and b use the same transport (TCP, or QUIC
// v1 over UDP).
func sameTransport(a, b ma.Multiaddr) bool {
	ta, tb := thinWaist(a), thinWaist(b)
	if ta == nil || tb == nil || len(ta) != len(tb) {
		return false
	}
	return ta[1].Code() == tb[1].Code()
}
