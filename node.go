package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	logging "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	circuit "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	noise "github.com/libp2p/go-libp2p/p2p/security/noise"
	tls "github.com/libp2p/go-libp2p/p2p/security/tls"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/p2pos/rendezvous/dht"
	"github.com/p2pos/rendezvous/nat"
	"github.com/p2pos/rendezvous/nat/keepalive"
	"github.com/p2pos/rendezvous/nat/portmap"
	"github.com/p2pos/rendezvous/relay"
)

// ErrClosed is returned by calls on a closed Node. It matches net.ErrClosed.
var ErrClosed = fmt.Errorf("rendezvous: node closed: %w", net.ErrClosed)

// UserAgent is the libp2p agent version nodes announce.
const UserAgent = "p2pos-rendezvous/0.1"

// Node is a peer of the rendezvous network. Create it with New; it runs until
// Close. All methods are safe for concurrent use.
type Node struct {
	s   settings
	log *logging.ZapEventLogger

	h         host.Host
	d         *dht.DHT
	publisher atomic.Pointer[dht.Publisher]
	service   *relay.Service
	keeper    *dht.KeepService
	reserver  *relay.Reserver
	checker   *nat.Checker // answers dial-backs; checks our own unless forced
	probes    *nat.ProbeService
	holds     *nat.HoldService
	observed  *nat.Observed    // the addresses peers see us at
	punch     *relay.HolePunch // DCUtR
	punchSvc  *relay.PunchService
	quic      relay.SharedQUIC
	metrics   *metrics          // nil without a registerer
	keepers   []*portmap.Keeper // port mappings, in auto mode
	tcp       *keepalive.Transport
	reachEmit event.Emitter

	events *broadcaster

	started time.Time
	ctx     context.Context // canceled by Close
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu           sync.Mutex
	reach        Reachability                 // guarded by mu
	advertised   map[string]struct{}          // guarded by mu
	bootErrs     []error                      // guarded by mu
	lastPublish  *PublishStatus               // guarded by mu
	mapped       map[string]ma.Multiaddr      // guarded by mu; transport -> mapped address
	nat          *NATStatus                   // guarded by mu; nil before a survey
	natInfo      dht.NATInfo                  // guarded by mu; what the record says of the NAT
	udpBlocked   bool                         // guarded by mu; the survey found UDP blocked
	surveyCancel context.CancelFunc           // guarded by mu
	keep         KeepAliveStatus              // guarded by mu; counters of tend
	tcpLower     time.Duration                // guarded by mu; proven TCP mapping lifetime
	tcpUpper     time.Duration                // guarded by mu; 0: no expiry seen
	noTCP        map[peer.ID]time.Time        // guarded by mu; relays whose TCP dial failed, when
	portMaps     map[string]PortMappingStatus // guarded by mu; by transport
	tcpStarted   bool                         // guarded by mu; TCP lifetime measured since the last reset
	tcpCancel    context.CancelFunc           // guarded by mu; stops the TCP lifetime measurement
	upgrades     map[peer.ID]*upgrading       // guarded by mu; relayed connections being made direct
	services     map[string]bool              // guarded by mu; services handled (Handle)

	closeOnce sync.Once
	closeErr  error
}

