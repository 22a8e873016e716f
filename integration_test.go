package rendezvous_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2pos/rendezvous"
	"github.com/p2pos/rendezvous/dht"
	"github.com/p2pos/rendezvous/internal/testnet"
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

func TestRepublish(t *testing.T) {
	ctx := testContext(t, 90*time.Second)
	net := newNetwork(t, ctx, testnet.Config{Public: 4, Private: 3})

	t.Run("address change", func(t *testing.T) {
		p, other := net.Public[0], net.Private[0]
		before := published(t, ctx, p, nil)
		start := time.Now()
		if err := p.Host().Network().Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0")); err != nil {
			t.Fatal(err)
		}
		var added ma.Multiaddr
		for _, a := range p.Host().Network().ListenAddresses() {
			if _, err := a.ValueForProtocol(ma.P_TCP); err == nil {
				added = a
			}
		}
		if added == nil {
			t.Fatalf("no TCP listen address after Listen: %v", p.Host().Network().ListenAddresses())
		}
		after := published(t, ctx, p, func(ps *rendezvous.PublishStatus) bool {
			return ps.Seq > before.Seq && slices.Contains(ps.Addrs, added.String())
		})
		t.Logf("republished with %s in %v (seq %d -> %d)", added, time.Since(start), before.Seq, after.Seq)

		rec, _ := lookupLatest(t, ctx, other, p)
		if !hasAddr(rec.Addrs, added) {
			t.Errorf("record found has no %s: %v", added, rec)
		}
		for _, s := range before.Addrs {
			if !hasAddr(rec.Addrs, ma.StringCast(s)) {
				t.Errorf("record found lost the old address %s: %v", s, rec)
			}
		}
	})

	t.Run("relay lost", func(t *testing.T) {
		q, other := net.Private[1], net.Private[2]
		before := published(t, ctx, q, func(ps *rendezvous.PublishStatus) bool {
			return len(ps.RelayAddrs) == relay.DefaultReservations
		})
		relays := publishRelays(before)
		dead := relays[0]
		var deadNode *rendezvous.Node
		for _, p := range net.Public {
			if p.ID().String() == dead {
				deadNode = p
			}
		}
		if deadNode == nil {
			t.Fatalf("relay %s is not a public node of the network", dead)
		}
		start := time.Now()
		if err := deadNode.Close(); err != nil {
			t.Fatalf("closing relay: %v", err)
		}
		err := testnet.WaitStatus(ctx, q, func(st rendezvous.Status) bool {
			rs := statusRelays(st)
			return !slices.Contains(rs, dead) && len(rs) == relay.DefaultReservations
		})
		if err != nil {
			t.Fatal(err)
		}
		replaced := time.Since(start)
		after := published(t, ctx, q, func(ps *rendezvous.PublishStatus) bool {
			rs := publishRelays(ps)
			return !slices.Contains(rs, dead) && len(rs) == relay.DefaultReservations
		})
		// The closed relay held the previous record. The publish is reported
		// once every put has returned, and the put to it ends only at the
		// DHT's request timeout (5 s); when it was also the holder closest
		// to the key, the check that the holders are still the closest waits
		// as long before any put is sent.
		t.Logf("relay %s lost: new reservation after %v, new record published (reported) after %v; relays %v -> %v (seq %d -> %d, %d holders)",
			dead, replaced, time.Since(start), relays, publishRelays(after), before.Seq, after.Seq, after.Holders)
		if slices.Contains(statusRelays(q.Status()), dead) {
			t.Errorf("status still lists the dead relay: %v", statusRelays(q.Status()))
		}

		rec, _ := lookupLatest(t, ctx, other, q)
		got := relayIDs(t, rec.RelayAddrs)
		if slices.Contains(got, deadNode.ID()) {
			t.Errorf("record found still names the dead relay: %v", rec)
		}
		if len(got) != relay.DefaultReservations {
			t.Errorf("record found has %d relays, want %d: %v", len(got), relay.DefaultReservations, rec)
		}
	})
}

