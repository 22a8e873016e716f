package dht

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// LookupResult is a verified record and what finding it cost.
type LookupResult struct {
	Record *Record
	// Cached is true when the record came from the local cache.
	Cached bool
	// Stats counts the requests of this lookup (zero when cached).
	Stats Stats
	// Duration is how long the lookup took.
	Duration time.Duration
}

// LookupOption changes one lookup.
type LookupOption func(*lookupSettings)

type lookupSettings struct{ noCache bool }

// NoCache skips the cache: the record is fetched from the DHT.
func NoCache() LookupOption { return func(s *lookupSettings) { s.noCache = true } }

// Lookup returns id's verified record: from the cache while the cached copy is
// valid, from the DHT otherwise. It returns an error wrapping ErrNotFound when
// the DHT has no valid record for id, and the context's error when ctx ends
// first: the two are distinct.
func (d *DHT) Lookup(ctx context.Context, id peer.ID, opts ...LookupOption) (LookupResult, error) {
	var ls lookupSettings
	for _, o := range opts {
		o(&ls)
	}
	start := d.s.now()
	if !ls.noCache {
		if r := d.cache.get(id); r != nil {
			return LookupResult{Record: r, Cached: true}, nil
		}
	}
	if err := id.Validate(); err != nil {
		return LookupResult{}, fmt.Errorf("dht: lookup: %w", err)
	}
	key := RecordKey(id)
	var ops counters
	ctx = withStats(ctx, &ops)

	var mu sync.Mutex
	var best *Record
	var rejected error
	_, err := d.lookup(ctx, key, func(ctx context.Context, p peer.ID) ([]*peer.AddrInfo, bool, error) {
		connected := d.h.Network().Connectedness(p) == network.Connected
		asked := time.Now()
		rec, closer, err := d.pm.GetValue(ctx, p, key)
		if err != nil {
			return nil, false, err
		}
		if connected {
			// One request over a connection there was: about a round trip,
			// which Connect uses to pace a punch through this peer.
			d.h.Peerstore().RecordLatency(p, time.Since(asked))
		}
		if rec == nil {
			return closer, false, nil
		}
		r, verr := d.validator.Verify(key, rec.GetValue())
		mu.Lock()
		defer mu.Unlock()
		if verr != nil {
			rejected = verr
			d.log.Debugw("rejected record", "key", key, "from", p, "error", verr)
			return closer, false, nil
		}
		if best == nil || r.Seq > best.Seq {
			best = r
		}
		return closer, true, nil
	})
	res := LookupResult{Stats: ops.load(), Duration: d.s.now().Sub(start)}
	mu.Lock()
	defer mu.Unlock()
	if best != nil {
		d.cache.put(best)
		res.Record = best
		return res, nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return res, fmt.Errorf("dht: lookup %s: %w", id, ctx.Err())
		}
		return res, fmt.Errorf("dht: lookup %s: %w", id, err)
	}
	if rejected != nil {
		return res, fmt.Errorf("dht: lookup %s: %w (a record was found but rejected: %w)", id, ErrNotFound, rejected)
	}
	return res, fmt.Errorf("dht: lookup %s: %w", id, ErrNotFound)
}

// Remember adds a verified record to the cache (for records learned outside
// a lookup).
func (d *DHT) Remember(r *Record) { d.cache.put(r) }

// Forget drops id's record from the cache, for example after its addresses
// failed.
func (d *DHT) Forget(id peer.ID) { d.cache.drop(id) }

// recordCache holds verified records until they expire.
type recordCache struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[peer.ID]*Record // guarded by mu
}

const maxCached = 4096

func newRecordCache(now func() time.Time) *recordCache {
	return &recordCache{now: now, m: map[peer.ID]*Record{}}
}

func (c *recordCache) get(id peer.ID) *Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.m[id]
	if r != nil && !c.now().Before(r.Expires) {
		delete(c.m, id)
		return nil
	}
	return r
}

func (c *recordCache) put(r *Record) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.m[r.PeerID]; old != nil && old.Seq > r.Seq {
		return
	}
	if len(c.m) >= maxCached {
		now := c.now()
		for id, old := range c.m {
			if !now.Before(old.Expires) {
				delete(c.m, id)
			}
		}
		if len(c.m) >= maxCached {
			for id := range c.m { // evict an arbitrary entry
				delete(c.m, id)
				break
			}
		}
	}
	c.m[r.PeerID] = r
}

func (c *recordCache) drop(id peer.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, id)
}
