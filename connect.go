package rendezvous

import (
	"context"
	"errors"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2pos/rendezvous/dht"
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
		return &Conn{Conn: c, Path: relay.PathOf(c)}, nil
	}
	start := time.Now()
	res, err := n.d.Lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	lookupTime := time.Since(start)
	c, p, err := relay.Dial(ctx, n.h, id, res.Record.Addrs, res.Record.RelayAddrs)
	if err != nil && res.Cached && ctx.Err() == nil {
		n.d.Forget(id)
		start = time.Now()
		if res, err = n.d.Lookup(ctx, id, dht.NoCache()); err != nil {
			return nil, err
		}
		lookupTime = time.Since(start)
		c, p, err = relay.Dial(ctx, n.h, id, res.Record.Addrs, res.Record.RelayAddrs)
	}
	if err != nil {
		return nil, err
	}
	if res.Cached {
		lookupTime = 0
	}
	return &Conn{Conn: c, Path: p, Record: res.Record, LookupTime: lookupTime}, nil
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
	p := relay.PathOf(c)
	if before != nil && before != c && relay.PathOf(before).Kind == relay.PathRelayed {
		p.Kind = relay.PathHolePunched
	}
	return &Conn{Conn: c, Path: p}, nil
}
