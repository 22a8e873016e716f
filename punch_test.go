package rendezvous_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2pos/rendezvous"
	"github.com/p2pos/rendezvous/internal/testnet"
	"github.com/p2pos/rendezvous/relay"
)

// TestConnectPunches: a private node connects to another by asking one of
// its relays to coordinate a punch, with no relayed connection first. On
// loopback nothing filters, so the punch wins over the relay. A node that
// takes no punches is reached through its relay, and the attempts say why.
func TestConnectPunches(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	tn := newNetwork(t, ctx, testnet.Config{Public: 3, Private: 2})
	a, b := tn.Private[0], tn.Private[1]
	c, err := a.Connect(ctx, b.ID())
	if err != nil {
		t.Fatal(err)
	}
	if c.Path.Kind != relay.PathHolePunched || relay.IsRelayed(c.RemoteMultiaddr()) {
		t.Fatalf("path %+v over %s, want hole-punched", c.Path, c.RemoteMultiaddr())
	}
	if len(c.Attempts) == 0 || c.Attempts[0].Kind != "punch" || c.Attempts[0].Err != nil {
		t.Fatalf("attempts %+v, want a punch that made it", c.Attempts)
	}
	if relays := relayIDs(t, c.Record.RelayAddrs); !slices.Contains(relays, c.Attempts[0].Relay) {
		t.Errorf("punch through %s, not one of b's relays %v", c.Attempts[0].Relay, relays)
	}
	t.Logf("punched in %v after a lookup of %v", c.Path.DialTime, c.LookupTime)

	shy, err := tn.AddNode(ctx, rendezvous.ReachabilityPrivate, rendezvous.WithoutHolePunching())
	if err != nil {
		t.Fatal(err)
	}
	c, err = a.Connect(ctx, shy.ID())
	if err != nil {
		t.Fatal(err)
	}
	if c.Path.Kind != relay.PathRelayed {
		t.Fatalf("to a node without punching: path %+v, want relayed", c.Path)
	}
	var pe *relay.PunchError
	if len(c.Attempts) < 2 || !errors.As(c.Attempts[0].Err, &pe) || pe.Status != relay.PunchRefused || c.Attempts[1].Kind != "dial" {
		t.Fatalf("attempts %+v, want a refused punch, then the relay", c.Attempts)
	}
}

// TestClientWithoutPublishing: a node WithoutPublishing connects to others
// (punching too) but publishes nothing and holds no reservation, so no one
// finds it.
func TestClientWithoutPublishing(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	tn := newNetwork(t, ctx, testnet.Config{Public: 3, Private: 1})
	opts := append(testnet.BaseOptions(testnet.QUIC), rendezvous.WithReachability(rendezvous.ReachabilityPrivate),
		rendezvous.WithBootstrap(tn.Bootstrap()...), rendezvous.WithoutPublishing())
	client, err := rendezvous.New(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	select {
	case <-client.Ready():
	default:
		t.Error("a node without publishing is not ready at once")
	}
	c, err := client.Connect(ctx, tn.Private[0].ID())
	if err != nil {
		t.Fatal(err)
	}
	if c.Path.Kind != relay.PathHolePunched {
		t.Errorf("path %+v, want hole-punched", c.Path)
	}
	if st := client.Status(); st.Publish != nil || len(st.Relays) != 0 {
		t.Errorf("status: publish %+v, %d relays; want none", st.Publish, len(st.Relays))
	}
	if _, err := tn.Public[0].Lookup(ctx, client.ID()); err == nil {
		t.Error("a node without publishing was found")
	}
}

// TestRelayedConnectionBecomesDirect: a connection a node dialed through a
// relay is made direct by a punch the relay coordinates (neither side runs
// DCUtR here), and the node says so with an EventPath.
func TestRelayedConnectionBecomesDirect(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	tn := newNetwork(t, ctx, testnet.Config{Public: 3, Private: 1, Options: []rendezvous.Option{rendezvous.WithoutDCUtR()}})
	b := tn.Private[0]
	a, err := tn.AddNode(ctx, rendezvous.ReachabilityPrivate, rendezvous.WithUpgradeTiming(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	events, unsubscribe := a.Subscribe()
	defer unsubscribe()
	rec, err := a.Lookup(ctx, b.ID())
	if err != nil {
		t.Fatal(err)
	}
	// Through the relay alone, as a node without punching would.
	if _, _, err := relay.Dial(ctx, a.Host(), b.ID(), nil, rec.RelayAddrs); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case ev := <-events:
			if ev.Type != rendezvous.EventPath {
				continue
			}
			if ev.PathChange.Peer != b.ID() || ev.PathChange.Path.Kind != relay.PathHolePunched {
				t.Fatalf("path event %+v", ev.PathChange)
			}
			if ev.PathChange.Attempts < 1 {
				t.Fatalf("direct after %d punches of the upgrade", ev.PathChange.Attempts)
			}
			if c := relay.BestConn(a.Host(), b.ID()); c == nil || c.Stat().Limited {
				t.Fatal("no direct connection after the path event")
			}
			return
		case <-ctx.Done():
			t.Fatal("no path event")
		}
	}
}

// TestConnectMetrics: a punched connection is counted by path and NAT
// kinds, and the punch by the relay that forwarded it and the target that
// took it.
func TestConnectMetrics(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	reg := prometheus.NewRegistry()
	tn := newNetwork(t, ctx, testnet.Config{Public: 2, Private: 2, Options: []rendezvous.Option{rendezvous.WithPrometheusRegisterer(reg)}})
	a, b := tn.Private[0], tn.Private[1]
	if _, err := a.Connect(ctx, b.ID()); err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			got[key] = m.GetCounter().GetValue()
		}
	}
	for _, want := range []string{
		"rendezvous_connects_total,local_nat=unknown,path=hole-punched,remote_nat=unknown",
		"rendezvous_connect_attempts_total,kind=punch,outcome=ok",
		"rendezvous_punch_requests_total,role=relay,status=ok",
		"rendezvous_punch_requests_total,role=target,status=ok",
	} {
		if got[want] != 1 {
			t.Errorf("%s = %v, want 1", want, got[want])
		}
	}
	if t.Failed() {
		t.Logf("gathered: %v", got)
	}
}
