package rendezvous

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2pos/rendezvous/dht"
	"github.com/p2pos/rendezvous/nat/keepalive"
	"github.com/p2pos/rendezvous/relay"
)

// A node that is not public stands by cheaply:
//
//   - Its connections to its relays are TCP where the relay offers TCP (the
//     Reserver connects through connectStanding), kept alive by kernel
//     probes at a fraction of the router's TCP mapping lifetime (keepIdle).
//   - Connections to DHT servers that carry no stream for a minute are
//     closed: an idle QUIC connection alone costs a PING and an ACK every
//     15 s. Connections to other peers (the application's) are left alone.

const (
	defaultTendEvery = 15 * time.Second // local checks only; no traffic
	defaultReapAfter = time.Minute
	// keepFraction of a proven idle lifetime is used as the keep-alive
	// idle time.
	keepFraction = 0.8
	// initialIdle is the keep-alive idle time before anything is known of
	// the router.
	initialIdle = 30 * time.Second
	// unknownGrace is how long a node whose reachability is unknown waits
	// for a verdict before it reserves relays anyway.
	unknownGrace = 20 * time.Second
)

// KeepAliveStatus is how the node keeps its standing connections.
type KeepAliveStatus struct {
	// Idle is the kernel keep-alive idle time of the standing connections.
	Idle time.Duration `json:"idle_ns"`
	// Basis says what Idle was derived from: "initial", "udp" (the NAT's
	// measured UDP lifetime) or "tcp" (proven TCP lifetime).
	Basis string `json:"basis"`
	// TCPLower is the longest idle time a TCP mapping was proven to
	// survive, TCPUpper the shortest it did not (0: none yet).
	TCPLower time.Duration `json:"tcp_lifetime_lower_ns,omitempty"`
	TCPUpper time.Duration `json:"tcp_lifetime_upper_ns,omitempty"`
	// TCPMeasuring is true while the TCP lifetime is being measured.
	TCPMeasuring bool `json:"tcp_measuring,omitempty"`
	// Standing counts relays held over TCP, OverQUIC those held over QUIC
	// (kept alive by QUIC itself every 15 s).
	Standing int `json:"standing_tcp"`
	OverQUIC int `json:"standing_quic,omitempty"`
	// Reaped counts idle connections closed.
	Reaped int `json:"reaped"`
	// Sent counts the keep-alive probes the kernel sent on standing TCP
	// connections, as their TCP state shows (Linux only; QUIC's own
	// keep-alives are not counted).
	Sent uint64 `json:"keepalives_sent"`
}

// keepIdle returns the keep-alive idle time for standing connections and
// what it is based on.
func (n *Node) keepIdle() (time.Duration, string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var udpLower time.Duration
	if n.nat != nil {
		udpLower = n.nat.UDPTimeoutLower
	}
	lower, upper := n.tcpLower, n.tcpUpper
	basis := "tcp"
	if lower < udpLower {
		// Routers keep TCP mappings at least as long as UDP ones.
		lower, basis = udpLower, "udp"
	}
	if lower == 0 {
		return initialIdle, "initial"
	}
	idle := time.Duration(float64(lower) * keepFraction)
	if upper > 0 {
		idle = min(idle, time.Duration(float64(upper)*keepFraction))
	}
	return max(idle, keepalive.MinIdle), basis
}