// New starts a node: a libp2p host, the DHT, the relay service or
// reservations as the node's reachability calls for, and the publisher of its
// record. When bootstrap peers are given, New connects to them before it
// returns and fails with a *BootstrapError if none can be reached within the
// bootstrap timeout (or ctx). On any error, everything started is stopped.
func New(ctx context.Context, opts ...Option) (_ *Node, err error) {
	s := defaultSettings()
	for _, o := range opts {
		if err := o(&s); err != nil {
			return nil, err
		}
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	if s.dataDir != "" {
		if err := os.MkdirAll(s.dataDir, 0o700); err != nil {
			return nil, fmt.Errorf("rendezvous: data dir: %w", err)
		}
		if s.key == nil && s.keyFile == "" {
			s.keyFile = filepath.Join(s.dataDir, "identity.key")
		}
	}
	key := s.key
	if s.keyFile != "" {
		if key, err = LoadOrCreateKey(s.keyFile); err != nil {
			return nil, err
		}
	} else if key == nil {
		if key, _, err = crypto.GenerateEd25519Key(nil); err != nil {
			return nil, err
		}
	}
	log := s.log
	if log == nil {
		log = logging.Logger("rendezvous")
	}

	nctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		s:          s,
		log:        log,
		events:     newBroadcaster(),
		ctx:        nctx,
		cancel:     cancel,
		reach:      s.reach,
		started:    time.Now(),
		advertised: map[string]struct{}{},
		noTCP:      map[peer.ID]time.Time{},
		upgrades:   map[peer.ID]*upgrading{},
		services:   map[string]bool{},
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, n.Close())
		}
	}()

	rm, err := newResourceManager()
	if err != nil {
		return nil, fmt.Errorf("rendezvous: resource manager: %w", err)
	}
	if n.metrics, err = newMetrics(s.registerer); err != nil {
		rm.Close()
		return nil, fmt.Errorf("rendezvous: metrics: %w", err)
	}
	if n.h, err = libp2p.New(append(n.hostOptions(key), libp2p.ResourceManager(rm))...); err != nil {
		rm.Close()
		return nil, fmt.Errorf("rendezvous: start host: %w", err)
	}

	// Every node answers dial-back requests; a node whose reachability is
	// not forced also finds its own that way, from checker.Start on. The
	// verdict is put on the host's event bus too, where kad-dht follows it
	// between client and server mode. The checker comes before anything
	// that connects to peers: AutoNAT v2 learns its servers from connection
	// events only.
	copts := []nat.Option{nat.WithScope(s.scope), nat.WithLogger(s.log), nat.WithExtraAddrs(n.mappedAddrs)}
	if s.reach == ReachabilityUnknown {
		if n.reachEmit, err = n.h.EventBus().Emitter(new(event.EvtLocalReachabilityChanged)); err != nil {
			return nil, err
		}
		copts = append(copts, nat.WithOnChange(n.verdict))
	} else {
		copts = append(copts, nat.ServeOnly())
	}
	if n.checker, err = nat.NewChecker(n.h, copts...); err != nil {
		return nil, err
	}
	// Only the DHT's servers count as observers: they are public, and
	// stay; a NATed peer connecting for a punch would change the record.
	servesDHT := func(ps []protocol.ID) bool { return slices.Contains(ps, dht.KadProtocol) }
	if n.observed, err = nat.NewObserved(n.h, s.scope, nat.TrustObservers(servesDHT)); err != nil {
		return nil, err
	}
	if !s.noHolePunch && !s.noDCUtR {
		if n.punch, err = relay.NewHolePunch(n.h, s.scope, n.punchAddrs, s.registerer); err != nil {
			return nil, err
		}
	}
	n.punchSvc = relay.NewPunchService(n.h, s.scope, n.punchAddrs, s.log, relay.WithPunchObserver(n.metrics.punch), relay.WithSprayObserver(n.metrics.sprayed),
		relay.WithPunchNAT(n.ownPunchNAT), relay.WithSharedUDP(n.quic.PacketConn))
	n.punchSvc.SetPunching(!s.noHolePunch)

	dmode := dht.ModeAuto
	switch s.reach {
	case ReachabilityPublic:
		dmode = dht.ModeServer
	case ReachabilityPrivate:
		dmode = dht.ModeClient
	}
	dopts := []dht.Option{
		dht.WithScope(s.scope),
		dht.WithMode(dmode),
		dht.WithBootstrapPeers(s.bootstrap...),
		dht.WithRecordTTL(s.recordTTL),
		dht.WithRepublishDebounce(s.debounce),
		dht.WithLogger(s.log),
	}
	if s.refreshSet {
		dopts = append(dopts, dht.WithRefreshPeriod(s.refreshPeriod))
	}
	switch {
	case s.dataDir != "":
		dopts = append(dopts, dht.WithSeqFile(filepath.Join(s.dataDir, "record.seq")),
			dht.WithStoreFile(filepath.Join(s.dataDir, "records.store")))
	case s.keyFile != "":
		dopts = append(dopts, dht.WithSeqFile(s.keyFile+".seq"))
	}
	if n.d, err = dht.New(n.h, key, dopts...); err != nil {
		return nil, err
	}

	sopts := []relay.ServiceOption{relay.WithServiceScope(s.scope), relay.WithServiceMetrics(s.registerer)}
	if s.relayResources != nil {
		sopts = append(sopts, relay.WithResources(*s.relayResources))
	}
	if d := s.dataRelay; !d.IsZero() {
		sopts = append(sopts, relay.WithDataRelay(circuit.RelayLimit{Duration: d.Duration, Data: d.Data}, d.Circuits))
	}
	n.service = relay.NewService(n.h, sopts...)
	n.keeper = n.d.NewKeepService(nil)
	n.holds = nat.NewHoldService(n.h, s.log)
	n.probes = nat.NewProbeService(n.h, nat.WithProbeScope(s.scope), nat.WithProbeLogger(s.log))
	if n.reserver, err = relay.NewReserver(n.h, n.relayCandidates,
		relay.WithScope(s.scope),
		relay.WithReservations(s.reservations),
		relay.WithLogger(s.log),
		relay.WithOnChange(n.relaysChanged),
		relay.WithConnect(n.connectStanding),
	); err != nil {
		return nil, err
	}

	n.checker.Start()
	if s.reach == ReachabilityUnknown && !s.noPortMap {
		if err := n.startPortMapping(); err != nil {
			return nil, err
		}
	}

	sub, err := n.h.EventBus().Subscribe([]any{new(event.EvtLocalAddressesUpdated), new(event.EvtPeerConnectednessChanged)})
	if err != nil {
		return nil, err
	}
	n.applyReachability()
	n.wg.Add(2)
	go n.watch(sub)
	go n.tend()

	if err := n.bootstrap(ctx); err != nil {
		return nil, err
	}
	if !s.noPublish {
		pub, err := n.d.NewPublisher(n.recordContent, n.published, dht.WithKeepers(n.relayIDs))
		if err != nil {
			return nil, err
		}
		n.publisher.Store(pub)
	}
	n.wg.Add(1)
	go n.readvertise()
	return n, nil
}

