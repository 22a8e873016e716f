package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2pos/rendezvous/dht"
	"github.com/p2pos/rendezvous/nat/probe"
	"github.com/p2pos/rendezvous/relay"
)

// ErrSelf is returned by Connect when asked to connect to the node itself.
var ErrSelf = errors.New("rendezvous: cannot connect to self")

// Conn is a connection to a peer with the path it takes.
type Conn struct {
	network.Conn
	// Path says how the connection reaches the peer.
	Path relay.Path
	// Record is the peer's verified record used to connect (nil if the node
	// was connected already).
	Record *dht.Record
	// LookupTime is how long finding the record took (0 when cached).
	LookupTime time.Duration
	// LookupStats counts the lookup's requests and their bytes.
	LookupStats dht.Stats
	// Attempts are the ways tried, in the order they ended.
	Attempts []Attempt
}

// Attempt is one way Connect tried.
type Attempt struct {
	// Kind is "punch" (a hole punch coordinated by one of the peer's
	// relays) or "dial" (its direct and relay addresses).
	Kind string
	// Relay is the relay a punch went through.
	Relay peer.ID
	// Took is how long the attempt ran, from the end of the lookup.
	Took time.Duration
	// Answered is when a punch's relay answered, from the end of the
	// lookup (0: no answer).
	Answered time.Duration
	// Known are the peer's addresses from its record a punch dialed from
	// its start; Answered those the peer answered with.
	Known, AnsweredAddrs []ma.Multiaddr
	// Spray is this side's part in a spray punch ("catch": it opened the
	// sockets; "spray": it sent the probes), empty if there was none.
	Spray string
	// Err says why it failed; nil when it made the connection, or was
	// given up because another one did.
	Err error
}

// Connect finds id's record and connects to it, dialing its direct and relay
// addresses together. If the node is already connected, the existing
// connection is returned (a direct one if there is one). If a cached record
// leads nowhere, the record is fetched again from the DHT once.
func (n *Node) Connect(ctx context.Context, id peer.ID) (*Conn, error) {
	if n.closed() {
		return nil, ErrClosed
	}
	if id == n.h.ID() {
		return nil, ErrSelf
	}
	if c := relay.BestConn(n.h, id); c != nil {
		return &Conn{Conn: c, Path: n.pathOf(c)}, nil
	}
	start := time.Now()
	res, err := n.d.Lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	lookupTime := time.Since(start)
	c, p, attempts, err := n.dial(ctx, id, res.Record)
	if err != nil && res.Cached && ctx.Err() == nil {
		n.d.Forget(id)
		start = time.Now()
		if res, err = n.d.Lookup(ctx, id, dht.NoCache()); err != nil {
			return nil, err
		}
		lookupTime = time.Since(start)
		var more []Attempt
		c, p, more, err = n.dial(ctx, id, res.Record)
		attempts = append(attempts, more...)
	}
	n.mu.Lock()
	own := n.natInfo
	n.mu.Unlock()
	if err != nil {
		n.metrics.connected("failed", own, res.Record.NAT, attempts)
		return nil, err
	}
	n.metrics.connected(p.Kind.String(), own, res.Record.NAT, attempts)
	if res.Cached {
		lookupTime = 0
	}
	return &Conn{Conn: c, Path: p, Record: res.Record, LookupTime: lookupTime, LookupStats: res.Stats, Attempts: attempts}, nil
}

// WaitDirect waits until the node has a direct connection to id, for
// example one that a hole punch made out of a relayed connection, and
// returns it. A connection that came while a relayed one was up has the
// path relay.PathHolePunched. It returns ctx's error if none came.
func (n *Node) WaitDirect(ctx context.Context, id peer.ID) (*Conn, error) {
	if n.closed() {
		return nil, ErrClosed
	}
	before := relay.BestConn(n.h, id)
	c, err := relay.WaitDirect(ctx, n.h, id)
	if err != nil {
		return nil, err
	}
	p := n.pathOf(c)
	if before != nil && before != c && relay.PathOf(before).Kind == relay.PathRelayed {
		p.Kind = relay.PathHolePunched
	}
	return &Conn{Conn: c, Path: p}, nil
}

// Bounds of Connect's strategy.
const (
	// punchHead is how long a punch runs alone before the peer's relay
	// addresses are dialed too, in round trips to the relay, within
	// minPunchHead and maxPunchHead: the answer takes two, a QUIC
	// handshake one more, TCP with its security handshake three.
	punchHead    = 6
	minPunchHead = 100 * time.Millisecond
	maxPunchHead = 400 * time.Millisecond
	// punchBudget bounds a punch, also one that goes on after a relayed
	// connection was returned.
	punchBudget = 10 * time.Second
)

