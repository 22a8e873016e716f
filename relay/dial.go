package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	ma "github.com/multiformats/go-multiaddr"
)

// PathKind says how a connection reaches its peer.
type PathKind int

const (
	// PathDirect is a direct connection.
	PathDirect PathKind = iota + 1
	// PathRelayed goes through a circuit relay.
	PathRelayed
	// PathHolePunched is a direct connection that replaced a relayed one:
	// both sides dialed each other at once through their NATs.
	PathHolePunched
)

func (k PathKind) String() string {
	switch k {
	case PathDirect:
		return "direct"
	case PathRelayed:
		return "relayed"
	case PathHolePunched:
		return "hole-punched"
	}
	return "unknown"
}

// MarshalText implements encoding.TextMarshaler.
func (k PathKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// Path describes a connection.
type Path struct {
	Kind PathKind
	// Relay is the relay a relayed connection goes through.
	Relay peer.ID
	// RemoteAddr is the address the connection goes to.
	RemoteAddr ma.Multiaddr
	// RTT is one round trip measured on the connection (0 if it failed).
	RTT time.Duration
	// DialTime is how long the connection took to establish.
	DialTime time.Duration
}

// PathOf describes an established connection (without RTT or DialTime).
func PathOf(c network.Conn) Path {
	p := Path{Kind: PathDirect, RemoteAddr: c.RemoteMultiaddr()}
	if c.Stat().Limited || IsRelayed(c.RemoteMultiaddr()) {
		p.Kind = PathRelayed
		p.Relay = RelayOf(c.RemoteMultiaddr())
	}
	return p
}

// ErrNoAddrs is returned by Dial when the peer has no address to dial.
var ErrNoAddrs = errors.New("relay: peer has no addresses")

// DialError says why no connection could be made.
type DialError struct {
	Peer    peer.ID
	Direct  int // direct addresses tried
	Relayed int // relay addresses tried
	Err     error
}

func (e *DialError) Error() string {
	return fmt.Sprintf("relay: cannot connect to %s (%d direct, %d relay addresses): %v", e.Peer, e.Direct, e.Relayed, e.Err)
}

func (e *DialError) Unwrap() error { return e.Err }

// Dial connects to id over its direct and relay addresses at once (the host
// should use a dial ranker that does not hold relay addresses back, like
// swarm.NoDelayDialRanker) and returns the best connection with its path: a
// direct one when there is one.
func Dial(ctx context.Context, h host.Host, id peer.ID, direct, relayed []ma.Multiaddr) (network.Conn, Path, error) {
	start := time.Now()
	if len(direct)+len(relayed) == 0 && h.Network().Connectedness(id) != network.Connected {
		return nil, Path{}, &DialError{Peer: id, Err: ErrNoAddrs}
	}
	addrs := append(append([]ma.Multiaddr{}, direct...), relayed...)
	h.Peerstore().AddAddrs(id, addrs, peerstore.TempAddrTTL)
	if err := h.Connect(network.WithAllowLimitedConn(ctx, "rendezvous"), peer.AddrInfo{ID: id, Addrs: addrs}); err != nil {
		return nil, Path{}, &DialError{Peer: id, Direct: len(direct), Relayed: len(relayed), Err: err}
	}
	c := BestConn(h, id)
	if c == nil {
		return nil, Path{}, &DialError{Peer: id, Direct: len(direct), Relayed: len(relayed), Err: network.ErrNoConn}
	}
	p := PathOf(c)
	p.DialTime = time.Since(start)
	p.RTT = MeasureRTT(ctx, h, id)
	return c, p, nil
}

// WaitDirect waits until h has a direct connection to id and returns it.
// It returns ctx's error if none came.
func WaitDirect(ctx context.Context, h host.Host, id peer.ID) (network.Conn, error) {
	sub, err := h.EventBus().Subscribe(new(event.EvtPeerConnectednessChanged))
	if err != nil {
		return nil, err
	}
	defer sub.Close()
	for {
		if c := BestConn(h, id); c != nil && !c.Stat().Limited && !IsRelayed(c.RemoteMultiaddr()) {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-sub.Out():
		}
	}
}

// BestConn returns the connection to id that streams will use: a direct one
// if there is one, else a relayed one; nil if there is none.
func BestConn(h host.Host, id peer.ID) network.Conn {
	var best network.Conn
	for _, c := range h.Network().ConnsToPeer(id) {
		if best == nil || (best.Stat().Limited && !c.Stat().Limited) {
			best = c
		}
	}
	return best
}

// MeasureRTT pings id once over the connection streams would use, within
// 5 s, and returns the round trip; 0 if the ping failed.
func MeasureRTT(ctx context.Context, h host.Host, id peer.ID) time.Duration {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	select {
	case r := <-ping.Ping(ctx, h, id):
		if r.Error == nil {
			return r.RTT
		}
	case <-ctx.Done():
	}
	return 0
}