// restartServer is a public node that a test stops and starts again.
type restartServer struct {
	opts   []rendezvous.Option
	node   *rendezvous.Node
	listen []ma.Multiaddr
}

func (s *restartServer) start(ctx context.Context, boot []*restartServer) error {
	var infos []peer.AddrInfo
	for _, b := range boot {
		infos = append(infos, peer.AddrInfo{ID: b.node.ID(), Addrs: b.node.Host().Network().ListenAddresses()})
	}
	opts := append(testnet.BaseOptions(testnet.QUIC),
		rendezvous.WithReachability(rendezvous.ReachabilityPublic),
		rendezvous.WithBootstrap(infos...),
		rendezvous.WithListenAddrs(s.listen...))
	n, err := rendezvous.New(ctx, append(opts, s.opts...)...)
	if err != nil {
		return err
	}
	s.node = n
	// A restart listens on the same addresses, so that peers that knew the
	// node still reach it.
	s.listen = n.Host().Network().ListenAddresses()
	return nil
}

func TestLookupAfterHoldersRestart(t *testing.T) {
	t.Run("with data dirs", func(t *testing.T) { testHoldersRestart(t, true) })
	t.Run("without data dirs", func(t *testing.T) { testHoldersRestart(t, false) })
}

// testHoldersRestart publishes a private node's record, closes the node,
// restarts every server (keeping identities and addresses, and with persist
// their data dirs), and looks the record up from a new node.
func testHoldersRestart(t *testing.T, persist bool) {
	ctx := testContext(t, 90*time.Second)
	const count = 4
	servers := make([]*restartServer, count)
	var closers []*rendezvous.Node
	t.Cleanup(func() {
		for _, n := range closers {
			n.Close()
		}
	})
	for i := range servers {
		s := &restartServer{}
		if persist {
			s.opts = []rendezvous.Option{rendezvous.WithDataDir(t.TempDir())}
		} else {
			k, _, err := crypto.GenerateEd25519Key(nil)
			if err != nil {
				t.Fatal(err)
			}
			s.opts = []rendezvous.Option{rendezvous.WithKey(k)}
		}
		if err := s.start(ctx, servers[:i]); err != nil {
			t.Fatalf("server %d: %v", i, err)
		}
		closers = append(closers, s.node)
		servers[i] = s
	}
	boot := func() []peer.AddrInfo {
		var out []peer.AddrInfo
		for _, s := range servers {
			out = append(out, peer.AddrInfo{ID: s.node.ID(), Addrs: s.listen})
		}
		return out
	}
	newPrivate := func() *rendezvous.Node {
		t.Helper()
		n, err := rendezvous.New(ctx, append(testnet.BaseOptions(testnet.QUIC),
			rendezvous.WithReachability(rendezvous.ReachabilityPrivate),
			rendezvous.WithBootstrap(boot()...))...)
		if err != nil {
			t.Fatal(err)
		}
		closers = append(closers, n)
		if err := testnet.WaitPublished(ctx, n, true); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// holding counts the servers that hold id's record with seq.
	holding := func(kc *kadClient, id peer.ID, seq uint64) int {
		t.Helper()
		held := 0
		for _, s := range servers {
			v, err := kc.get(ctx, s.node, id)
			if err != nil {
				t.Fatalf("raw get from %s: %v", s.node.ID(), err)
			}
			if v == nil {
				continue
			}
			r, err := dht.OpenRecord(v)
			if err != nil {
				t.Errorf("server %s holds a bad record: %v", s.node.ID(), err)
				continue
			}
			if r.Seq == seq {
				held++
			}
		}
		return held
	}

	p := newPrivate()
	pub := published(t, ctx, p, func(ps *rendezvous.PublishStatus) bool {
		return len(ps.RelayAddrs) == relay.DefaultReservations
	})
	pid := p.ID()
	before := holding(newKadClient(t, p.Host()), pid, pub.Seq)
	t.Logf("record of %s (seq %d): %d holders, %d servers hold it", pid, pub.Seq, pub.Holders, before)
	if before == 0 {
		t.Fatal("no server holds the record")
	}
	// Closing the publisher first: it must not store its record again on the
	// restarted servers.
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}

	ids := make([]peer.ID, count)
	for i, s := range servers {
		ids[i] = s.node.ID()
		if err := s.node.Close(); err != nil {
			t.Fatalf("closing server %d: %v", i, err)
		}
	}
	start := time.Now()
	for i, s := range servers {
		if err := s.start(ctx, servers[:i]); err != nil {
			t.Fatalf("restarting server %d: %v", i, err)
		}
		closers = append(closers, s.node)
		if s.node.ID() != ids[i] {
			t.Fatalf("server %d restarted as %s, was %s", i, s.node.ID(), ids[i])
		}
	}
	t.Logf("servers restarted in %v", time.Since(start))

	fresh := newPrivate()
	after := holding(newKadClient(t, fresh.Host()), pid, pub.Seq)
	res, err := fresh.DHT().Lookup(ctx, pid, dht.NoCache())
	if persist {
		if err != nil {
			t.Fatalf("lookup after restart: %v", err)
		}
		if res.Record.Seq != pub.Seq {
			t.Errorf("lookup after restart found seq %d, want %d", res.Record.Seq, pub.Seq)
		}
		if after != before {
			t.Errorf("%d servers hold the record after the restart, %d before", after, before)
		}
		return
	}
	if !errors.Is(err, dht.ErrNotFound) {
		t.Errorf("lookup after restarting servers without data dirs: %v (record %v), want dht.ErrNotFound", err, res.Record)
	}
	if after != 0 {
		t.Errorf("%d servers still hold the record without a data dir", after)
	}
}