func (n *Node) hostOptions(key crypto.PrivKey) []libp2p.Option {
	s := n.s
	listen := s.listen
	if len(listen) == 0 {
		for _, a := range DefaultListenAddrs() {
			listen = append(listen, ma.StringCast(a))
		}
	}
	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.ListenAddrs(listen...),
		// QUIC, whose socket a spray punch's probes leave from.
		n.quic.Transport(),
		// TCP with kernel keep-alive under our control, and yamux without a
		// keep-alive of its own: see package nat/keepalive.
		libp2p.Transport(keepalive.Constructor(func(t *keepalive.Transport) { n.tcp = t }, keepalive.WithLogger(s.log))),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Security(tls.ID, tls.New),
		libp2p.Muxer(yamux.ID, keepalive.Muxer()),
		libp2p.UserAgent(UserAgent),
		libp2p.EnableRelay(),
		// Direct and relay addresses are dialed together: the relay path
		// is there for peers that cannot be reached directly.
		libp2p.SwarmOpts(swarm.WithDialRanker(swarm.NoDelayDialRanker)),
		// The host's addresses are those of its interfaces and those the
		// gateway mapped for it. Addresses peers observe behind a NAT are
		// left out: the node's own tracker (nat.Observed) hands them to
		// hole punches and the record, and libp2p's would change the
		// host's addresses (and push identify to every peer) whenever a
		// fourth peer saw one.
		libp2p.AddrsFactory(func(addrs []ma.Multiaddr) []ma.Multiaddr {
			local := map[string]bool{}
			for _, ip := range nat.InterfaceIPs() {
				local[ip] = true
			}
			out := make([]ma.Multiaddr, 0, len(addrs))
			for _, a := range addrs {
				ip, err := manet.ToIP(a)
				if relay.IsRelayed(a) || err != nil || local[ip.String()] {
					out = append(out, a)
				}
			}
			return append(out, n.mappedAddrs()...)
		}),
	}
	switch s.reach {
	case ReachabilityPublic:
		opts = append(opts, libp2p.ForceReachabilityPublic())
	case ReachabilityPrivate:
		opts = append(opts, libp2p.ForceReachabilityPrivate())
	}
	if s.registerer != nil {
		opts = append(opts, libp2p.PrometheusRegisterer(s.registerer))
	} else {
		opts = append(opts, libp2p.DisableMetrics())
	}
	return append(opts, s.libp2pOpts...)
}

