package rendezvous_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/p2pos/rendezvous"
	"github.com/p2pos/rendezvous/dht"
	"github.com/p2pos/rendezvous/relay"
)

// lookupLatest looks target up from looker, skipping every cache, and checks
// that the record found is the one target published last. If target
// republishes while the lookup runs, the lookup is repeated.
func lookupLatest(t *testing.T, ctx context.Context, looker, target *rendezvous.Node) (*dht.Record, *rendezvous.PublishStatus) {
	t.Helper()
	for range 3 {
		pub := published(t, ctx, target, nil)
		res, err := looker.DHT().Lookup(ctx, target.ID(), dht.NoCache())
		if err != nil {
			t.Fatalf("lookup of %s from %s: %v", target.ID(), looker.ID(), err)
		}
		if res.Cached {
			t.Errorf("lookup with NoCache answered from the cache")
		}
		now := target.Status().Publish
		if res.Record.Seq == pub.Seq && now.Seq == pub.Seq {
			return res.Record, pub
		}
		if now.Seq == pub.Seq {
			t.Fatalf("lookup of %s found seq %d, its latest publish is seq %d", target.ID(), res.Record.Seq, pub.Seq)
		}
		t.Logf("%s republished during the lookup (seq %d -> %d); looking again", target.ID(), pub.Seq, now.Seq)
	}
	t.Fatalf("%s kept republishing during lookups", target.ID())
	return nil, nil
}

// checkRecord checks that rec is a current record of node as node last
// published it: direct addresses only for a public node, relay addresses only
// for a private one.
func checkRecord(t *testing.T, node *rendezvous.Node, rec *dht.Record, pub *rendezvous.PublishStatus) {
	t.Helper()
	if rec.PeerID != node.ID() {
		t.Errorf("record of %s is signed by %s", node.ID(), rec.PeerID)
	}
	now := time.Now()
	if rec.Issued.After(now.Add(time.Second)) || !now.Before(rec.Expires) {
		t.Errorf("record not current: issued %v, expires %v, now %v", rec.Issued, rec.Expires, now)
	}
	switch node.Reachability() {
	case rendezvous.ReachabilityPublic:
		if len(rec.Addrs) == 0 || len(rec.RelayAddrs) != 0 {
			t.Errorf("public node's record has %d direct and %d relay addrs, want some and none: %v", len(rec.Addrs), len(rec.RelayAddrs), rec)
		}
		for _, a := range rec.Addrs {
			if !hasAddr(node.Addrs(), a) {
				t.Errorf("record address %s is not an address of the node (%v)", a, node.Addrs())
			}
		}
		if rec.NAT.Reachability != dht.ReachabilityPublic {
			t.Errorf("public node's record says %v", rec.NAT.Reachability)
		}
	case rendezvous.ReachabilityPrivate:
		if len(rec.Addrs) != 0 || len(rec.RelayAddrs) == 0 {
			t.Errorf("private node's record has %d direct and %d relay addrs, want none and some: %v", len(rec.Addrs), len(rec.RelayAddrs), rec)
		}
		for _, a := range rec.RelayAddrs {
			if !strings.HasSuffix(a.String(), "/p2p-circuit") || !relay.IsRelayed(a) {
				t.Errorf("relay address %s does not end in /p2p-circuit", a)
			}
		}
		if rec.NAT.Reachability != dht.ReachabilityPrivate {
			t.Errorf("private node's record says %v", rec.NAT.Reachability)
		}
	default:
		t.Fatalf("node %s has reachability %v", node.ID(), node.Reachability())
	}
	var got []string
	for _, a := range append(slices.Clone(rec.Addrs), rec.RelayAddrs...) {
		got = append(got, a.String())
	}
	want := append(slices.Clone(pub.Addrs), pub.RelayAddrs...)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("record addresses %v, the node published %v", got, want)
	}
}