func TestBadRecordsRefused(t *testing.T) {
	ctx := testContext(t, 90*time.Second)
	net := newNetwork(t, ctx, testnet.Config{Public: 4, Private: 3})
	p, attacker, other := net.Private[0], net.Private[1], net.Private[2]
	key := dht.RecordKey(p.ID())
	kc := newKadClient(t, attacker.Host())
	v := attacker.DHT().Validator()

	// serving returns the servers that hold p's record with seq, and the
	// value they hold.
	serving := func(seq uint64) ([]*rendezvous.Node, []byte) {
		t.Helper()
		var nodes []*rendezvous.Node
		var value []byte
		for _, s := range net.Public {
			b, err := kc.get(ctx, s, p.ID())
			if err != nil {
				t.Fatalf("raw get from %s: %v", s.ID(), err)
			}
			if b == nil {
				continue
			}
			r, err := v.Verify(key, b)
			if err != nil {
				t.Fatalf("server %s holds an invalid record: %v", s.ID(), err)
			}
			if r.Seq == seq {
				nodes = append(nodes, s)
				value = b
			}
		}
		return nodes, value
	}

	first := published(t, ctx, p, func(ps *rendezvous.PublishStatus) bool {
		return len(ps.RelayAddrs) == relay.DefaultReservations
	})
	holders, stale := serving(first.Seq)
	if len(holders) == 0 {
		t.Fatalf("no server holds seq %d", first.Seq)
	}

	// A private node publishes relays, not listen addresses: dropping the
	// connection to one relay makes it take another one and republish.
	dropped := publishRelays(first)[0]
	if err := p.Host().Network().ClosePeer(mustDecode(t, dropped)); err != nil {
		t.Fatal(err)
	}
	latestPub := published(t, ctx, p, func(ps *rendezvous.PublishStatus) bool {
		rs := publishRelays(ps)
		return ps.Seq > first.Seq && len(rs) == relay.DefaultReservations && !slices.Contains(rs, dropped)
	})
	holders, latest := serving(latestPub.Seq)
	if len(holders) == 0 {
		t.Fatalf("no server holds seq %d", latestPub.Seq)
	}
	t.Logf("seq %d replaced seq %d on %d servers", latestPub.Seq, first.Seq, len(holders))

	attackerKey, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	forgedRec := &dht.Record{
		Seq:        latestPub.Seq + 1000,
		Issued:     now,
		Expires:    now.Add(time.Hour),
		RelayAddrs: []ma.Multiaddr{ma.StringCast(latestPub.RelayAddrs[0])},
		NAT:        dht.NATInfo{Reachability: dht.ReachabilityPrivate},
	}
	forged, err := forgedRec.Seal(attackerKey)
	if err != nil {
		t.Fatal(err)
	}
	oversize := append(slices.Clone(latest), make([]byte, dht.MaxRecordSize)...)
	garbage := bytes.Repeat([]byte("this is not a signed record "), 8)

	sentinels := []error{dht.ErrSignerMismatch, dht.ErrStaleSeq, dht.ErrTooLarge, dht.ErrMalformed}
	cases := []struct {
		name  string
		value []byte
		check func() error
		want  error
	}{
		{"forged", forged, func() error { return v.Validate(key, forged) }, dht.ErrSignerMismatch},
		{"stale", stale, func() error { return v.CheckReplace(key, latest, stale) }, dht.ErrStaleSeq},
		{"oversize", oversize, func() error { return v.Validate(key, oversize) }, dht.ErrTooLarge},
		{"garbage", garbage, func() error { return v.Validate(key, garbage) }, dht.ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.check()
			if !errors.Is(err, tc.want) {
				t.Fatalf("local check: %v, want %v", err, tc.want)
			}
			for _, s := range sentinels {
				if s != tc.want && errors.Is(err, s) {
					t.Errorf("local check: %v also matches %v", err, s)
				}
			}
			for _, s := range holders {
				if err := kc.put(ctx, s, p.ID(), tc.value); err == nil {
					t.Errorf("server %s accepted the %s value", s.ID(), tc.name)
				}
			}
		})
	}
	if err := v.Validate(key, stale); err != nil {
		t.Errorf("the stale record is valid on its own, got %v", err)
	}

	// A valid value goes through the same client: the refusals above are
	// the servers' doing.
	for _, s := range holders {
		if err := kc.put(ctx, s, p.ID(), latest); err != nil {
			t.Errorf("server %s refused the latest record: %v", s.ID(), err)
		}
	}
	still, value := serving(latestPub.Seq)
	if len(still) != len(holders) {
		t.Errorf("%d servers hold the latest record after the attack, %d before", len(still), len(holders))
	}
	if !bytes.Equal(value, latest) {
		t.Errorf("servers hold other bytes than the latest record")
	}
	rec, _ := lookupLatest(t, ctx, other, p)
	if rec.Seq != latestPub.Seq {
		t.Errorf("lookup after the attack found seq %d, want %d", rec.Seq, latestPub.Seq)
	}
}