// dial connects to rec's peer. A peer reachable only through relays is
// punched to first: one of its relays coordinates, and the relay addresses
// are dialed too after a head start that depends on the round trip to the
// relay, or at once when the two NATs cannot be punched through. A punch
// that loses to the relay goes on, so that the connection becomes direct.
func (n *Node) dial(ctx context.Context, id peer.ID, rec *dht.Record) (network.Conn, relay.Path, []Attempt, error) {
	ri, ok := n.punchRelay(rec)
	if !ok {
		c, p, err := relay.Dial(ctx, n.h, id, rec.Addrs, rec.RelayAddrs)
		return c, p, []Attempt{{Kind: "dial", Err: err}}, err
	}
	start := time.Now()
	n.h.Peerstore().AddAddrs(ri.ID, ri.Addrs, peerstore.TempAddrTTL)
	type result struct {
		kind     string
		c        network.Conn
		p        relay.Path
		err      error
		took     time.Duration
		answered time.Duration
		tr       relay.PunchTrace
	}
	results := make(chan result, 2)
	// relayed is closed when dial returns a relayed connection while the
	// punch goes on.
	relayed := make(chan struct{})
	pctx, pcancel := context.WithTimeout(n.ctx, punchBudget)
	if !n.goOwned(func() {
		defer pcancel()
		c, tr, err := n.punchSvc.PunchTraced(pctx, ri.ID, id, rec.Addrs, punchNAT(rec.NAT))
		if err != nil && tr.SprayErr != nil && pctx.Err() == nil {
			// A spray that missed (one in a few hundred) is tried once
			// more, with new sockets.
			c, tr, err = n.punchSvc.PunchTraced(pctx, ri.ID, id, rec.Addrs, punchNAT(rec.NAT))
		}
		if err != nil && tr.SprayErr != nil {
			err = fmt.Errorf("%w (spray: %v)", err, tr.SprayErr)
		}
		r := result{kind: "punch", c: c, err: err, took: time.Since(start), answered: tr.Answered, tr: tr}
		if err == nil {
			r.p = n.pathOf(c)
			r.p.Kind = relay.PathHolePunched
			r.p.DialTime = r.took
		}
		results <- r
		if err != nil && tr.SprayErr != nil {
			select {
			case <-relayed:
				// The spray missed by chance (the NATs allow one): the
				// relayed connection's upgrade punches again now, not
				// after its usual first wait.
				n.kickUpgrade(id)
			default:
			}
		}
	}) {
		pcancel()
		return nil, relay.Path{}, nil, ErrClosed
	}
	head := n.punchHead(ri.ID, rec.NAT)
	timer := time.NewTimer(head)
	defer timer.Stop()
	var attempts []Attempt
	dialing, pending := false, 1
	// The relay dial stops when dial returns: a punch that won needs no
	// relayed connection, nor its round-trip measurement.
	dctx, dcancel := context.WithCancel(ctx)
	defer dcancel()
	// A connection the NATs will not let become direct goes through a
	// data relay, if the peer holds a reservation on one: other relays
	// cut it after the setup of a direct connection would be done.
	relays := rec.RelayAddrs
	if head == 0 {
		if data := relay.DataRelayAddrs(n.h, relays); len(data) > 0 {
			relays = data
		}
	}
	startDial := func() {
		dialing = true
		pending++
		go func() {
			began := time.Since(start)
			c, p, err := relay.Dial(dctx, n.h, id, nil, relays)
			p.DialTime += began // from the end of the lookup, as a punch's
			results <- result{kind: "dial", c: c, p: p, err: err, took: time.Since(start)}
		}()
	}
	var lastErr error
	for pending > 0 {
		select {
		case <-timer.C:
			if !dialing {
				startDial()
			}
			continue
		case r := <-results:
			pending--
			attempts = append(attempts, Attempt{Kind: r.kind, Relay: relayIf(r.kind == "punch", ri.ID), Took: r.took, Answered: r.answered, Err: r.err,
				Known: r.tr.Known, AnsweredAddrs: r.tr.Addrs, Spray: r.tr.Spray})
			if r.err == nil {
				if r.kind == "punch" {
					r.p.RTT = relay.MeasureRTT(ctx, n.h, id)
				}
				// A relayed connection leaves the punch running: it
				// ends alone, within punchBudget. The attempts say so,
				// and why the relay was dialed.
				if r.kind == "dial" && pending > 0 {
					attempts = append(attempts, Attempt{Kind: "punch", Relay: ri.ID, Took: time.Since(start),
						Err: n.relayedBecause(head, rec.NAT)})
					close(relayed)
				}
				return r.c, r.p, attempts, nil
			}
			lastErr = r.err
			if !dialing {
				startDial()
			}
		}
	}
	return nil, relay.Path{}, attempts, lastErr
}

// ErrPunchPending is the error of a punch still running when the relayed
// connection came: it goes on, and may still make the connection direct.
var ErrPunchPending = errors.New("rendezvous: punch still running when the relay connected")

