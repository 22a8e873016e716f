package dht

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	logging "github.com/ipfs/go-log/v2"
	kaddht "github.com/libp2p/go-libp2p-kad-dht"
	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/p2pos/rendezvous/scope"
)

// namespace is the record namespace inside the DHT: keys are /p2pos/<peer-id>.
const namespace = "p2pos"

// peerstoreTempTTL is how long addresses learned during a lookup stay in the
// peerstore: libp2p's temporary TTL (2 minutes).
const peerstoreTempTTL = 2 * time.Minute

// ErrClosed is returned by calls made after Close.
var ErrClosed = fmt.Errorf("dht: closed: %w", net.ErrClosed)

// ErrNoPeers is returned when the routing table holds no peer to ask.
var ErrNoPeers = errors.New("dht: no peers to query (not connected to the network)")

// KadProtocol is the kad protocol ID this DHT speaks.
const KadProtocol = protocol.ID(ProtocolPrefix + "/kad/1.0.0")

// DHT is a node's view of the rendezvous DHT. It is safe for concurrent use.
type DHT struct {
	h         host.Host
	key       crypto.PrivKey
	kad       *kaddht.IpfsDHT
	pm        *pb.ProtocolMessenger
	validator *Validator
	cache     *recordCache
	s         settings
	log       *logging.ZapEventLogger
	store     *valueStore

	total counters

	mu          sync.Mutex
	holderAddrs map[peer.ID][]ma.Multiaddr // guarded by mu; the holders of our record

	closeOnce sync.Once
	closed    chan struct{}
	loopDone  chan struct{} // closed when refreshLoop returns
}

// New starts a DHT on h. key must be h's private key: the DHT signs the
// node's records with it. The DHT does not own h: Close leaves it running.
func New(h host.Host, key crypto.PrivKey, opts ...Option) (*DHT, error) {
	s := defaultSettings()
	for _, o := range opts {
		if err := o(&s); err != nil {
			return nil, err
		}
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	if h == nil || key == nil {
		return nil, errors.New("dht: nil host or key")
	}
	if id, err := peer.IDFromPrivateKey(key); err != nil || id != h.ID() {
		return nil, errors.New("dht: key is not the host's key")
	}
	log := s.log
	if log == nil {
		log = logging.Logger("rendezvous/dht")
	}
	v := NewValidator(WithValidatorScope(s.scope), WithValidatorClock(s.now))

	mode := kaddht.ModeAuto
	switch s.mode {
	case ModeServer:
		mode = kaddht.ModeServer
	case ModeClient:
		mode = kaddht.ModeClient
	}
	store, err := openValueStore(s.storeFile)
	if err != nil {
		return nil, err
	}
	sc := s.scope
	kopts := []kaddht.Option{
		kaddht.ValueDatastore(store),
		kaddht.ProtocolPrefix(ProtocolPrefix),
		kaddht.NamespacedValidator(namespace, v),
		kaddht.Mode(mode),
		kaddht.BucketSize(s.replication),
		kaddht.Concurrency(s.concurrency),
		kaddht.AddressFilter(sc.Filter),
		kaddht.QueryFilter(func(_ any, ai peer.AddrInfo) bool {
			return len(sc.Filter(ai.Addrs)) > 0
		}),
		kaddht.RoutingTableFilter(func(_ any, p peer.ID) bool {
			return inScopePeer(h, sc, p)
		}),
		kaddht.MaxRecordAge(s.ttl + DefaultMaxClockSkew),
	}
	if len(s.bootstrap) > 0 {
		kopts = append(kopts, kaddht.BootstrapPeers(s.bootstrap...))
	}
	// kad-dht's own refresh runs in client mode too; ours runs only while
	// the node serves (refreshLoop): a client that only waits to be reached
	// does not pay for a full routing table.
	kopts = append(kopts, kaddht.DisableAutoRefresh())
	kad, err := kaddht.New(h, kopts...)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("dht: %w", err)
	}
	d := &DHT{
		h:         h,
		key:       key,
		kad:       kad,
		validator: v,
		cache:     newRecordCache(s.now),
		s:         s,
		log:       log,
		store:     store,
		closed:    make(chan struct{}),
		loopDone:  make(chan struct{}),
	}
	pm, err := pb.NewProtocolMessenger(&countingSender{inner: kad.MessageSender(), total: &d.total})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("dht: %w", err), kad.Close(), store.Close())
	}
	d.pm = pm
	go d.refreshLoop()
	return d, nil
}

// refreshCheck is how often refreshLoop looks at the mode (a local check).
const refreshCheck = 15 * time.Second

// refreshLoop refreshes the routing table every refresh period while the
// DHT serves, and at once when it starts serving.
func (d *DHT) refreshLoop() {
	defer close(d.loopDone)
	if d.s.refreshPeriod <= 0 {
		return
	}
	t := time.NewTicker(min(refreshCheck, d.s.refreshPeriod))
	defer t.Stop()
	var last time.Time
	serving := false
	for {
		select {
		case <-d.closed:
			return
		case <-t.C:
		}
		now := time.Now()
		was := serving
		serving = d.Mode() == ModeServer
		if !serving || (was && now.Sub(last) < d.s.refreshPeriod) {
			continue
		}
		last = now
		select {
		case err := <-d.kad.RefreshRoutingTable():
			if err != nil {
				d.log.Debugw("routing table refresh", "error", err)
			}
		case <-d.closed:
			return
		}
	}
}

