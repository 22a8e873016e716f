package rendezvous_test

import (
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"go.uber.org/goleak"

	"github.com/p2pos/rendezvous"
	"github.com/p2pos/rendezvous/internal/testnet"
	"github.com/p2pos/rendezvous/relay"
)

// verifyNoLeaks fails the test if goroutines started after ignore are still
// running. goleak retries for a while, so goroutines on their way out are
// given time to end. No process-wide goroutine needs ignoring: go-libp2p,
// quic-go and kad-dht stop everything they start when their host closes.
func verifyNoLeaks(t *testing.T, ignore goleak.Option) {
	t.Helper()
	goleak.VerifyNone(t, ignore)
}

// leakTest gives the test the process to itself: the shared network, whose
// goroutines come and go, is closed first.
func leakTest(t *testing.T) goleak.Option {
	t.Helper()
	if err := closeSharedNetwork(); err != nil {
		t.Fatalf("closing the shared network: %v", err)
	}
	return goleak.IgnoreCurrent()
}

func TestNetworkLeavesNoGoroutines(t *testing.T) {
	ignore := leakTest(t)
	ctx := testContext(t, 60*time.Second)
	n, err := testnet.New(ctx, testnet.Config{Public: 4, Private: 4})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			n.Close()
		}
	}()
	a, b := n.Private[0], n.Private[1]
	if _, err := a.Lookup(ctx, b.ID()); err != nil {
		t.Fatalf("lookup: %v", err)
	}
	c, err := a.Connect(ctx, b.ID())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	// Loopback has no NAT: the punch one of b's relays coordinates wins
	// over the relay, and its goroutines must end too.
	if c.Path.Kind != relay.PathHolePunched {
		t.Errorf("path %v, want hole-punched", c.Path.Kind)
	}
	if err := b.Advertise(ctx, "leak-room"); err != nil {
		t.Fatalf("advertise: %v", err)
	}
	recs, err := a.FindPeers(ctx, "leak-room", 0)
	if err != nil || len(recs) != 1 {
		t.Fatalf("find peers: %d records, %v", len(recs), err)
	}
	closed = true
	if err := n.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	verifyNoLeaks(t, ignore)
}

func TestBootstrapUnreachable(t *testing.T) {
	ignore := leakTest(t)
	ctx := testContext(t, 30*time.Second)

	// A port nothing listens on.
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	boot := peer.AddrInfo{ID: randomPeerID(t), Addrs: []ma.Multiaddr{
		ma.StringCast("/ip4/127.0.0.1/tcp/" + strconv.Itoa(port)),
		ma.StringCast("/ip4/127.0.0.1/udp/" + strconv.Itoa(port) + "/quic-v1"),
	}}

	const timeout = 2 * time.Second
	start := time.Now()
	n, err := rendezvous.New(ctx, append(testnet.BaseOptions(testnet.QUIC),
		rendezvous.WithReachability(rendezvous.ReachabilityPrivate),
		rendezvous.WithBootstrap(boot),
		rendezvous.WithBootstrapTimeout(timeout))...)
	took := time.Since(start)
	if n != nil {
		n.Close()
		t.Fatal("New returned a node")
	}
	t.Logf("New failed after %v: %v", took, err)
	if !errors.Is(err, rendezvous.ErrBootstrap) {
		t.Errorf("error %v does not match ErrBootstrap", err)
	}
	var be *rendezvous.BootstrapError
	if !errors.As(err, &be) {
		t.Fatalf("error %v is not a *BootstrapError", err)
	}
	if _, ok := be.Errs[boot.ID]; !ok || len(be.Errs) != 1 {
		t.Errorf("BootstrapError.Errs = %v, want one error for %s", be.Errs, boot.ID)
	}
	if took > timeout+5*time.Second {
		t.Errorf("New took %v with a bootstrap timeout of %v", took, timeout)
	}
	verifyNoLeaks(t, ignore)
}
