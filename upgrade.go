package rendezvous

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2pos/rendezvous/relay"
)

// A connection that went through a relay keeps trying to become direct:
// the side that dialed it asks the relay it goes through to coordinate a
// punch, again and again with a growing pause, at once after a network
// change, and at once when the punch Connect left running ends in a missed
// spray (one the NATs allow, missed by chance). It stops when a direct
// connection comes, or the relayed one goes.

// Bounds of the upgrades.
const (
	// firstUpgrade comes after the punch Connect started (punchBudget)
	// and DCUtR's three rounds have had their chance.
	firstUpgrade = 20 * time.Second
	maxUpgrade   = 10 * time.Minute
	// maxUpgrades bounds the peers whose connections are upgraded at
	// once.
	maxUpgrades = 64
)

// PathEvent is the Event of type EventPath: a connection to Peer changed
// its path.
type PathEvent struct {
	Peer peer.ID    `json:"peer"`
	Path relay.Path `json:"path"`
	// Attempts is how many punches the upgrade took.
	Attempts int `json:"attempts"`
}

// upgrading is a relayed connection being made direct.
type upgrading struct {
	kick     chan struct{}
	attempts int // punches so far; guarded by Node.mu
}

// watchPaths follows peers' connectedness: an upgrade starts for every
// peer the node reaches only through a relay it dialed, and an EventPath
// says when such a peer became directly connected, whoever made it so
// (the node's punch, the peer's DCUtR, or a dial).
func (n *Node) watchPaths(ev network.Connectedness, p peer.ID) {
	switch ev {
	case network.Connected:
		n.mu.Lock()
		u, ok := n.upgrades[p]
		attempts := 0
		if ok {
			attempts = u.attempts
			delete(n.upgrades, p) // the upgrade loop sees it and ends
		}
		n.mu.Unlock()
		if c := relay.BestConn(n.h, p); ok && c != nil && !c.Stat().Limited {
			path := n.pathOf(c)
			path.Kind = relay.PathHolePunched
			n.metrics.upgraded()
			n.emit(Event{Type: EventPath, PathChange: &PathEvent{Peer: p, Path: path, Attempts: attempts}})
		}
		return
	case network.Limited:
	default: // gone
		n.mu.Lock()
		delete(n.upgrades, p)
		n.mu.Unlock()
		return
	}
	if n.s.noHolePunch {
		return
	}
	c := relay.BestConn(n.h, p)
	if c == nil || !c.Stat().Limited || c.Stat().Direction != network.DirOutbound {
		return
	}
	n.mu.Lock()
	if _, ok := n.upgrades[p]; ok || len(n.upgrades) >= maxUpgrades {
		n.mu.Unlock()
		return
	}
	u := &upgrading{kick: make(chan struct{}, 1)}
	n.upgrades[p] = u
	n.mu.Unlock()
	if !n.goOwned(func() { n.upgrade(p, u) }) {
		n.mu.Lock()
		delete(n.upgrades, p)
		n.mu.Unlock()
	}
}

// kickUpgrades makes every upgrade try again now: the network changed.
func (n *Node) kickUpgrades() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, u := range n.upgrades {
		u.wake()
	}
}

// kickUpgrade makes p's upgrade, if there is one, try again now.
func (n *Node) kickUpgrade(p peer.ID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if u, ok := n.upgrades[p]; ok {
		u.wake()
	}
}

// wake makes the upgrade punch again now, unless it is already due to.
func (u *upgrading) wake() {
	select {
	case u.kick <- struct{}{}:
	default:
	}
}

// upgrade punches to p, through the relay its connection goes through,
// until the connection is direct or gone.
// The Connected event of the direct connection ends the upgrade in
// watchPaths, which reports it; upgrade itself only forgets a peer that
// is gone.
func (n *Node) upgrade(p peer.ID, u *upgrading) {
	forget := func() {
		n.mu.Lock()
		if n.upgrades[p] == u {
			delete(n.upgrades, p)
		}
		n.mu.Unlock()
	}
	first := n.s.upgradeFirst
	wait := first
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-n.ctx.Done():
			forget()
			return
		case <-u.kick:
			wait = first
		case <-timer.C:
			wait = min(2*wait, maxUpgrade)
		}
		n.mu.Lock()
		current := n.upgrades[p] == u
		if current {
			u.attempts++
		}
		n.mu.Unlock()
		c := relay.BestConn(n.h, p)
		switch {
		case !current:
			return // reported direct
		case c == nil:
			forget()
			return
		case !c.Stat().Limited:
			return // direct: its Connected event is on its way
		}
		ctx, cancel := context.WithTimeout(n.ctx, punchBudget)
		var peerNAT relay.PunchNAT
		if res, err := n.d.Lookup(ctx, p); err == nil { // cached: Connect looked it up
			peerNAT = punchNAT(res.Record.NAT)
		}
		_, _, err := n.punchSvc.PunchTraced(ctx, relay.RelayOf(c.RemoteMultiaddr()), p, n.knownDirect(p), peerNAT)
		cancel()
		if err == nil {
			return // the connectedness event reports it
		}
		n.log.Debugw("upgrade to direct failed", "peer", p, "error", err, "next", wait)
		timer.Reset(wait)
	}
}

// knownDirect returns the direct addresses the node knows for p.
func (n *Node) knownDirect(p peer.ID) []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, a := range n.h.Peerstore().Addrs(p) {
		if !relay.IsRelayed(a) {
			out = append(out, a)
		}
	}
	return out
}
