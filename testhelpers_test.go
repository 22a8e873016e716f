package rendezvous_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	"github.com/p2pos/rendezvous"
	"github.com/p2pos/rendezvous/dht"
	"github.com/p2pos/rendezvous/internal/testnet"
	"github.com/p2pos/rendezvous/relay"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if err := closeSharedNetwork(); err != nil {
		fmt.Fprintln(os.Stderr, "closing the shared network:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// The shared network serves every test that only reads it: it is built on
// first use and closed by TestMain, or earlier by a test that needs the
// process to itself (the goroutine-leak tests).
var shared struct {
	mu  sync.Mutex
	net *testnet.Network // guarded by mu
	err error            // guarded by mu: why building it failed
}

const (
	sharedPublic  = 8
	sharedPrivate = 16
)

// sharedNetwork returns the shared network of 8 public and 16 private nodes,
// building it if needed. Tests must not change it: no closing nodes, no new
// listen addresses, no dropped connections to relays.
func sharedNetwork(t *testing.T) *testnet.Network {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.err != nil {
		t.Fatalf("shared network: %v", shared.err)
	}
	if shared.net == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		start := time.Now()
		// Loopback has no NAT: a punch would succeed where the tests of
		// this network want the relay's path.
		n, err := testnet.New(ctx, testnet.Config{Public: sharedPublic, Private: sharedPrivate,
			Options: []rendezvous.Option{rendezvous.WithoutHolePunching()}})
		if err != nil {
			shared.err = err
			t.Fatalf("shared network: %v", err)
		}
		// Private nodes may publish with one relay before they hold all
		// their reservations: wait for the network to settle, so that no
		// record changes while tests read it.
		for _, p := range n.Private {
			err := testnet.WaitStatus(ctx, p, func(st rendezvous.Status) bool {
				ps := st.Publish
				return ps != nil && ps.Error == "" && len(ps.RelayAddrs) == relay.DefaultReservations
			})
			if err != nil {
				shared.err = errors.Join(err, n.Close())
				t.Fatalf("shared network: %v", shared.err)
			}
		}
		t.Logf("shared network (%d public, %d private) up in %v", sharedPublic, sharedPrivate, time.Since(start))
		shared.net = n
	}
	return shared.net
}

// closeSharedNetwork closes the shared network if it runs.
func closeSharedNetwork() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.net == nil {
		return nil
	}
	err := shared.net.Close()
	shared.net = nil
	return err
}

// testContext returns a context that ends after d or when the test ends.
func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// newNetwork starts a network of its own for a test that changes it, and
// closes it when the test ends.
func newNetwork(t *testing.T, ctx context.Context, cfg testnet.Config) *testnet.Network {
	t.Helper()
	start := time.Now()
	n, err := testnet.New(ctx, cfg)
	if err != nil {
		t.Fatalf("network: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("closing network: %v", err)
		}
	})
	t.Logf("network (%d public, %d private) up in %v", cfg.Public, cfg.Private, time.Since(start))
	return n
}