func inScopePeer(h host.Host, sc scope.Scope, p peer.ID) bool {
	for _, c := range h.Network().ConnsToPeer(p) {
		if sc.IsPublic(c.RemoteMultiaddr()) {
			return true
		}
	}
	return len(sc.Filter(h.Peerstore().Addrs(p))) > 0
}

// Close stops the DHT. It is idempotent. It does not close the host.
func (d *DHT) Close() error {
	var err error
	d.closeOnce.Do(func() {
		close(d.closed)
		<-d.loopDone
		err = errors.Join(d.kad.Close(), d.store.save(), d.store.Close())
	})
	return err
}

func (d *DHT) isClosed() bool {
	select {
	case <-d.closed:
		return true
	default:
		return false
	}
}

// Host returns the host the DHT runs on.
func (d *DHT) Host() host.Host { return d.h }

// Validator returns the record validator, configured with the DHT's scope.
func (d *DHT) Validator() *Validator { return d.validator }

// Mode reports whether the DHT currently serves (ModeServer) or not
// (ModeClient). kad-dht only tells its configured mode, so the answer comes
// from the host: a serving DHT has its protocol handler registered.
func (d *DHT) Mode() Mode {
	for _, p := range d.h.Mux().Protocols() {
		if p == KadProtocol {
			return ModeServer
		}
	}
	return ModeClient
}

// RoutingTablePeers returns the servers in the routing table.
func (d *DHT) RoutingTablePeers() []peer.ID { return d.kad.RoutingTable().ListPeers() }

// RoutingTableSize returns the number of servers in the routing table.
func (d *DHT) RoutingTableSize() int { return d.kad.RoutingTable().Size() }

// Refresh refreshes the routing table and waits for it to finish.
func (d *DHT) Refresh(ctx context.Context) error {
	select {
	case err := <-d.kad.RefreshRoutingTable():
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stats counts DHT requests this node sent and their bytes (the kad protocol
// messages with their length prefixes; not transport overhead).
type Stats struct {
	RPCs          int64
	BytesSent     int64
	BytesReceived int64
}

// Bytes is BytesSent + BytesReceived.
func (s Stats) Bytes() int64 { return s.BytesSent + s.BytesReceived }

// Sub returns s - o.
func (s Stats) Sub(o Stats) Stats {
	return Stats{s.RPCs - o.RPCs, s.BytesSent - o.BytesSent, s.BytesReceived - o.BytesReceived}
}

// Add returns s + o.
func (s Stats) Add(o Stats) Stats {
	return Stats{s.RPCs + o.RPCs, s.BytesSent + o.BytesSent, s.BytesReceived + o.BytesReceived}
}

// TotalStats returns what this node's own lookups, publishes and
// advertisements cost since start (not kad-dht's own routing table upkeep).
func (d *DHT) TotalStats() Stats { return d.total.load() }

type counters struct {
	rpcs, sent, recv atomic.Int64
}

func (c *counters) load() Stats {
	return Stats{c.rpcs.Load(), c.sent.Load(), c.recv.Load()}
}

func (c *counters) add(sent, recv int) {
	c.rpcs.Add(1)
	c.sent.Add(int64(sent))
	c.recv.Add(int64(recv))
}

type statsKey struct{}

// withStats returns a context whose DHT requests are also counted in c.
func withStats(ctx context.Context, c *counters) context.Context {
	return context.WithValue(ctx, statsKey{}, c)
}

// countingSender counts requests and their sizes, in total and per operation.
type countingSender struct {
	inner pb.MessageSender
	total *counters
}

func msgSize(m *pb.Message) int {
	if m == nil {
		return 0
	}
	n := proto.Size(m)
	return n + protowire.SizeVarint(uint64(n))
}

func (c *countingSender) count(ctx context.Context, sent, recv int) {
	c.total.add(sent, recv)
	if op, ok := ctx.Value(statsKey{}).(*counters); ok {
		op.add(sent, recv)
	}
}

func (c *countingSender) SendRequest(ctx context.Context, p peer.ID, m *pb.Message) (*pb.Message, error) {
	resp, err := c.inner.SendRequest(ctx, p, m)
	c.count(ctx, msgSize(m), msgSize(resp))
	return resp, err
}

func (c *countingSender) SendMessage(ctx context.Context, p peer.ID, m *pb.Message) error {
	err := c.inner.SendMessage(ctx, p, m)
	c.count(ctx, msgSize(m), 0)
	return err
}

// addAddrs remembers in-scope addresses of peers learned from responses, for
// the duration of a lookup.
func (d *DHT) addAddrs(ai *peer.AddrInfo) []ma.Multiaddr {
	addrs := d.s.scope.Filter(ai.Addrs)
	if len(addrs) > 0 && d.h.Network().Connectedness(ai.ID) != network.Connected {
		d.h.Peerstore().AddAddrs(ai.ID, addrs, peerstoreTempTTL)
	}
	return addrs
}