// connectStanding connects to a relay over TCP before the Reserver reserves
// on it, so that the reservation's standing connection is a TCP one. A relay
// without TCP addresses, or one whose TCP dial fails, is left to libp2p.
func (n *Node) connectStanding(ctx context.Context, id peer.ID) error {
	conns := n.h.Network().ConnsToPeer(id)
	for _, c := range conns {
		if keepalive.IsTCP(c) {
			return nil
		}
	}
	var tcpAddrs, others []ma.Multiaddr
	for _, a := range n.s.scope.Filter(n.h.Peerstore().Addrs(id)) {
		if isTCPAddr(a) {
			tcpAddrs = append(tcpAddrs, a)
		} else {
			others = append(others, a)
		}
	}
	if len(tcpAddrs) == 0 {
		return nil
	}
	// A connection in use stays, and the reservation rides on it.
	for _, c := range conns {
		if busy(c) {
			return nil
		}
	}
	for _, c := range conns {
		_ = c.Close()
	}
	// Dial TCP only: the swarm dials every known address.
	for _, a := range others {
		n.h.Peerstore().SetAddr(id, a, 0)
	}
	err := n.h.Connect(ctx, peer.AddrInfo{ID: id, Addrs: tcpAddrs})
	if err != nil {
		n.mu.Lock()
		n.noTCP[id] = time.Now()
		n.mu.Unlock()
		n.log.Debugw("standing TCP connection", "relay", id, "error", err)
		// Reconnect the way we were connected: the peer may be the
		// only one the node knows.
		n.h.Peerstore().AddAddrs(id, others, peerstore.TempAddrTTL)
		if len(others) > 0 {
			return n.h.Connect(ctx, peer.AddrInfo{ID: id, Addrs: others})
		}
	}
	return nil
}

// noTCPFor is how long a relay whose TCP dial failed stays on QUIC.
const noTCPFor = time.Hour

// moveToTCP closes the idle QUIC connections of a relay held over QUIC when
// it has TCP addresses we did not fail to dial: the Reserver then reserves
// again, over TCP. A relay reached over QUIC because a stream was open
// when it was chosen ends up here.
func (n *Node) moveToTCP(id peer.ID, now time.Time) {
	n.mu.Lock()
	failed, ok := n.noTCP[id]
	if ok && now.Sub(failed) >= noTCPFor {
		delete(n.noTCP, id)
		ok = false
	}
	n.mu.Unlock()
	if ok || !slices.ContainsFunc(n.s.scope.Filter(n.h.Peerstore().Addrs(id)), isTCPAddr) {
		return
	}
	conns := n.h.Network().ConnsToPeer(id)
	if slices.ContainsFunc(conns, busy) {
		return
	}
	n.log.Debugw("moving relay to TCP", "relay", id)
	for _, c := range conns {
		_ = c.Close()
	}
}

func isTCPAddr(a ma.Multiaddr) bool {
	for _, c := range a {
		switch c.Code() {
		case ma.P_TCP:
			return len(a) == 2 // ip/tcp only: not websocket or anything on top
		case ma.P_UDP, ma.P_CIRCUIT:
			return false
		}
	}
	return false
}

// tend keeps the standing connections' keep-alive up to date and closes idle
// connections to DHT servers, while the node is not public.
func (n *Node) tend() {
	defer n.wg.Done()
	t := time.NewTicker(n.s.tendEvery)
	defer t.Stop()
	st := &tendState{idleSince: map[string]time.Time{}, probes: map[string]uint64{}}
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		switch n.Reachability() {
		case ReachabilityPublic:
			clear(st.idleSince)
			clear(st.probes)
			continue
		case ReachabilityUnknown:
			if time.Since(n.started) >= unknownGrace && !n.s.noPublish {
				n.reserver.SetEnabled(true)
			}
		}
		n.tendOnce(st, time.Now())
	}
}

// tendState is what tend carries from one round to the next, by
// connection ID.
type tendState struct {
	idleSince map[string]time.Time // reapable connections: idle since
	probes    map[string]uint64    // standing connections: keep-alive probes counted
}

