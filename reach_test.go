package rendezvous_test

import (
	"testing"
	"time"

	"github.com/p2pos/rendezvous"
	"github.com/p2pos/rendezvous/dht"
	"github.com/p2pos/rendezvous/internal/testnet"
)

// TestAutoReachability starts a node that is left to find its reachability
// itself in a network of two public peers: a dial-back confirms its
// loopback address (public in the network's scope), so it becomes a DHT
// server and serves relays, and other nodes find it.
func TestAutoReachability(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	net := newNetwork(t, ctx, testnet.Config{Public: 2, Private: 1})
	auto, err := net.AddNode(ctx, rendezvous.ReachabilityUnknown)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = testnet.WaitStatus(ctx, auto, func(st rendezvous.Status) bool {
		return st.Reachability == "public" && st.DHTMode == "server" && st.RelayService &&
			st.Publish != nil && st.Publish.Error == "" && len(st.Publish.Addrs) > 0 && len(st.Publish.RelayAddrs) == 0
	})
	if err != nil {
		st := auto.Status()
		t.Fatalf("%v: reachability %s, DHT %s, relay service %v", err, st.Reachability, st.DHTMode, st.RelayService)
	}
	t.Logf("confirmed public by dial-back in %v", time.Since(start))
	// The record published before the verdict says unknown; the one
	// after it, public. Other nodes find the latter.
	var rec *dht.Record
	err = testnet.WaitStatus(ctx, auto, func(rendezvous.Status) bool {
		res, err := net.Private[0].DHT().Lookup(ctx, auto.ID(), dht.NoCache())
		if err != nil {
			return false
		}
		rec = res.Record
		return rec.NAT.Reachability == rendezvous.ReachabilityPublic && len(rec.Addrs) > 0
	})
	if err != nil {
		t.Fatalf("%v; record of the auto node: %v", err, rec)
	}
}
