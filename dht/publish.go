package dht

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// ErrNoHolders is returned when no server accepted a published record.
var ErrNoHolders = errors.New("dht: no server stored the record")

// PublishResult says where a record went and what it cost.
type PublishResult struct {
	// Holders are the servers that accepted the record.
	Holders []peer.ID
	// Fresh is true when the closest servers were found by a lookup, false
	// when the record went straight to the known holders.
	Fresh bool
	// Stats counts the requests of the publish, lookup included.
	Stats Stats
	// Keepers are the peers that took the record to keep it (see
	// KeepProtocol); Stored is the most servers one of them stored it on.
	// Holders is empty then.
	Keepers []peer.ID
	Stored  int
}

// PublishRecord signs r with the node's key and stores it on the closest
// servers. If holders (the servers that held the previous version) are given
// and one of them confirms they are still the closest, the record goes
// straight to them; otherwise a lookup finds the closest servers first.
func (d *DHT) PublishRecord(ctx context.Context, r *Record, holders []peer.ID) (PublishResult, error) {
	if d.isClosed() {
		return PublishResult{}, ErrClosed
	}
	data, err := r.Seal(d.key)
	if err != nil {
		return PublishResult{}, err
	}
	key := RecordKey(d.h.ID())
	if _, err := d.validator.Verify(key, data); err != nil {
		return PublishResult{}, fmt.Errorf("dht: own record invalid: %w", err)
	}
	d.rememberHolderAddrs(holders)
	res, err := d.storeSealed(ctx, key, data, holders)
	if err != nil {
		return res, err
	}
	d.saveHolderAddrs(res.Holders)
	d.cache.put(r)
	return res, nil
}

// storeSealed stores a sealed record on the closest servers to key: straight
// on the holders if they are still the closest, else on those a lookup
// finds.
func (d *DHT) storeSealed(ctx context.Context, key string, data []byte, holders []peer.ID) (PublishResult, error) {
	var ops counters
	ctx = withStats(ctx, &ops)
	res := PublishResult{}
	targets := d.stillClosest(ctx, key, holders)
	for {
		if len(targets) == 0 {
			lr, err := d.lookup(ctx, key, func(ctx context.Context, p peer.ID) ([]*peer.AddrInfo, bool, error) {
				closer, err := d.pm.GetClosestPeers(ctx, p, peer.ID(key))
				return closer, false, err
			})
			if err != nil {
				res.Stats = ops.load()
				return res, fmt.Errorf("dht: publish: %w", err)
			}
			targets = lr.closest
			res.Fresh = true
		}
		res.Holders = d.putTo(ctx, key, data, targets)
		if res.Fresh || 2*len(res.Holders) >= len(targets) {
			break
		}
		// Many known holders are gone: find the closest servers afresh.
		targets = nil
	}
	res.Stats = ops.load()
	if len(res.Holders) == 0 {
		return res, ErrNoHolders
	}
	return res, nil
}

// The addresses of the servers holding our record are kept, so that a
// republish can reach them after the peerstore forgot them.
func (d *DHT) saveHolderAddrs(holders []peer.ID) {
	m := make(map[peer.ID][]ma.Multiaddr, len(holders))
	for _, p := range holders {
		var addrs []ma.Multiaddr
		for _, c := range d.h.Network().ConnsToPeer(p) {
			if c.Stat().Direction == network.DirOutbound && !c.Stat().Limited {
				addrs = append(addrs, c.RemoteMultiaddr())
			}
		}
		addrs = append(addrs, d.s.scope.Filter(d.h.Peerstore().Addrs(p))...)
		m[p] = addrs
	}
	d.mu.Lock()
	d.holderAddrs = m
	d.mu.Unlock()
}

func (d *DHT) rememberHolderAddrs(holders []peer.ID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range holders {
		if addrs := d.holderAddrs[p]; len(addrs) > 0 {
			d.h.Peerstore().AddAddrs(p, addrs, peerstoreTempTTL)
		}
	}
}

// stillClosest asks two holders (connected ones first, the closest to key
// first) for the servers they know closest to key. If the first to answer
// names none closer than the farthest holder that is not a holder already,
// the holders are still the closest and are returned.
func (d *DHT) stillClosest(ctx context.Context, key string, holders []peer.ID) []peer.ID {
	if len(holders) == 0 {
		return nil
	}
	target := kb.ConvertKey(key)
	sorted := kb.SortClosestPeers(append([]peer.ID(nil), holders...), target)
	farthest := kb.Xor(target, kb.ConvertPeerID(sorted[len(sorted)-1]))
	isHolder := make(map[peer.ID]bool, len(holders))
	for _, h := range holders {
		isHolder[h] = true
	}
	ask := make([]peer.ID, 0, len(sorted))
	for _, p := range sorted {
		if d.h.Network().Connectedness(p) == network.Connected {
			ask = append(ask, p)
		}
	}
	for _, p := range sorted {
		if d.h.Network().Connectedness(p) != network.Connected {
			ask = append(ask, p)
		}
	}
	ask = ask[:min(2, len(ask))]

	ctx, cancel := context.WithTimeout(ctx, d.s.requestTimeout)
	defer cancel()
	type reply struct {
		closer []*peer.AddrInfo
		err    error
	}
	replies := make(chan reply, len(ask))
	for _, p := range ask {
		go func() {
			closer, err := d.pm.GetClosestPeers(ctx, p, peer.ID(key))
			replies <- reply{closer, err}
		}()
	}
	for range ask {
		r := <-replies
		if r.err != nil {
			continue
		}
		for _, ai := range r.closer {
			if ai == nil || isHolder[ai.ID] || ai.ID == d.h.ID() {
				continue
			}
			if len(d.s.scope.Filter(ai.Addrs)) == 0 {
				continue
			}
			// Another server closer than our farthest holder, or any
			// other server while we hold fewer than the replication
			// factor: the holders are not the closest set any more.
			if len(holders) < d.s.replication || bytes.Compare(kb.Xor(target, kb.ConvertPeerID(ai.ID)), farthest) < 0 {
				return nil
			}
		}
		return sorted
	}
	return nil
}

// putGrace is how long a publish waits for the remaining servers once half
// of them stored the record: a server that went away must not hold the
// publish up for a whole request timeout.
const putGrace = 500 * time.Millisecond

// putTo stores the record on the targets in parallel and returns those that
// accepted it. It returns when all answered, or putGrace after half of them
// accepted; requests still running then are cancelled.
func (d *DHT) putTo(ctx context.Context, key string, data []byte, targets []peer.ID) []peer.ID {
	rec := record.MakePutRecord(key, data)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		p   peer.ID
		err error
	}
	results := make(chan result, len(targets))
	for _, p := range targets {
		go func() {
			rctx, rcancel := context.WithTimeout(ctx, d.s.requestTimeout)
			defer rcancel()
			results <- result{p, d.pm.PutValue(rctx, p, rec)}
		}()
	}
	var ok []peer.ID
	var grace <-chan time.Time
	pending := len(targets)
	for pending > 0 {
		select {
		case r := <-results:
			pending--
			if r.err != nil {
				d.log.Debugw("put failed", "peer", r.p, "error", r.err)
				continue
			}
			ok = append(ok, r.p)
			if grace == nil && 2*len(ok) >= len(targets) {
				t := time.NewTimer(putGrace)
				defer t.Stop()
				grace = t.C
			}
		case <-grace:
			cancel()
			for ; pending > 0; pending-- {
				if r := <-results; r.err == nil {
					ok = append(ok, r.p)
				}
			}
		}
	}
	return ok
}