// published waits until node's latest publish succeeded and cond holds for
// it, and returns that publish.
func published(t *testing.T, ctx context.Context, node *rendezvous.Node, cond func(*rendezvous.PublishStatus) bool) *rendezvous.PublishStatus {
	t.Helper()
	var got *rendezvous.PublishStatus
	err := testnet.WaitStatus(ctx, node, func(st rendezvous.Status) bool {
		p := st.Publish
		if p != nil && p.Error == "" && (cond == nil || cond(p)) {
			got = p
			return true
		}
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// relayIDs returns the relays of the relay addresses.
func relayIDs(t *testing.T, addrs []ma.Multiaddr) []peer.ID {
	t.Helper()
	out := make([]peer.ID, 0, len(addrs))
	for _, a := range addrs {
		id := relay.RelayOf(a)
		if id == "" {
			t.Errorf("relay address %s names no relay", a)
			continue
		}
		out = append(out, id)
	}
	return out
}

// statusRelays returns the relays a node holds reservations on.
func statusRelays(st rendezvous.Status) []string {
	out := make([]string, 0, len(st.Relays))
	for _, r := range st.Relays {
		out = append(out, r.Relay)
	}
	return out
}

// publishRelays returns the relays named by a publish's relay addresses.
func publishRelays(p *rendezvous.PublishStatus) []string {
	var out []string
	for _, s := range p.RelayAddrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			continue
		}
		if id := relay.RelayOf(a); id != "" {
			out = append(out, id.String())
		}
	}
	slices.Sort(out)
	return out
}

func hasAddr(addrs []ma.Multiaddr, want ma.Multiaddr) bool {
	return slices.ContainsFunc(addrs, want.Equal)
}

// kadClient speaks the DHT's kad protocol over plain libp2p streams, one
// request per stream, so that a test can send what a well-behaved node never
// sends and read exactly what a server stores.
type kadClient struct {
	h  host.Host
	pm *pb.ProtocolMessenger
}

func newKadClient(t *testing.T, h host.Host) *kadClient {
	t.Helper()
	pm, err := pb.NewProtocolMessenger(kadSender{h})
	if err != nil {
		t.Fatal(err)
	}
	return &kadClient{h: h, pm: pm}
}

// connect makes sure the client can reach server.
func (c *kadClient) connect(ctx context.Context, server *rendezvous.Node) error {
	return c.h.Connect(ctx, peer.AddrInfo{ID: server.ID(), Addrs: server.Host().Network().ListenAddresses()})
}

// get returns the raw value server holds under id's record key, nil if it
// holds none.
func (c *kadClient) get(ctx context.Context, server *rendezvous.Node, id peer.ID) ([]byte, error) {
	if err := c.connect(ctx, server); err != nil {
		return nil, err
	}
	rec, _, err := c.pm.GetValue(ctx, server.ID(), dht.RecordKey(id))
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, nil
	}
	return rec.GetValue(), nil
}

// put asks server to store value under id's record key.
func (c *kadClient) put(ctx context.Context, server *rendezvous.Node, id peer.ID, value []byte) error {
	if err := c.connect(ctx, server); err != nil {
		return err
	}
	return c.pm.PutValue(ctx, server.ID(), record.MakePutRecord(dht.RecordKey(id), value))
}

// kadSender implements pb.MessageSender with varint-length-delimited
// protobuf messages on dht.KadProtocol streams.
type kadSender struct{ h host.Host }

func (s kadSender) SendRequest(ctx context.Context, p peer.ID, m *pb.Message) (*pb.Message, error) {
	st, err := s.open(ctx, p)
	if err != nil {
		return nil, err
	}
	if err := writeDelimited(st, m); err != nil {
		st.Reset()
		return nil, err
	}
	if err := st.CloseWrite(); err != nil {
		st.Reset()
		return nil, err
	}
	resp := new(pb.Message)
	if err := readDelimited(bufio.NewReader(st), resp); err != nil {
		st.Reset()
		return nil, err
	}
	return resp, st.Close()
}

func (s kadSender) SendMessage(ctx context.Context, p peer.ID, m *pb.Message) error {
	st, err := s.open(ctx, p)
	if err != nil {
		return err
	}
	if err := writeDelimited(st, m); err != nil {
		st.Reset()
		return err
	}
	return st.Close()
}

func (s kadSender) open(ctx context.Context, p peer.ID) (network.Stream, error) {
	st, err := s.h.NewStream(ctx, p, dht.KadProtocol)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		if err := st.SetDeadline(dl); err != nil {
			st.Reset()
			return nil, err
		}
	}
	return st, nil
}

func writeDelimited(w io.Writer, m proto.Message) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	_, err = w.Write(append(binary.AppendUvarint(nil, uint64(len(b))), b...))
	return err
}

func readDelimited(r *bufio.Reader, m proto.Message) error {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return err
	}
	if n > network.MessageSizeMax {
		return errors.New("kad message too large")
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	return proto.Unmarshal(b, m)
}
