package dht

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// A lookup walks the DHT toward a key, keeping at most alpha requests in
// flight, always to the closest peers not yet asked. ask is called once per
// peer; it returns the closer peers the peer named and whether the lookup is
// done (a value was found). The walk also ends when the replication closest
// peers heard of have all answered or failed.

// settleTime is how long a lookup that found a record waits for the
// requests already in flight, which may bring a newer one.
const settleTime = 100 * time.Millisecond

// ErrNoResponse is returned when no peer asked during a lookup answered.
var ErrNoResponse = errors.New("dht: no peer answered")

type peerState uint8

const (
	stateHeard peerState = iota
	stateWaiting
	stateQueried
	stateFailed
)

type candidate struct {
	id    peer.ID
	dist  []byte
	state peerState
}

type lookupResult struct {
	// closest are the peers that answered, closest first, at most replication.
	closest []peer.ID
	// done is true when ask said so.
	done bool
}

type askFunc func(ctx context.Context, p peer.ID) (closer []*peer.AddrInfo, done bool, err error)

type answer struct {
	p      peer.ID
	closer []*peer.AddrInfo
	done   bool
	err    error
}

func (d *DHT) lookup(ctx context.Context, key string, ask askFunc) (lookupResult, error) {
	if d.isClosed() {
		return lookupResult{}, ErrClosed
	}
	target := kb.ConvertKey(key)
	seeds := d.kad.RoutingTable().NearestPeers(target, d.s.replication)
	if len(seeds) == 0 {
		for _, p := range d.h.Network().Peers() {
			if ok, _ := d.h.Peerstore().SupportsProtocols(p, KadProtocol); len(ok) > 0 && inScopePeer(d.h, d.s.scope, p) {
				seeds = append(seeds, p)
			}
		}
	}
	if len(seeds) == 0 {
		return lookupResult{}, ErrNoPeers
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	self := d.h.ID()
	known := map[peer.ID]*candidate{}
	var cands []*candidate
	addCand := func(p peer.ID) {
		if p == self || p == "" {
			return
		}
		if _, ok := known[p]; ok {
			return
		}
		c := &candidate{id: p, dist: kb.Xor(target, kb.ConvertPeerID(p))}
		known[p] = c
		cands = append(cands, c)
	}
	for _, p := range seeds {
		addCand(p)
	}

	answers := make(chan answer, d.s.concurrency)
	inFlight := 0
	var lastErr error
	done := false
	var settle <-chan time.Time
loop:
	for {
		sort.Slice(cands, func(i, j int) bool { return bytes.Compare(cands[i].dist, cands[j].dist) < 0 })
		// Launch requests to the closest unasked peers among the
		// replication closest that have not failed.
		if !done {
			seen := 0
			for _, c := range cands {
				if inFlight >= d.s.concurrency || seen >= d.s.replication {
					break
				}
				if c.state == stateFailed {
					continue
				}
				seen++
				if c.state != stateHeard {
					continue
				}
				c.state = stateWaiting
				inFlight++
				go func(p peer.ID) {
					rctx, rcancel := context.WithTimeout(ctx, d.s.requestTimeout)
					defer rcancel()
					closer, fin, err := ask(rctx, p)
					answers <- answer{p, closer, fin, err}
				}(c.id)
			}
		}
		if inFlight == 0 {
			break
		}
		select {
		case a := <-answers:
			inFlight--
			c := known[a.p]
			if a.err != nil {
				c.state = stateFailed
				lastErr = a.err
				continue
			}
			c.state = stateQueried
			if done {
				continue
			}
			if a.done {
				// Requests already sent may still bring a newer record:
				// give them a moment, then cancel them.
				done = true
				t := time.NewTimer(settleTime)
				defer t.Stop()
				settle = t.C
				continue
			}
			for _, ai := range a.closer[:min(len(a.closer), d.s.replication)] {
				if ai == nil || ai.ID == self {
					continue
				}
				if len(d.addAddrs(ai)) > 0 || d.h.Network().Connectedness(ai.ID) == network.Connected {
					addCand(ai.ID)
				}
			}
		case <-settle:
			settle = nil
			cancel()
		case <-ctx.Done():
			for ; inFlight > 0; inFlight-- {
				<-answers
			}
			if done {
				break loop
			}
			return lookupResult{}, ctx.Err()
		}
	}

	res := lookupResult{done: done}
	sort.Slice(cands, func(i, j int) bool { return bytes.Compare(cands[i].dist, cands[j].dist) < 0 })
	for _, c := range cands {
		if c.state == stateQueried && len(res.closest) < d.s.replication {
			res.closest = append(res.closest, c.id)
		}
	}
	if !done && len(res.closest) == 0 && lastErr != nil {
		return res, fmt.Errorf("%w: %w", ErrNoResponse, lastErr)
	}
	return res, nil
}