func (n *Node) tendOnce(st *tendState, now time.Time) {
	idleSince := st.idleSince
	relays := map[peer.ID]bool{}
	standing := map[string]bool{}
	idle, _ := n.keepIdle()
	tcpCount, quicCount := 0, 0
	var sent uint64
	for _, r := range n.reserver.Reservations() {
		relays[r.Relay] = true
		var std network.Conn
		for _, c := range n.h.Network().ConnsToPeer(r.Relay) {
			if keepalive.IsTCP(c) {
				std = c
				break
			}
		}
		if std == nil {
			quicCount++
			n.moveToTCP(r.Relay, now)
			continue
		}
		tcpCount++
		standing[std.ID()] = true
		if n.tcp != nil {
			if count, ok := n.tcp.KeepAlives(std); ok {
				sent += count - min(count, st.probes[std.ID()])
				st.probes[std.ID()] = count
			}
		}
		if len(n.s.tcpHolds) > 0 {
			n.startTCPMeasure(r.Relay)
		}
		if n.tcp == nil {
			continue
		}
		if cur, ok := n.tcp.Idle(std); ok && cur != idle {
			if err := n.tcp.SetIdle(std, idle); err != nil && !errors.Is(err, keepalive.ErrUnknownConn) {
				n.log.Debugw("keep-alive", "relay", r.Relay, "error", err)
			}
		}
	}
	reaped := 0
	seen := map[string]bool{}
	for _, c := range n.h.Network().Conns() {
		id := c.ID()
		seen[id] = true
		if !n.reapable(c, relays, standing) {
			delete(idleSince, id)
			continue
		}
		since, ok := idleSince[id]
		if !ok {
			idleSince[id] = now
			continue
		}
		if now.Sub(since) >= n.s.reapAfter {
			_ = c.Close()
			delete(idleSince, id)
			reaped++
		}
	}
	for id := range idleSince {
		if !seen[id] {
			delete(idleSince, id)
		}
	}
	for id := range st.probes {
		if !standing[id] {
			delete(st.probes, id)
		}
	}
	n.mu.Lock()
	changed := n.keep.Standing != tcpCount || n.keep.OverQUIC != quicCount || reaped > 0 || sent > 0 || n.keep.Idle != idle
	n.keep.Standing, n.keep.OverQUIC, n.keep.Idle = tcpCount, quicCount, idle
	n.keep.Reaped += reaped
	n.keep.Sent += sent
	n.mu.Unlock()
	n.metrics.keepAlivesSent(sent)
	if changed {
		n.metrics.keepAlive(idle.Seconds(), tcpCount+quicCount)
		n.emit(Event{Type: EventKeepAlive, KeepAlive: n.keepAliveStatus()})
	}
}

// reapable reports whether c is an idle connection to infrastructure: a DHT
// server that is not one of our relays, or one of our relays over a
// connection other than the standing one. Busy connections and relayed ones
// stay. (kad-dht protects some routing-table peers from the connection
// manager's trimming; that does not make their connections worth keeping
// alive here.)
func (n *Node) reapable(c network.Conn, relays map[peer.ID]bool, standing map[string]bool) bool {
	if c.Stat().Limited || busy(c) || standing[c.ID()] {
		return false
	}
	p := c.RemotePeer()
	if !relays[p] && n.h.ConnManager().IsProtected(p, relay.ProtectTag) {
		return false // a reservation is being made
	}
	if relays[p] {
		// The relay keeps a second connection only if the standing one
		// is there.
		return hasStanding(n.h.Network().ConnsToPeer(p), standing)
	}
	ok, _ := n.h.Peerstore().SupportsProtocols(p, dht.KadProtocol, relay.HopProtocol)
	return len(ok) > 0
}

// busy reports whether c carries a stream other than kad-dht's: kad-dht
// keeps a stream per peer open for its next request, and opens a new one
// when the connection is gone.
func busy(c network.Conn) bool {
	for _, s := range c.GetStreams() {
		if s.Protocol() != dht.KadProtocol {
			return true
		}
	}
	return false
}

func hasStanding(conns []network.Conn, standing map[string]bool) bool {
	for _, c := range conns {
		if standing[c.ID()] {
			return true
		}
	}
	return false
}

// keepAliveStatus returns the keep-alive part of Status; nil on a public
// node.
func (n *Node) keepAliveStatus() *KeepAliveStatus {
	if n.Reachability() == ReachabilityPublic {
		return nil
	}
	idle, basis := n.keepIdle()
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.keep
	st.Idle, st.Basis = idle, basis
	st.TCPLower, st.TCPUpper = n.tcpLower, n.tcpUpper
	return &st
}
