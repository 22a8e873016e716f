package rendezvous

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	logging "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	circuit "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2pos/rendezvous/dht"
	"github.com/p2pos/rendezvous/nat/tcpprobe"
	"github.com/p2pos/rendezvous/relay"
	"github.com/p2pos/rendezvous/scope"
)

// Reachability says whether a node can be reached from the network.
type Reachability = dht.Reachability

// Reachability values.
const (
	ReachabilityUnknown = dht.ReachabilityUnknown
	ReachabilityPublic  = dht.ReachabilityPublic
	ReachabilityPrivate = dht.ReachabilityPrivate
)

// DefaultListenAddrs returns the addresses a node listens on when none are
// given: QUIC and TCP on every IPv4 and IPv6 interface, on ports the system
// picks.
func DefaultListenAddrs() []string {
	return []string{
		"/ip4/0.0.0.0/udp/0/quic-v1",
		"/ip4/0.0.0.0/tcp/0",
		"/ip6/::/udp/0/quic-v1",
		"/ip6/::/tcp/0",
	}
}

// maxReservations bounds WithReservations: every relay address takes room in
// the node's record.
const maxReservations = 8

// DefaultBootstrapTimeout bounds how long New waits for bootstrap peers.
const DefaultBootstrapTimeout = 15 * time.Second

type settings struct {
	key               crypto.PrivKey
	keyFile           string
	dataDir           string
	listen            []ma.Multiaddr
	bootstrap         []peer.AddrInfo
	bootstrapTimeout  time.Duration
	scope             scope.Scope
	scopeSet          bool
	reach             Reachability // forced; Unknown = follow the network
	recordTTL         time.Duration
	debounce          time.Duration
	refreshPeriod     time.Duration
	refreshSet        bool
	relayResources    *circuit.Resources
	dataRelay         dht.DataRelay
	reservations      int
	noPortMap         bool
	noHolePunch       bool
	noPublish         bool
	noNATSurvey       bool
	timeoutCandidates []time.Duration
	log               *logging.ZapEventLogger
	registerer        prometheus.Registerer
	libp2pOpts        []libp2p.Option
	tcpHolds          []time.Duration
	tendEvery         time.Duration // how often standing connections are tended
	reapAfter         time.Duration // idle time after which a DHT connection is closed
	upgradeFirst      time.Duration // first pause of a relayed connection's upgrade
	noDCUtR           bool          // tests: no DCUtR, punches through relays only
}

func defaultSettings() settings {
	return settings{
		bootstrapTimeout: DefaultBootstrapTimeout,
		scope:            scope.Internet(),
		recordTTL:        dht.DefaultRecordTTL,
		debounce:         dht.DefaultRepublishDebounce,
		reservations:     relay.DefaultReservations,
		tcpHolds:         tcpprobe.DefaultHolds(),
		tendEvery:        defaultTendEvery,
		reapAfter:        defaultReapAfter,
		upgradeFirst:     firstUpgrade,
	}
}

// WithTCPLifetimeHolds sets the idle durations a node that is not public
// holds TCP connections to a relay's hold server for, to prove how long its
// router keeps an idle TCP mapping (see KeepAliveStatus). None disables the
// measurement; the standing connections' keep-alive then follows the UDP
// lifetime. Default: tcpprobe.DefaultHolds() (2 min to 2 h).
func WithTCPLifetimeHolds(holds ...time.Duration) Option {
	return func(s *settings) error {
		for _, h := range holds {
			if h < time.Second {
				return fmt.Errorf("rendezvous: TCP hold %v shorter than a second", h)
			}
		}
		s.tcpHolds = holds
		return nil
	}
}

// withStandbyTiming sets how often standing connections are tended and how
// long a DHT connection may idle; tests shorten them.
func withStandbyTiming(tend, reap time.Duration) Option {
	return func(s *settings) error {
		if tend <= 0 || reap <= 0 {
			return errors.New("rendezvous: standby timing must be positive")
		}
		s.tendEvery, s.reapAfter = tend, reap
		return nil
	}
}

// withUpgradeTiming sets the first pause of a relayed connection's upgrade
// (tests).
func withUpgradeTiming(first time.Duration) Option {
	return func(s *settings) error {
		if first <= 0 {
			return errors.New("rendezvous: upgrade timing must be positive")
		}
		s.upgradeFirst = first
		return nil
	}
}

// withoutDCUtR runs no DCUtR, so that relayed connections become direct
// only by the node's own punches (tests).
func withoutDCUtR() Option {
	return func(s *settings) error { s.noDCUtR = true; return nil }
}

