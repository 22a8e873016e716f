package rendezvous_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2pos/rendezvous"
	"github.com/p2pos/rendezvous/dht"
	"github.com/p2pos/rendezvous/internal/testnet"
	"github.com/p2pos/rendezvous/relay"
)

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
