package rendezvous_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2pos/rendezvous"
	"github.com/p2pos/rendezvous/dht"
	"github.com/p2pos/rendezvous/internal/testnet"
	"github.com/p2pos/rendezvous/nat/keepalive"
	"github.com/p2pos/rendezvous/relay"
)

// A private node holds its relays over TCP, with the keep-alive it computed
// on those sockets, and closes its idle connections to other DHT servers.
func TestStandbyKeepsTCPRelaysAndReapsTheRest(t *testing.T) {
	ctx := testContext(t, 90*time.Second)
	tn := newNetwork(t, ctx, testnet.Config{Public: 4, Transport: testnet.Both})
	opts := append(testnet.BaseOptions(testnet.Both),
		rendezvous.WithBootstrap(tn.Bootstrap()...),
		rendezvous.WithReachability(rendezvous.ReachabilityPrivate),
		rendezvous.WithStandbyTiming(100*time.Millisecond, 500*time.Millisecond),
	)
	n, err := rendezvous.New(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()

	var st rendezvous.Status
	err = testnet.WaitStatus(ctx, n, func(s rendezvous.Status) bool {
		st = s
		k := s.KeepAlive
		if k == nil || k.Standing != relay.DefaultReservations || len(s.Relays) != relay.DefaultReservations {
			return false
		}
		// Only the standing connections are left.
		return s.Connections == relay.DefaultReservations
	})
	if err != nil {
		for _, c := range n.Host().Network().Conns() {
			var ps []string
			for _, s := range c.GetStreams() {
				ps = append(ps, string(s.Protocol()))
			}
			t.Logf("conn %s %s %v protected=%v streams=%v", c.RemotePeer(), c.RemoteMultiaddr(), c.Stat().Direction,
				n.Host().ConnManager().IsProtected(c.RemotePeer(), relay.ProtectTag), ps)
		}
		t.Fatalf("%v; last status: %+v keepalive %+v", err, st, st.KeepAlive)
	}
	if st.KeepAlive.Reaped == 0 {
		t.Fatalf("nothing reaped: %+v", st.KeepAlive)
	}
	if st.KeepAlive.Basis != "initial" || st.KeepAlive.Idle != 30*time.Second {
		t.Fatalf("keep-alive before anything is known: %+v", st.KeepAlive)
	}
	for _, r := range st.Relays {
		id, err := peer.Decode(r.Relay)
		if err != nil {
			t.Fatal(err)
		}
		conns := n.Host().Network().ConnsToPeer(id)
		if len(conns) != 1 || !keepalive.IsTCP(conns[0]) {
			t.Fatalf("relay %s: connections %v, want one TCP connection", id, conns)
		}
	}
}

// A private node proves its TCP lifetime through a relay's hold server and
// lets its standing connections idle accordingly.
func TestStandbyProvesTCPLifetime(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	tn := newNetwork(t, ctx, testnet.Config{Public: 2, Transport: testnet.Both})
	opts := append(testnet.BaseOptions(testnet.Both),
		rendezvous.WithBootstrap(tn.Bootstrap()...),
		rendezvous.WithReachability(rendezvous.ReachabilityPrivate),
		rendezvous.WithStandbyTiming(100*time.Millisecond, time.Second),
		rendezvous.WithTCPLifetimeHolds(time.Second, 7*time.Second),
	)
	n, err := rendezvous.New(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	var k *rendezvous.KeepAliveStatus
	err = testnet.WaitStatus(ctx, n, func(s rendezvous.Status) bool {
		k = s.KeepAlive
		return k != nil && k.TCPLower == 7*time.Second && !k.TCPMeasuring && k.Standing > 0
	})
	if err != nil {
		t.Fatalf("%v; keepalive %+v", err, k)
	}
	// Loopback has no NAT: both holds survive.
	if k.TCPUpper != 0 || k.Basis != "tcp" {
		t.Fatalf("keepalive %+v", k)
	}
	want := time.Duration(float64(7*time.Second) * 0.8)
	err = testnet.WaitStatus(ctx, n, func(s rendezvous.Status) bool {
		k = s.KeepAlive
		return k != nil && k.Idle == want
	})
	if err != nil {
		t.Fatalf("idle not applied: %v; keepalive %+v", err, k)
	}
}

// A private node's record goes to its relays, which store it for it; a
// record signed by someone else is refused.
func TestRecordKeptByRelays(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	tn := newNetwork(t, ctx, testnet.Config{Public: 4, Private: 1, Transport: testnet.Both})
	priv := tn.Private[0]
	p := published(t, ctx, priv, func(p *rendezvous.PublishStatus) bool {
		return p.Keepers == relay.DefaultReservations && len(p.RelayAddrs) == relay.DefaultReservations
	})
	if p.Holders == 0 || p.RPCs != 0 {
		t.Fatalf("kept publish: %+v", p)
	}
	if got := p.Expires.Sub(p.Time); got < 11*time.Hour {
		t.Fatalf("kept record lives %v", got)
	}
	// Another node finds it in the DHT, not in a cache.
	pub := tn.Public[0]
	res, err := pub.DHT().Lookup(ctx, priv.ID(), dht.NoCache())
	if err != nil {
		t.Fatal(err)
	}
	if res.Record.Seq != p.Seq {
		t.Fatalf("looked up seq %d, published %d", res.Record.Seq, p.Seq)
	}

	// A record signed by another key, handed over by the private node.
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	data, err := (&dht.Record{Seq: 1, Issued: now, Expires: now.Add(time.Hour)}).Seal(key)
	if err != nil {
		t.Fatal(err)
	}
	relayID, err := peer.Decode(priv.Status().Relays[0].Relay)
	if err != nil {
		t.Fatal(err)
	}
	_, err = priv.DHT().HandRecord(ctx, relayID, data)
	var ke *dht.KeepError
	if !errors.Is(err, dht.ErrKeepRefused) || !errors.As(err, &ke) || !strings.Contains(ke.Reason, "signed by") {
		t.Fatalf("forged record: %v", err)
	}
}