func mustDecode(t *testing.T, s string) peer.ID {
	t.Helper()
	id, err := peer.Decode(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestClose(t *testing.T) {
	sn := sharedNetwork(t)
	ctx := testContext(t, 60*time.Second)
	target := sn.Private[0]

	n, err := rendezvous.New(ctx, append(testnet.BaseOptions(testnet.QUIC),
		rendezvous.WithReachability(rendezvous.ReachabilityPrivate),
		rendezvous.WithBootstrap(sn.Bootstrap()...))...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Lookup(ctx, target.ID()); err != nil {
		t.Fatalf("lookup before Close: %v", err)
	}
	events, cancel := n.Subscribe()
	defer cancel()

	// Concurrent and repeated calls all return the first call's result.
	results := make([]error, 4)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = n.Close()
		}()
	}
	wg.Wait()
	if results[0] != nil {
		t.Errorf("Close: %v", results[0])
	}
	for i, err := range append(results, n.Close()) {
		if err != results[0] {
			t.Errorf("Close call %d returned %v, first %v", i, err, results[0])
		}
	}
	for range events {
		// Drained: Close closes the subscription.
	}
	late, cancelLate := n.Subscribe()
	defer cancelLate()
	if ev, ok := <-late; ok {
		t.Errorf("Subscribe after Close delivered %v", ev)
	}

	calls := []struct {
		name string
		call func() error
	}{
		{"Lookup", func() error { _, err := n.Lookup(ctx, target.ID()); return err }},
		{"Connect", func() error { _, err := n.Connect(ctx, target.ID()); return err }},
		{"NewStream", func() error { _, err := n.NewStream(ctx, target.ID(), echoProtocol); return err }},
		{"FindPeers", func() error { _, err := n.FindPeers(ctx, "room-x", 0); return err }},
		{"Advertise", func() error { return n.Advertise(ctx, "room-x") }},
		{"DHT().Lookup", func() error { _, err := n.DHT().Lookup(ctx, target.ID(), dht.NoCache()); return err }},
		{"DHT().Advertise", func() error { _, err := n.DHT().Advertise(ctx, "room-x"); return err }},
		{"DHT().FindPeers", func() error { _, err := n.DHT().FindPeers(ctx, "room-x", 0); return err }},
	}
	for _, c := range calls {
		if err := c.call(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s after Close: %v, want net.ErrClosed", c.name, err)
		}
	}
	st := n.Status()
	if st.PeerID != n.ID().String() {
		t.Errorf("status after Close names %q", st.PeerID)
	}
}

func TestKeyFile(t *testing.T) {
	sn := sharedNetwork(t)
	ctx := testContext(t, 60*time.Second)
	dir := t.TempDir()
	path := filepath.Join(dir, "node.key")
	start := func(path string) (*rendezvous.Node, error) {
		return rendezvous.New(ctx, append(testnet.BaseOptions(testnet.QUIC),
			rendezvous.WithKeyFile(path),
			rendezvous.WithReachability(rendezvous.ReachabilityPrivate),
			rendezvous.WithBootstrap(sn.Bootstrap()...))...)
	}
	mode := func(path string) os.FileMode {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode().Perm()
	}

	n1, err := start(path)
	if err != nil {
		t.Fatal(err)
	}
	pub1 := published(t, ctx, n1, nil)
	id := n1.ID()
	if err := n1.Close(); err != nil {
		t.Fatal(err)
	}
	if m := mode(path); m != 0o600 {
		t.Errorf("key file mode %#o, want 0600", m)
	}
	b, err := os.ReadFile(path + ".seq")
	if err != nil {
		t.Fatalf("sequence file: %v", err)
	}
	saved, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("sequence file: %v", err)
	}
	if saved < pub1.Seq {
		t.Errorf("sequence file holds %d, the node published %d", saved, pub1.Seq)
	}

	n2, err := start(path)
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Close()
	if n2.ID() != id {
		t.Errorf("restarted as %s, was %s", n2.ID(), id)
	}
	if pub2 := published(t, ctx, n2, nil); pub2.Seq <= saved {
		t.Errorf("after restart published seq %d, not above the saved %d", pub2.Seq, saved)
	}

	loose := filepath.Join(dir, "loose.key")
	if _, err := rendezvous.LoadOrCreateKey(loose); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(loose, 0o644); err != nil {
		t.Fatal(err)
	}
	if n, err := start(loose); !errors.Is(err, rendezvous.ErrKeyFilePermissions) {
		if n != nil {
			n.Close()
		}
		t.Errorf("key file with mode 0644: %v, want ErrKeyFilePermissions", err)
	}
	if _, err := rendezvous.LoadOrCreateKey(loose); !errors.Is(err, rendezvous.ErrKeyFilePermissions) {
		t.Errorf("LoadOrCreateKey of a 0644 file: %v, want ErrKeyFilePermissions", err)
	}
}