func TestPublishAndLookup(t *testing.T) {
	net := sharedNetwork(t)
	ctx := testContext(t, 90*time.Second)
	private := net.Private
	// Raw reads from the servers, to check what they store independently of
	// the lookup code.
	raw := newKadClient(t, private[len(private)-1].Host())
	publicIDs := map[string]bool{}
	for _, p := range net.Public {
		publicIDs[p.ID().String()] = true
	}

	for i, target := range net.All() {
		looker := private[i%len(private)]
		if looker == target {
			looker = private[(i+1)%len(private)]
		}
		name := fmt.Sprintf("%02d-%v", i, target.Reachability())
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			rec, pub := lookupLatest(t, ctx, looker, target)
			t.Logf("%s found %s (seq %d) in %v", looker.ID(), target.ID(), rec.Seq, time.Since(start))
			checkRecord(t, target, rec, pub)
			if pub.Holders < 1 {
				t.Errorf("latest publish has %d holders", pub.Holders)
			}
			if target.Reachability() == rendezvous.ReachabilityPrivate {
				relays := statusRelays(target.Status())
				for _, r := range relayIDs(t, rec.RelayAddrs) {
					if !publicIDs[r.String()] {
						t.Errorf("relay %s of the record is not a public node", r)
					}
					if !slices.Contains(relays, r.String()) {
						t.Errorf("relay %s of the record is not one the node holds (%v)", r, relays)
					}
				}
			}

			// Every value a server holds verifies, and at least one server
			// holds the latest record.
			key := dht.RecordKey(target.ID())
			latest := 0
			for _, server := range net.Public {
				v, err := raw.get(ctx, server, target.ID())
				if err != nil {
					t.Fatalf("raw get from %s: %v", server.ID(), err)
				}
				if v == nil {
					continue
				}
				held, err := looker.DHT().Validator().Verify(key, v)
				if err != nil {
					t.Errorf("server %s holds a record of %s that does not verify: %v", server.ID(), target.ID(), err)
					continue
				}
				if held.Seq > rec.Seq {
					t.Errorf("server %s holds seq %d, newer than the latest publish %d", server.ID(), held.Seq, rec.Seq)
				}
				if held.Seq == rec.Seq {
					latest++
				}
			}
			if latest == 0 {
				t.Errorf("no server holds the latest record of %s", target.ID())
			}
		})
	}

	t.Run("unknown peer", func(t *testing.T) {
		id := randomPeerID(t)
		_, err := private[0].DHT().Lookup(ctx, id, dht.NoCache())
		if !errors.Is(err, dht.ErrNotFound) {
			t.Fatalf("lookup of unknown peer: %v, want dht.ErrNotFound", err)
		}
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			t.Errorf("lookup of unknown peer reports a context error: %v", err)
		}
		if _, err := private[0].Lookup(ctx, id); !errors.Is(err, dht.ErrNotFound) {
			t.Errorf("Node.Lookup of unknown peer: %v, want dht.ErrNotFound", err)
		}
	})

	t.Run("ended context", func(t *testing.T) {
		expired, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
		defer cancel()
		canceled, cancel2 := context.WithCancel(ctx)
		cancel2()
		for _, tc := range []struct {
			name string
			ctx  context.Context
			want error
		}{
			{"expired", expired, context.DeadlineExceeded},
			{"canceled", canceled, context.Canceled},
		} {
			for _, id := range []peer.ID{net.Public[1].ID(), private[2].ID(), randomPeerID(t)} {
				_, err := private[3].DHT().Lookup(tc.ctx, id, dht.NoCache())
				if !errors.Is(err, tc.want) {
					t.Errorf("%s context: lookup of %s: %v, want %v", tc.name, id, err, tc.want)
				}
				if errors.Is(err, dht.ErrNotFound) {
					t.Errorf("%s context: lookup of %s reports ErrNotFound: %v", tc.name, id, err)
				}
			}
		}
	})
}