func (s *settings) validate() error {
	switch {
	case s.key != nil && s.keyFile != "":
		return errors.New("rendezvous: WithKey and WithKeyFile both given")
	case s.key != nil && s.key.Type() != crypto.Ed25519:
		return ErrKeyType
	case s.bootstrapTimeout <= 0:
		return errors.New("rendezvous: bootstrap timeout must be positive")
	case s.reservations < 0 || s.reservations > maxReservations:
		return fmt.Errorf("rendezvous: reservations must be between 0 and %d", maxReservations)
	}
	return nil
}

// Option configures a Node.
type Option func(*settings) error

// WithKey sets the node's identity. Default: a new key (an ephemeral node).
func WithKey(k crypto.PrivKey) Option {
	return func(s *settings) error { s.key = k; return nil }
}

// WithKeyFile loads the node's Ed25519 identity from path, or creates it there
// with mode 0600. A key file readable by group or others is refused. The
// record sequence number is kept next to it (path + ".seq") so that it grows
// across restarts.
func WithKeyFile(path string) Option {
	return func(s *settings) error { s.keyFile = path; return nil }
}

// WithDataDir keeps the node's state in dir (created with mode 0700 if
// missing): its identity key (identity.key, unless WithKey or WithKeyFile is
// given), its record sequence number, and the records it serves as a DHT
// server, so that a restarted node keeps serving them.
func WithDataDir(dir string) Option {
	return func(s *settings) error { s.dataDir = dir; return nil }
}

// WithListenAddrs sets the addresses to listen on. Default DefaultListenAddrs.
func WithListenAddrs(addrs ...ma.Multiaddr) Option {
	return func(s *settings) error {
		s.listen = append(s.listen, addrs...)
		return nil
	}
}

// WithListenAddrStrings is WithListenAddrs with string multiaddrs.
func WithListenAddrStrings(addrs ...string) Option {
	return func(s *settings) error {
		for _, a := range addrs {
			m, err := ma.NewMultiaddr(a)
			if err != nil {
				return fmt.Errorf("rendezvous: listen address %q: %w", a, err)
			}
			s.listen = append(s.listen, m)
		}
		return nil
	}
}

// WithBootstrap sets the peers to join the network through.
func WithBootstrap(peers ...peer.AddrInfo) Option {
	return func(s *settings) error {
		s.bootstrap = append(s.bootstrap, peers...)
		return nil
	}
}

// WithBootstrapTimeout bounds how long New tries to reach the bootstrap peers.
func WithBootstrapTimeout(d time.Duration) Option {
	return func(s *settings) error { s.bootstrapTimeout = d; return nil }
}

// WithScope sets which addresses count as public, everywhere the node filters
// addresses: the DHT, records and relays. Default: the internet.
func WithScope(sc scope.Scope) Option {
	return func(s *settings) error {
		if s.scopeSet {
			return errors.New("rendezvous: scope given twice")
		}
		s.scope, s.scopeSet = sc, true
		return nil
	}
}

// WithPublicRanges adds address ranges that count as public besides the
// internet's, for private deployments and labs. Shorthand for
// WithScope(scope.With(prefixes...)).
func WithPublicRanges(prefixes ...netip.Prefix) Option {
	return WithScope(scope.With(prefixes...))
}

// WithReachability forces the node to act as publicly reachable (DHT server,
// relay) or as private (DHT client, holds relay reservations) instead of
// following what the network says.
func WithReachability(r Reachability) Option {
	return func(s *settings) error {
		if r > ReachabilityPrivate {
			return fmt.Errorf("rendezvous: unknown reachability %d", r)
		}
		s.reach = r
		return nil
	}
}

// WithRecordTTL sets how long the node's record stays valid (republished at
// about half). Default one hour.
func WithRecordTTL(d time.Duration) Option {
	return func(s *settings) error { s.recordTTL = d; return nil }
}

// WithRepublishDebounce sets how long the node lets address and relay changes
// settle before republishing its record. Default one second.
func WithRepublishDebounce(d time.Duration) Option {
	return func(s *settings) error { s.debounce = d; return nil }
}

// WithRoutingTableRefresh sets how often the DHT routing table is refreshed
// while the node serves the DHT (a client node never refreshes it); 0
// disables the periodic refresh. Default 10 minutes.
func WithRoutingTableRefresh(d time.Duration) Option {
	return func(s *settings) error { s.refreshPeriod, s.refreshSet = d, true; return nil }
}

