package rendezvous_test

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
)

// A peer that measures a new path with a ping and pings again right after
// may hold several ping streams at once on the other side, whose handlers
// have not yet seen the earlier streams' resets. libp2p's default allows 2
// per peer and resets the third; a node allows more.
func TestOverlappingPingsAnswered(t *testing.T) {
	net := sharedNetwork(t)
	a, b := net.Public[0], net.Public[1]
	ctx := testContext(t, 20*time.Second)
	if err := a.Host().Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	const streams = 6
	results := make(chan ping.Result, streams)
	for range streams {
		// Each Ping keeps its stream open, pinging every second, until
		// the test ends.
		pctx, cancel := context.WithCancel(ctx)
		t.Cleanup(cancel)
		go func() { results <- <-ping.Ping(pctx, a.Host(), b.ID()) }()
	}
	for range streams {
		select {
		case r := <-results:
			if r.Error != nil {
				t.Fatalf("a ping of %d held at once failed: %v", streams, r.Error)
			}
		case <-ctx.Done():
			t.Fatal("pings not answered")
		}
	}
}