// BootstrapError is returned by New when no bootstrap peer could be reached.
type BootstrapError struct {
	// Errs holds one error per bootstrap peer.
	Errs map[peer.ID]error
}

// ErrBootstrap is matched by every *BootstrapError.
var ErrBootstrap = errors.New("rendezvous: no bootstrap peer reachable")

func (e *BootstrapError) Error() string {
	msg := ErrBootstrap.Error()
	for id, err := range e.Errs {
		msg += fmt.Sprintf("; %s: %v", id, err)
	}
	return msg
}

// Is matches ErrBootstrap.
func (e *BootstrapError) Is(target error) bool { return target == ErrBootstrap }

func (n *Node) bootstrap(ctx context.Context) error {
	if len(n.s.bootstrap) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, n.s.bootstrapTimeout)
	defer cancel()
	var mu sync.Mutex
	errs := map[peer.ID]error{}
	var wg sync.WaitGroup
	// The node itself is skipped, so a list shared by all bootstrap nodes
	// can name them all; a peer listed twice is dialed once.
	seen := map[peer.ID]bool{n.h.ID(): true}
	attempted := 0
	for _, ai := range n.s.bootstrap {
		if seen[ai.ID] {
			continue
		}
		seen[ai.ID] = true
		attempted++
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.h.Connect(ctx, ai); err != nil {
				mu.Lock()
				errs[ai.ID] = err
				mu.Unlock()
				return
			}
			n.waitIdentified(ctx, ai.ID)
		}()
	}
	wg.Wait()
	n.mu.Lock()
	for _, e := range errs {
		n.bootErrs = append(n.bootErrs, e)
	}
	n.mu.Unlock()
	if attempted > 0 && len(errs) == attempted {
		return &BootstrapError{Errs: errs}
	}
	for id, e := range errs {
		n.log.Warnw("bootstrap peer unreachable", "peer", id, "error", e)
	}
	return nil
}

// waitIdentified waits until identify has run on the connections to p, so
// that its protocols (is it a DHT server?) are known. Connect does not wait
// when a connection was already being made, by kad-dht's own bootstrap say.
func (n *Node) waitIdentified(ctx context.Context, p peer.ID) {
	ids, ok := n.h.(interface{ IDService() identify.IDService })
	if !ok {
		return
	}
	for _, c := range n.h.Network().ConnsToPeer(p) {
		select {
		case <-ids.IDService().IdentifyWait(c):
		case <-ctx.Done():
			return
		}
	}
}

