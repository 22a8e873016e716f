package dht

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	mh "github.com/multiformats/go-multihash"
)

// TopicNamespace is prepended to topics before hashing, so that our topic
// keys never collide with another application's provider records.
const TopicNamespace = "/p2pos/topic/"

// ErrEmptyTopic is returned for an empty topic.
var ErrEmptyTopic = errors.New("dht: empty topic")

// TopicKey is the DHT key of topic: the SHA2-256 multihash of the namespaced
// topic.
func TopicKey(topic string) (mh.Multihash, error) {
	if topic == "" {
		return nil, ErrEmptyTopic
	}
	return mh.Sum([]byte(TopicNamespace+topic), mh.SHA2_256, -1)
}

// Advertise announces on the servers closest to topic's key that this node
// takes part in topic, and returns once they confirmed it (Holders). The announcement lasts as long as the servers keep
// provider records (kad-dht: 48 h); call Advertise again before that.
func (d *DHT) Advertise(ctx context.Context, topic string) (PublishResult, error) {
	key, err := TopicKey(topic)
	if err != nil {
		return PublishResult{}, err
	}
	var ops counters
	ctx = withStats(ctx, &ops)
	lr, err := d.lookup(ctx, string(key), func(ctx context.Context, p peer.ID) ([]*peer.AddrInfo, bool, error) {
		closer, err := d.pm.GetClosestPeers(ctx, p, peer.ID(key))
		return closer, false, err
	})
	if err != nil {
		return PublishResult{Stats: ops.load()}, fmt.Errorf("dht: advertise %q: %w", topic, err)
	}
	self := peer.AddrInfo{ID: d.h.ID(), Addrs: d.s.scope.Filter(d.h.Addrs())}
	if len(self.Addrs) == 0 {
		// Servers refuse provider records without an address, then drop the
		// addresses they cannot use; ours are found through our record. A
		// bare relay placeholder says nothing about our network.
		self.Addrs = []ma.Multiaddr{ma.StringCast("/p2p-circuit")}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	res := PublishResult{Fresh: true}
	for _, p := range lr.closest {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, d.s.requestTimeout)
			defer cancel()
			if err := d.pm.PutProviderAddrs(rctx, p, key, self); err != nil {
				return
			}
			// ADD_PROVIDER has no answer. Asking the same server on the
			// same stream, which it serves in order, confirms it stored
			// us, so that a search right after Advertise finds us.
			provs, _, err := d.pm.GetProviders(rctx, p, key)
			if err != nil || !slices.ContainsFunc(provs, func(ai *peer.AddrInfo) bool { return ai != nil && ai.ID == self.ID }) {
				return
			}
			mu.Lock()
			res.Holders = append(res.Holders, p)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.Stats = ops.load()
	if len(res.Holders) == 0 {
		return res, fmt.Errorf("dht: advertise %q: %w", topic, ErrNoHolders)
	}
	return res, nil
}

// FindPeers returns up to limit peers that advertised topic, each with its
// verified address record (peers whose record cannot be found or verified
// are left out). limit <= 0 means 20.
func (d *DHT) FindPeers(ctx context.Context, topic string, limit int) ([]*Record, error) {
	key, err := TopicKey(topic)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 20
	}
	var mu sync.Mutex
	found := map[peer.ID]bool{}
	var order []peer.ID
	_, err = d.lookup(ctx, string(key), func(ctx context.Context, p peer.ID) ([]*peer.AddrInfo, bool, error) {
		provs, closer, err := d.pm.GetProviders(ctx, p, key)
		if err != nil {
			return nil, false, err
		}
		mu.Lock()
		defer mu.Unlock()
		for _, pi := range provs {
			if pi == nil || pi.ID == d.h.ID() || found[pi.ID] {
				continue
			}
			found[pi.ID] = true
			order = append(order, pi.ID)
		}
		return closer, len(order) >= limit, nil
	})
	mu.Lock()
	ids := order[:min(limit, len(order))]
	mu.Unlock()
	if err != nil && len(ids) == 0 {
		return nil, fmt.Errorf("dht: find peers %q: %w", topic, err)
	}
	recs := make([]*Record, len(ids))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			lr, err := d.Lookup(ctx, id)
			if err != nil {
				d.log.Debugw("topic peer without record", "topic", topic, "peer", id, "error", err)
				return
			}
			recs[i] = lr.Record
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dht: find peers %q: %w", topic, err)
	}
	out := recs[:0]
	for _, r := range recs {
		if r != nil {
			out = append(out, r)
		}
	}
	return out, nil
}