// WithRelayResources sets the limits of the relay this node serves while it is
// public. Default relay.DefaultResources().
func WithRelayResources(r circuit.Resources) Option {
	return func(s *settings) error { s.relayResources = &r; return nil }
}

// WithDataRelay volunteers the node, while it is public, as a data relay:
// its relayed connections carry application traffic within caps (each
// lasting up to caps.Duration and carrying caps.Data bytes each way, with
// caps.Circuits to one peer at once), where other relays cut them after 2
// min and 128 KiB, the setup of a direct connection. The record offers the
// caps; NATed peers reserve a data relay first, and peers whose NATs cannot
// be punched through connect through it. It replaces the limits of
// WithRelayResources. Default: no data relay.
func WithDataRelay(caps dht.DataRelay) Option {
	return func(s *settings) error {
		if caps.IsZero() {
			return errors.New("rendezvous: WithDataRelay: no caps")
		}
		if err := caps.Validate(); err != nil {
			return fmt.Errorf("rendezvous: WithDataRelay: %w", err)
		}
		s.dataRelay = caps
		return nil
	}
}

// WithReservations sets how many relays a private node keeps reservations on.
// Default 2.
func WithReservations(n int) Option {
	return func(s *settings) error { s.reservations = n; return nil }
}

// WithoutPortMapping stops a node whose reachability is not forced from
// asking its gateway for port mappings (UPnP IGD, NAT-PMP, PCP), which it
// does by default.
func WithoutPortMapping() Option {
	return func(s *settings) error { s.noPortMap = true; return nil }
}

// WithoutHolePunching stops the node from punching holes: Connect dials a
// NATed peer's relay addresses without asking a relay to coordinate a
// punch, the node takes no punch a relay forwards, and it runs no DCUtR.
// A public node still coordinates punches between other peers. Peers then
// see only the node's relays, never its address.
func WithoutHolePunching() Option {
	return func(s *settings) error { s.noHolePunch = true; return nil }
}

// WithoutPublishing makes a node that only reaches out: it publishes no
// record, holds no relay reservations and does not measure its NAT, so no
// peer can find it by its ID; it can still look peers up and connect to
// them (hole punches included). Short-lived clients, such as a command that
// connects once, save the traffic of all that.
func WithoutPublishing() Option {
	return func(s *settings) error { s.noPublish = true; return nil }
}

// WithoutNATSurvey stops a node whose reachability is not forced from
// surveying its NAT (behaviour and UDP binding timeout) when it finds itself
// private.
func WithoutNATSurvey() Option {
	return func(s *settings) error { s.noNATSurvey = true; return nil }
}

// WithTimeoutCandidates sets the idle durations the NAT survey tries when it
// measures the UDP binding timeout (at most 32, each up to 10 minutes). The
// measurement takes about the longest. Default: probe.DefaultCandidates().
func WithTimeoutCandidates(d ...time.Duration) Option {
	return func(s *settings) error {
		s.timeoutCandidates = append([]time.Duration(nil), d...)
		return nil
	}
}

// WithLogger sets the logger. Default: the "rendezvous" go-log logger, silent
// unless go-log is configured.
func WithLogger(l *logging.ZapEventLogger) Option {
	return func(s *settings) error { s.log = l; return nil }
}

// WithPrometheusRegisterer registers the node's (and libp2p's) metrics with
// reg. Default: no metrics.
func WithPrometheusRegisterer(reg prometheus.Registerer) Option {
	return func(s *settings) error { s.registerer = reg; return nil }
}

// WithLibp2pOptions passes extra options to libp2p.New, after the node's own.
// The node brings its own transports, muxer and resource manager (with
// per-address limits sized for carrier-grade NATs); libp2p refuses a second
// resource manager.
func WithLibp2pOptions(opts ...libp2p.Option) Option {
	return func(s *settings) error {
		s.libp2pOpts = append(s.libp2pOpts, opts...)
		return nil
	}
}

// ParseBootstrap parses /.../p2p/<id> multiaddrs into peers, merging the
// addresses of the same peer.
func ParseBootstrap(addrs ...string) ([]peer.AddrInfo, error) {
	var mas []ma.Multiaddr
	for _, a := range addrs {
		m, err := ma.NewMultiaddr(a)
		if err != nil {
			return nil, fmt.Errorf("rendezvous: bootstrap address %q: %w", a, err)
		}
		mas = append(mas, m)
	}
	infos, err := peer.AddrInfosFromP2pAddrs(mas...)
	if err != nil {
		return nil, fmt.Errorf("rendezvous: bootstrap: %w", err)
	}
	return infos, nil
}