// relayedBecause says why the relay was dialed while a punch ran.
func (n *Node) relayedBecause(head time.Duration, peerNAT dht.NATInfo) error {
	if head == 0 {
		return fmt.Errorf("%w: dialed at once, the NATs (this side %s, the peer %s) rarely let a punch through",
			ErrPunchPending, natKind(n.natInfoNow()), natKind(peerNAT))
	}
	return fmt.Errorf("%w: dialed after a head start of %v", ErrPunchPending, head.Round(time.Millisecond))
}

// natInfoNow is what the node knows of its NAT: the survey's verdict,
// with the mapping its DHT servers observed while the survey has none
// (a node that just started, or one that does not publish).
func (n *Node) natInfoNow() dht.NATInfo {
	n.mu.Lock()
	info := n.natInfo
	n.mu.Unlock()
	if info.Mapping == dht.BehaviorUnknown && n.observed != nil {
		switch n.observed.Mapping() {
		case probe.EndpointIndependent:
			info.Mapping = dht.EndpointIndependent
		case probe.AddressAndPortDependent:
			info.Mapping = dht.AddressAndPortDependent
		}
	}
	return info
}

// ownPunchNAT is what the node tells the peers it punches to of its NAT.
func (n *Node) ownPunchNAT() relay.PunchNAT {
	info := n.natInfoNow()
	if info.Reachability == dht.ReachabilityPublic {
		return relay.PunchNAT{Known: true}
	}
	p := punchNAT(info)
	n.mu.Lock()
	p.NoUDP = n.udpBlocked
	n.mu.Unlock()
	return p
}

// punchNAT is what a punch needs of a NAT's behaviour.
func punchNAT(info dht.NATInfo) relay.PunchNAT {
	return relay.PunchNAT{
		Known:     info.Mapping != dht.BehaviorUnknown,
		Dependent: dependentMapping(info),
		Strict:    strictFiltering(info),
	}
}

// dependentMapping tells whether a NAT maps endpoint-dependently (a port
// per destination).
func dependentMapping(x dht.NATInfo) bool {
	return x.Mapping == dht.AddressAndPortDependent || x.Mapping == dht.AddressDependent
}

// strictFiltering tells whether a NAT filters by address and port. Unknown
// filtering counts as strict: most routers do, and a spray costs packets
// where a missed connection costs more.
func strictFiltering(x dht.NATInfo) bool {
	return x.Filtering != dht.EndpointIndependent && x.Filtering != dht.AddressDependent
}

func relayIf(ok bool, id peer.ID) peer.ID {
	if ok {
		return id
	}
	return ""
}

// punchRelay picks the relay to coordinate a punch to rec's peer: one of
// its relays, one the node is connected to first. ok is false when the
// peer has no relay, or has direct addresses and no NAT.
func (n *Node) punchRelay(rec *dht.Record) (peer.AddrInfo, bool) {
	if n.s.noHolePunch || len(rec.RelayAddrs) == 0 || rec.NAT.Reachability == dht.ReachabilityPublic {
		return peer.AddrInfo{}, false
	}
	var best peer.AddrInfo
	found := false
	for _, a := range rec.RelayAddrs {
		ai, ok := relay.RelayAddrInfo(a)
		if !ok || ai.ID == n.h.ID() {
			continue
		}
		if n.h.Network().Connectedness(ai.ID) == network.Connected {
			return ai, true
		}
		if !found {
			best, found = ai, true
		}
	}
	return best, found
}

// punchHead is how long a punch to a peer behind nat runs before its relay
// addresses are dialed too: none when the NATs cannot be punched through,
// else punchHead round trips to the relay (as measured by identify and
// pings, if known).
func (n *Node) punchHead(relayID peer.ID, peerNAT dht.NATInfo) time.Duration {
	own := n.natInfoNow()
	// Behind an endpoint-dependent mapping, a peer is reached by a punch
	// only when this side maps endpoint-independently and filters
	// loosely: too seldom to make the relay wait.
	if dependentMapping(peerNAT) || !punchable(own, peerNAT) {
		return 0
	}
	rtt := n.h.Peerstore().LatencyEWMA(relayID)
	if rtt == 0 {
		return maxPunchHead
	}
	return min(max(punchHead*rtt, minPunchHead), maxPunchHead)
}

// punchable tells whether two NATs may let a hole punch through, as far as
// their records say. Unknown behaviour counts as possible.
func punchable(a, b dht.NATInfo) bool {
	switch {
	case dependentMapping(a) && dependentMapping(b):
		return false
	case dependentMapping(a) && strictFiltering(b), dependentMapping(b) && strictFiltering(a):
		return false
	}
	return true
}

// pathOf describes c. A connection a spray punch made comes to this side
// through a local forwarder: its remote address is the peer's, not the
// forwarder's.
func (n *Node) pathOf(c network.Conn) relay.Path {
	p := relay.PathOf(c)
	if a, ok := n.punchSvc.Forwarded(c.RemoteMultiaddr()); ok {
		p.RemoteAddr = a
	}
	return p
}
