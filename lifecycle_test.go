package rendezvous_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/p2pos/rendezvous"
	"github.com/p2pos/rendezvous/dht"
	"github.com/p2pos/rendezvous/internal/testnet"
)

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