// watch republishes when the host's addresses change. Reachability
// changes come from the checker, through verdict.
func (n *Node) watch(sub event.Subscription) {
	defer n.wg.Done()
	defer sub.Close()
	ifaces := nat.InterfaceIPs()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.observed.Changed():
			// The record of a node behind an endpoint-independent NAT
			// carries the addresses its peers observe.
			n.triggerPublish()
		case ev, ok := <-sub.Out():
			if !ok {
				return
			}
			switch ev := ev.(type) {
			case event.EvtPeerConnectednessChanged:
				n.watchPaths(ev.Connectedness, ev.Peer)
			case event.EvtLocalAddressesUpdated:
				n.triggerPublish()
				// A new interface address is a new network: what was
				// measured of the old one's NAT no longer holds.
				if now := nat.InterfaceIPs(); !slices.Equal(now, ifaces) {
					ifaces = now
					n.networkChanged()
					n.kickUpgrades()
				}
			}
		}
	}
}

// networkChanged measures the NAT again: a node that is not public surveys
// it and proves its TCP lifetime anew. The dial-back checker rechecks on
// the same event.
func (n *Node) networkChanged() {
	r := n.Reachability()
	if r == ReachabilityPublic {
		return
	}
	n.log.Infow("network changed; measuring the NAT again")
	if n.s.reach == ReachabilityUnknown {
		n.restartSurvey(r)
	}
	n.resetTCPMeasure()
}

// verdict takes the dial-back checker's conclusion.
func (n *Node) verdict(v nat.Verdict) {
	r := ReachabilityUnknown
	switch v.Reachability {
	case network.ReachabilityPublic:
		r = ReachabilityPublic
	case network.ReachabilityPrivate:
		r = ReachabilityPrivate
	}
	n.mu.Lock()
	changed := n.reach != r
	n.reach = r
	n.mu.Unlock()
	if !changed {
		return
	}
	n.log.Infow("reachability", "reachability", r, "confirmed", v.Confirmed)
	if err := n.reachEmit.Emit(event.EvtLocalReachabilityChanged{Reachability: v.Reachability}); err != nil {
		n.log.Warnw("reachability event", "error", err)
	}
	n.applyReachability()
	n.restartSurvey(r)
	n.resetTCPMeasure()
	n.emit(Event{Type: EventReachability, Reachability: r.String()})
	n.triggerPublish()
}

// applyReachability turns the relay service and reservations on or off.
func (n *Node) applyReachability() {
	public := n.Reachability() == ReachabilityPublic
	if err := n.service.SetEnabled(public); err != nil && !errors.Is(err, relay.ErrServiceClosed) {
		n.log.Warnw("relay service", "error", err)
	}
	n.keeper.SetEnabled(public)
	n.punchSvc.SetRelay(public)
	if err := n.holds.SetEnabled(public); err != nil && !errors.Is(err, net.ErrClosed) {
		n.log.Warnw("hold service", "error", err)
	}
	// A node whose reachability is not known yet does not reserve: it
	// would move its connections to relays over to TCP, and a dial-back
	// check with the only public peer it knows would lose that peer. tend
	// reserves for a node still unknown after unknownGrace.
	n.reserver.SetEnabled(n.Reachability() == ReachabilityPrivate && !n.s.noPublish)
	if err := n.probes.SetEnabled(public); err != nil && !errors.Is(err, net.ErrClosed) {
		n.log.Warnw("probe service", "error", err)
	}
}

// Close stops the node and everything it started, and waits for its
// goroutines. It is idempotent; later calls return the first call's result.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		// Stop our own goroutines first, then the parts they use. The
		// cancel happens under mu, so goOwned adds no goroutine after it.
		n.mu.Lock()
		n.cancel()
		n.mu.Unlock()
		n.wg.Wait()
		var errs []error
		for _, k := range n.keepers {
			errs = append(errs, k.Close())
		}
		if n.checker != nil {
			errs = append(errs, n.checker.Close())
		}
		if n.punch != nil {
			errs = append(errs, n.punch.Close())
		}
		if n.punchSvc != nil {
			errs = append(errs, n.punchSvc.Close())
		}
		if n.observed != nil {
			errs = append(errs, n.observed.Close())
		}
		if n.reachEmit != nil {
			errs = append(errs, n.reachEmit.Close())
		}
		if p := n.publisher.Load(); p != nil {
			errs = append(errs, p.Close())
		}
		if n.reserver != nil {
			errs = append(errs, n.reserver.Close())
		}
		if n.service != nil {
			errs = append(errs, n.service.Close())
		}
		if n.keeper != nil {
			errs = append(errs, n.keeper.Close())
		}
		if n.holds != nil {
			errs = append(errs, n.holds.Close())
		}
		if n.probes != nil {
			errs = append(errs, n.probes.Close())
		}
		if n.d != nil {
			errs = append(errs, n.d.Close())
		}
		if n.h != nil {
			errs = append(errs, n.h.Close())
		}
		n.events.close()
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

