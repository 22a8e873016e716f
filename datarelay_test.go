package rendezvous_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2pos/rendezvous"
	"github.com/p2pos/rendezvous/dht"
	"github.com/p2pos/rendezvous/internal/testnet"
	"github.com/p2pos/rendezvous/relay"
)

const sinkProtocol = "/rendezvous-test/sink/1.0.0"

// sendThrough sends n bytes to p over a relayed connection through the
// relay addresses addrs, and returns what the peer counted.
func sendThrough(ctx context.Context, from, to *rendezvous.Node, addrs []ma.Multiaddr, n int) (int64, error) {
	for _, c := range from.Host().Network().ConnsToPeer(to.ID()) {
		c.Close()
	}
	// Only the relay addresses: identify told from the peer's own.
	from.Host().Peerstore().ClearAddrs(to.ID())
	c, _, err := relay.Dial(ctx, from.Host(), to.ID(), nil, addrs)
	if err != nil {
		return 0, err
	}
	if !c.Stat().Limited {
		return 0, errors.New("the connection is not relayed")
	}
	s, err := from.Host().NewStream(network.WithAllowLimitedConn(ctx, "test"), to.ID(), sinkProtocol)
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 32<<10)
	var werr error
	for sent := 0; sent < n && werr == nil; sent += len(buf) {
		_, werr = s.Write(buf)
	}
	if werr == nil {
		werr = s.CloseWrite()
	}
	var got [8]byte
	if _, err := io.ReadFull(s, got[:]); err != nil {
		s.Reset()
		return 0, errors.Join(werr, err)
	}
	s.Close()
	var v int64
	for _, b := range got {
		v = v<<8 | int64(b)
	}
	return v, werr
}

// TestDataRelay: a public node that volunteers as a data relay offers its
// caps in its record and is the relay a NATed peer reserves first; a
// relayed connection through it carries a megabyte, where one through a
// relay sized for coordination is cut after 128 KiB.
func TestDataRelay(t *testing.T) {
	ctx := testContext(t, 90*time.Second)
	tn := newNetwork(t, ctx, testnet.Config{Public: 3})
	caps := dht.DataRelay{Duration: 10 * time.Minute, Data: 4 << 20, Circuits: 4}
	d, err := tn.AddNode(ctx, rendezvous.ReachabilityPublic, rendezvous.WithDataRelay(caps))
	if err != nil {
		t.Fatal(err)
	}
	// No hole punch may make the connections direct.
	b, err := tn.AddNode(ctx, rendezvous.ReachabilityPrivate, rendezvous.WithoutHolePunching(), rendezvous.WithoutDCUtR())
	if err != nil {
		t.Fatal(err)
	}
	b.Host().SetStreamHandler(sinkProtocol, func(s network.Stream) {
		n, _ := io.Copy(io.Discard, s)
		var out [8]byte
		for i := range out {
			out[7-i] = byte(n >> (8 * i))
		}
		s.Write(out[:])
		s.Close()
	})
	a, err := tn.AddNode(ctx, rendezvous.ReachabilityPrivate, rendezvous.WithoutHolePunching(), rendezvous.WithoutDCUtR())
	if err != nil {
		t.Fatal(err)
	}
	drec, err := a.Lookup(ctx, d.ID())
	if err != nil {
		t.Fatal(err)
	}
	if drec.DataRelay != caps {
		t.Fatalf("the data relay's record offers %+v, want %+v", drec.DataRelay, caps)
	}
	// b comes to hold its reservations with one on the data relay: its
	// first ones may come before it identified the data relay, which then
	// takes the place of one of them.
	published(t, ctx, b, func(ps *rendezvous.PublishStatus) bool {
		var held []string
		for _, ra := range ps.RelayAddrs {
			held = append(held, relay.RelayOf(ma.StringCast(ra)).String())
		}
		return len(held) == relay.DefaultReservations && slices.Contains(held, d.ID().String())
	})
	rec, err := a.Lookup(ctx, b.ID())
	if err != nil {
		t.Fatal(err)
	}
	relays := relayIDs(t, rec.RelayAddrs)
	if !slices.Contains(relays, d.ID()) {
		t.Fatalf("b's record names relays %v, not the data relay %s", relays, d.ID())
	}
	var data, other []ma.Multiaddr
	for _, ra := range rec.RelayAddrs {
		if relay.RelayOf(ra) == d.ID() {
			data = append(data, ra)
		} else {
			other = append(other, ra)
		}
	}
	if got := relay.DataRelayAddrs(a.Host(), rec.RelayAddrs); len(got) != len(data) {
		t.Fatalf("a tells data relay addresses %v, want %v", got, data)
	}
	const size = 1 << 20
	if got, err := sendThrough(ctx, a, b, data, size); err != nil || got != size {
		t.Fatalf("through the data relay: %d bytes arrived, %v", got, err)
	}
	if len(other) > 0 {
		got, err := sendThrough(ctx, a, b, other, size)
		if err == nil && got == size {
			t.Fatalf("a relay sized for coordination carried %d bytes", got)
		}
		t.Logf("through %s: %d bytes, then %v", relay.RelayOf(other[0]), got, err)
	}
}
