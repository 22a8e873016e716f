package relay

import (
	"crypto/rand"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

func testID(t *testing.T) peer.ID {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestCircuitAddr(t *testing.T) {
	r := testID(t)
	base := ma.StringCast("/ip4/198.51.100.1/udp/4001/quic-v1")
	c, err := circuitAddr(base, r)
	if err != nil {
		t.Fatal(err)
	}
	want := "/ip4/198.51.100.1/udp/4001/quic-v1/p2p/" + r.String() + "/p2p-circuit"
	if c.String() != want {
		t.Fatalf("circuitAddr = %s, want %s", c, want)
	}
	if base.String() != "/ip4/198.51.100.1/udp/4001/quic-v1" {
		t.Fatalf("circuitAddr modified its input: %s", base)
	}
	if !IsRelayed(c) || IsRelayed(base) {
		t.Fatal("IsRelayed is wrong")
	}
	if got := RelayOf(c); got != r {
		t.Fatalf("RelayOf = %s, want %s", got, r)
	}
	target := testID(t)
	full := ma.StringCast(c.String() + "/p2p/" + target.String())
	if got := RelayOf(full); got != r {
		t.Fatalf("RelayOf(with target) = %s, want the relay %s", got, r)
	}
	if got := RelayOf(base); got != "" {
		t.Fatalf("RelayOf(direct) = %s, want none", got)
	}
}

func TestPathKindText(t *testing.T) {
	for k, want := range map[PathKind]string{PathDirect: "direct", PathRelayed: "relayed", 0: "unknown"} {
		b, err := k.MarshalText()
		if err != nil || string(b) != want {
			t.Errorf("%d: %q, %v; want %q", k, b, err, want)
		}
	}
}

func TestRelayAddrInfo(t *testing.T) {
	r := testID(t)
	base := ma.StringCast("/ip4/1.2.3.4/udp/4001/quic-v1")
	circuit := base.Encapsulate(ma.StringCast("/p2p/" + r.String() + "/p2p-circuit"))
	ai, ok := RelayAddrInfo(circuit)
	if !ok || ai.ID != r || len(ai.Addrs) != 1 || !ai.Addrs[0].Equal(base) {
		t.Fatalf("RelayAddrInfo(%s) = %v, %v", circuit, ai, ok)
	}
	if _, ok := RelayAddrInfo(base); ok {
		t.Error("a direct address has no relay")
	}
	if _, ok := RelayAddrInfo(ma.StringCast("/ip4/1.2.3.4/udp/4001/quic-v1/p2p-circuit")); ok {
		t.Error("a circuit without a relay ID")
	}
}