func (n *Node) closed() bool { return n.ctx.Err() != nil }

// goOwned runs f on a goroutine Close waits for; it returns false, without
// running f, once the node is closing.
func (n *Node) goOwned(f func()) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed() {
		return false
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
	return true
}

// ID returns the node's peer ID.
func (n *Node) ID() peer.ID { return n.h.ID() }

// Host returns the node's libp2p host, for protocols of the application's
// own. Closing it is the Node's job.
func (n *Node) Host() host.Host { return n.h }

// Addrs returns the node's listen addresses (all of them, in scope or not).
func (n *Node) Addrs() []ma.Multiaddr { return n.h.Addrs() }

// Reachability returns the node's current reachability: forced by an option,
// or as the network reports it.
func (n *Node) Reachability() Reachability {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.reach
}

// Ready is closed once the node's record has been published for the first
// time. It is not closed when the node closes first, nor while the node
// cannot publish (a first node waiting for peers): wait on it together with
// a context. A node WithoutPublishing is ready at once.
func (n *Node) Ready() <-chan struct{} {
	if p := n.publisher.Load(); p != nil {
		return p.Ready()
	}
	return closedChan
}

// closedChan is a closed channel.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// DHT returns the node's DHT, for lookups and statistics beyond the Node's
// own methods.
func (n *Node) DHT() *dht.DHT { return n.d }

// Lookup returns the verified record of id: from the cache while it is
// valid, else from the DHT. The error wraps dht.ErrNotFound when the network
// has no valid record for id, and the context's error on timeout.
func (n *Node) Lookup(ctx context.Context, id peer.ID) (*dht.Record, error) {
	if n.closed() {
		return nil, ErrClosed
	}
	res, err := n.d.Lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	return res.Record, nil
}

// Advertise announces that this node takes part in topic, and keeps
// announcing it until Unadvertise or Close.
func (n *Node) Advertise(ctx context.Context, topic string) error {
	if n.closed() {
		return ErrClosed
	}
	if _, err := n.d.Advertise(ctx, topic); err != nil {
		return err
	}
	n.mu.Lock()
	n.advertised[topic] = struct{}{}
	n.mu.Unlock()
	return nil
}

// Unadvertise stops renewing the announcement of topic. The announcement
// already stored expires on its own.
func (n *Node) Unadvertise(topic string) {
	n.mu.Lock()
	delete(n.advertised, topic)
	n.mu.Unlock()
}

// FindPeers returns up to limit peers (20 if limit <= 0) that advertised
// topic, each with its verified record. The node itself is not included.
func (n *Node) FindPeers(ctx context.Context, topic string, limit int) ([]*dht.Record, error) {
	if n.closed() {
		return nil, ErrClosed
	}
	return n.d.FindPeers(ctx, topic, limit)
}

// NewStream opens a stream to id on one of protos, connecting first if
// needed. Streams may run over a relayed connection.
func (n *Node) NewStream(ctx context.Context, id peer.ID, protos ...protocol.ID) (network.Stream, error) {
	if _, err := n.Connect(ctx, id); err != nil {
		return nil, err
	}
	return n.h.NewStream(network.WithAllowLimitedConn(ctx, "rendezvous"), id, protos...)
}

func addrStrings(as []ma.Multiaddr) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}