func randomPeerID(t *testing.T) peer.ID {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestTopicSearch(t *testing.T) {
	net := sharedNetwork(t)
	ctx := testContext(t, 60*time.Second)
	const topic = "room-x"
	advertisers := net.Private[1:4]
	want := map[peer.ID]bool{}
	for _, a := range advertisers {
		if err := a.Advertise(ctx, topic); err != nil {
			t.Fatalf("advertise from %s: %v", a.ID(), err)
		}
		if !slices.Contains(a.Status().Topics, topic) {
			t.Errorf("status of %s does not list topic %q: %v", a.ID(), topic, a.Status().Topics)
		}
		want[a.ID()] = true
	}
	check := func(t *testing.T, recs []*dht.Record, want map[peer.ID]bool) {
		t.Helper()
		got := map[peer.ID]bool{}
		for _, r := range recs {
			if got[r.PeerID] {
				t.Errorf("peer %s returned twice", r.PeerID)
			}
			got[r.PeerID] = true
			if !want[r.PeerID] {
				t.Errorf("unexpected peer %s", r.PeerID)
				continue
			}
			if len(r.RelayAddrs) == 0 || len(r.Addrs) != 0 {
				t.Errorf("record of private peer %s: %d relay, %d direct addrs", r.PeerID, len(r.RelayAddrs), len(r.Addrs))
			}
			if !time.Now().Before(r.Expires) {
				t.Errorf("record of %s expired at %v", r.PeerID, r.Expires)
			}
		}
		if len(got) != len(want) {
			t.Errorf("found %d peers, want %d", len(got), len(want))
		}
	}

	t.Run("other peer", func(t *testing.T) {
		recs, err := net.Private[5].FindPeers(ctx, topic, 0)
		if err != nil {
			t.Fatal(err)
		}
		check(t, recs, want)
	})
	t.Run("advertiser", func(t *testing.T) {
		// The searching node itself is left out.
		recs, err := advertisers[0].FindPeers(ctx, topic, 0)
		if err != nil {
			t.Fatal(err)
		}
		others := map[peer.ID]bool{advertisers[1].ID(): true, advertisers[2].ID(): true}
		check(t, recs, others)
	})
	t.Run("public peer", func(t *testing.T) {
		recs, err := net.Public[2].FindPeers(ctx, topic, 0)
		if err != nil {
			t.Fatal(err)
		}
		check(t, recs, want)
	})
	t.Run("limit", func(t *testing.T) {
		recs, err := net.Private[6].FindPeers(ctx, topic, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 2 {
			t.Errorf("limit 2: found %d peers", len(recs))
		}
		for _, r := range recs {
			if !want[r.PeerID] {
				t.Errorf("unexpected peer %s", r.PeerID)
			}
		}
	})
	t.Run("unused topic", func(t *testing.T) {
		recs, err := net.Private[5].FindPeers(ctx, "room-nobody-uses", 0)
		if err != nil {
			t.Fatalf("unused topic: %v", err)
		}
		if len(recs) != 0 {
			t.Errorf("unused topic: found %d peers", len(recs))
		}
	})
	t.Run("unadvertise", func(t *testing.T) {
		a := advertisers[2]
		a.Unadvertise(topic)
		if slices.Contains(a.Status().Topics, topic) {
			t.Errorf("status still lists topic %q after Unadvertise: %v", topic, a.Status().Topics)
		}
	})
	t.Run("empty topic", func(t *testing.T) {
		if _, err := net.Private[5].FindPeers(ctx, "", 0); !errors.Is(err, dht.ErrEmptyTopic) {
			t.Errorf("FindPeers with empty topic: %v, want dht.ErrEmptyTopic", err)
		}
		if err := net.Private[5].Advertise(ctx, ""); !errors.Is(err, dht.ErrEmptyTopic) {
			t.Errorf("Advertise with empty topic: %v, want dht.ErrEmptyTopic", err)
		}
	})
}

const echoProtocol = protocol.ID("/rendezvous-test/echo/1.0.0")

func TestConnectThroughRelay(t *testing.T) {
	net := sharedNetwork(t)
	ctx := testContext(t, 60*time.Second)
	a, b := net.Private[7], net.Private[8]
	// The test is about a fresh connection.
	if err := a.Host().Network().ClosePeer(b.ID()); err != nil {
		t.Fatal(err)
	}

	received := make(chan string, 1)
	b.Host().SetStreamHandler(echoProtocol, func(s network.Stream) {
		defer s.Close()
		msg, err := io.ReadAll(io.LimitReader(s, 1<<10))
		if err != nil {
			s.Reset()
			return
		}
		received <- string(msg)
		if _, err := s.Write([]byte("B got: " + string(msg))); err != nil {
			s.Reset()
		}
	})
	defer b.Host().RemoveStreamHandler(echoProtocol)

	t.Run("private to private", func(t *testing.T) {
		c, err := a.Connect(ctx, b.ID())
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("path %+v, lookup %v", c.Path, c.LookupTime)
		if c.Path.Kind != relay.PathRelayed {
			t.Errorf("path kind %v, want %v", c.Path.Kind, relay.PathRelayed)
		}
		if relays := statusRelays(b.Status()); !slices.Contains(relays, c.Path.Relay.String()) {
			t.Errorf("path goes through %q, not one of B's relays %v", c.Path.Relay, relays)
		}
		if c.Path.RTT <= 0 {
			t.Errorf("RTT %v, want > 0", c.Path.RTT)
		}
		if c.RemotePeer() != b.ID() {
			t.Errorf("connected to %s, want %s", c.RemotePeer(), b.ID())
		}
		if c.Record == nil || c.Record.PeerID != b.ID() {
			t.Errorf("connection record %v, want B's", c.Record)
		}

		s, err := a.NewStream(ctx, b.ID(), echoProtocol)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write([]byte("hello from A")); err != nil {
			t.Fatal(err)
		}
		if err := s.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		reply, err := io.ReadAll(s)
		if err != nil {
			t.Fatal(err)
		}
		if string(reply) != "B got: hello from A" {
			t.Errorf("A read %q", reply)
		}
		select {
		case got := <-received:
			if got != "hello from A" {
				t.Errorf("B read %q", got)
			}
		case <-ctx.Done():
			t.Fatal("B's handler reported nothing")
		}

		again, err := a.Connect(ctx, b.ID())
		if err != nil {
			t.Fatal(err)
		}
		if again.Path.Kind != relay.PathRelayed || again.Record != nil {
			t.Errorf("second Connect: path %v, record %v; want the existing relayed connection", again.Path.Kind, again.Record)
		}
	})

	t.Run("private to public", func(t *testing.T) {
		relays := statusRelays(a.Status())
		var pub *rendezvous.Node
		for _, p := range net.Public {
			if !slices.Contains(relays, p.ID().String()) {
				pub = p
				break
			}
		}
		if pub == nil {
			t.Fatal("every public node is a relay of A")
		}
		if err := a.Host().Network().ClosePeer(pub.ID()); err != nil {
			t.Fatal(err)
		}
		c, err := a.Connect(ctx, pub.ID())
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("path %+v", c.Path)
		if c.Path.Kind != relay.PathDirect || c.Path.Relay != "" {
			t.Errorf("path %v via %q, want direct", c.Path.Kind, c.Path.Relay)
		}
		if c.Path.RTT <= 0 {
			t.Errorf("RTT %v, want > 0", c.Path.RTT)
		}
		if c.Record == nil || c.Record.PeerID != pub.ID() {
			t.Errorf("connection record %v, want the public node's", c.Record)
		}
	})

	t.Run("self", func(t *testing.T) {
		if _, err := a.Connect(ctx, a.ID()); !errors.Is(err, rendezvous.ErrSelf) {
			t.Errorf("Connect to self: %v, want ErrSelf", err)
		}
	})
}
