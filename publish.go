package rendezvous

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2pos/rendezvous/dht"
	"github.com/p2pos/rendezvous/relay"
)

// What the node publishes about itself: its record's content (addresses,
// relays, NAT, data relay offer), the addresses a punch announces, and
// the topics it advertises.

func (n *Node) triggerPublish() {
	if p := n.publisher.Load(); p != nil {
		p.Trigger()
	}
}

// relayCandidates are the DHT servers we know: public peers.
func (n *Node) relayCandidates() []peer.ID {
	seen := map[peer.ID]bool{}
	out := n.d.RoutingTablePeers()
	for _, p := range out {
		seen[p] = true
	}
	for _, p := range n.h.Network().Peers() {
		if seen[p] {
			continue
		}
		if ok, _ := n.h.Peerstore().SupportsProtocols(p, dht.KadProtocol); len(ok) > 0 {
			out = append(out, p)
		}
	}
	return out
}

// relayIDs are the relays we hold reservations on: the keepers of our
// record.
func (n *Node) relayIDs() []peer.ID {
	var out []peer.ID
	for _, r := range n.reserver.Reservations() {
		out = append(out, r.Relay)
	}
	return out
}

func (n *Node) relaysChanged() {
	n.emit(Event{Type: EventRelays, Relays: n.relayStatus()})
	n.triggerPublish()
}

// recordContent is what the node publishes about itself.
func (n *Node) recordContent() dht.Content {
	r := n.Reachability()
	// The survey's verdict, or, where it has none (UDP blocked, or not
	// over yet), the mapping the DHT servers observed.
	info := n.natInfoNow()
	info.Reachability = r
	c := dht.Content{NAT: info}
	switch {
	case r != ReachabilityPrivate:
		c.Addrs = n.directAddrs()
		if r == ReachabilityPublic { // the relay service runs
			c.DataRelay = n.s.dataRelay
		}
	case info.Mapping != dht.AddressAndPortDependent && info.Mapping != dht.AddressDependent:
		// Behind a NAT that maps endpoint-independently, the address
		// peers observe is the one a hole punch goes to: a peer that
		// looks the record up starts dialing it while it asks a relay to
		// coordinate, which opens its own NAT before the other side's
		// first packet arrives.
		c.Addrs = n.observedAddrs(info.Mapping == dht.EndpointIndependent)
	}
	if r != ReachabilityPublic {
		c.RelayAddrs = n.reserver.Addrs()
	}
	// Records hold at most dht.MaxRecordAddrs addresses; relays come first
	// for private nodes, they are the only way in.
	if len(c.Addrs)+len(c.RelayAddrs) > dht.MaxRecordAddrs {
		c.Addrs = c.Addrs[:max(0, dht.MaxRecordAddrs-len(c.RelayAddrs))]
	}
	return c
}

// punchAddrs are the addresses a hole punch announces: those peers
// observe (behind an endpoint-independent NAT, one per listen socket), the
// node's own (a public node's, or a LAN's for a peer behind the same
// router), and its port mappings.
func (n *Node) punchAddrs() []ma.Multiaddr {
	var out []ma.Multiaddr
	add := func(a ma.Multiaddr) {
		for _, x := range out {
			if x.Equal(a) {
				return
			}
		}
		out = append(out, a)
	}
	for _, o := range n.observed.Addrs(1) {
		add(o.Addr)
	}
	for _, a := range n.mappedAddrs() {
		add(a)
	}
	for _, a := range n.h.Addrs() {
		if !relay.IsRelayed(a) {
			add(a)
		}
	}
	return out
}

// maxObservedInRecord bounds the observed addresses a record carries.
const maxObservedInRecord = 4

// observedAddrs are the in-scope addresses peers observe the node at, most
// observed first. Unless the NAT survey found the mapping
// endpoint-independent (ei), an address counts only once two peers at
// different IP addresses saw it: that alone shows the NAT kept the port for
// both destinations.
func (n *Node) observedAddrs(ei bool) []ma.Multiaddr {
	least := 2
	if ei {
		least = 1
	}
	var out []ma.Multiaddr
	for _, o := range n.observed.Addrs(least) {
		if n.s.scope.IsPublic(o.Addr) && len(out) < maxObservedInRecord {
			out = append(out, o.Addr)
		}
	}
	return out
}

// directAddrs are the node's in-scope, non-relay addresses.
func (n *Node) directAddrs() []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, a := range n.s.scope.Filter(n.h.Addrs()) {
		if !relay.IsRelayed(a) {
			out = append(out, a)
		}
	}
	return out
}

func (n *Node) published(ev dht.PublishEvent) {
	ps := &PublishStatus{Time: time.Now(), Holders: max(len(ev.Result.Holders), ev.Result.Stored),
		Keepers: len(ev.Result.Keepers), Fresh: ev.Result.Fresh,
		RPCs: ev.Result.Stats.RPCs, Bytes: ev.Result.Stats.Bytes()}
	if ev.Record != nil {
		ps.Seq = ev.Record.Seq
		ps.Expires = ev.Record.Expires
		ps.Addrs = addrStrings(ev.Record.Addrs)
		ps.RelayAddrs = addrStrings(ev.Record.RelayAddrs)
	}
	if ev.Err != nil {
		ps.Error = ev.Err.Error()
	}
	n.mu.Lock()
	n.lastPublish = ps
	n.mu.Unlock()
	evCopy := *ps // subscribers get their own copy
	n.emit(Event{Type: EventPublished, Publish: &evCopy})
}

// readvertise keeps topic advertisements alive.
func (n *Node) readvertise() {
	defer n.wg.Done()
	t := time.NewTicker(readvertiseEvery)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		n.mu.Lock()
		topics := make([]string, 0, len(n.advertised))
		for t := range n.advertised {
			topics = append(topics, t)
		}
		n.mu.Unlock()
		for _, topic := range topics {
			ctx, cancel := context.WithTimeout(n.ctx, time.Minute)
			if _, err := n.d.Advertise(ctx, topic); err != nil {
				n.log.Debugw("readvertise", "topic", topic, "error", err)
			}
			cancel()
		}
	}
}

const readvertiseEvery = 12 * time.Hour
