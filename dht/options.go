package dht

import (
	"errors"
	"fmt"
	"time"

	logging "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2pos/rendezvous/scope"
)

// Mode says whether the DHT serves records (server) or only queries (client).
type Mode int

const (
	// ModeAuto follows the host's reachability: server when it is publicly
	// reachable, client otherwise.
	ModeAuto Mode = iota
	// ModeServer always serves.
	ModeServer
	// ModeClient never serves.
	ModeClient
)

func (m Mode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeServer:
		return "server"
	case ModeClient:
		return "client"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ProtocolPrefix is the DHT's protocol prefix: the kad protocol is
// /p2pos/kad/1.0.0.
const ProtocolPrefix = "/p2pos"

// Defaults of the tunables.
const (
	DefaultReplication       = 20
	DefaultConcurrency       = 3
	DefaultRequestTimeout    = 5 * time.Second
	DefaultRepublishDebounce = time.Second
	DefaultRefreshPeriod     = 10 * time.Minute
)

type settings struct {
	scope          scope.Scope
	mode           Mode
	bootstrap      []peer.AddrInfo
	ttl            time.Duration
	replication    int
	concurrency    int
	requestTimeout time.Duration
	debounce       time.Duration
	refreshPeriod  time.Duration
	now            func() time.Time
	log            *logging.ZapEventLogger
	seqFile        string
	storeFile      string
}

func defaultSettings() settings {
	return settings{
		scope:          scope.Internet(),
		mode:           ModeAuto,
		ttl:            DefaultRecordTTL,
		replication:    DefaultReplication,
		concurrency:    DefaultConcurrency,
		requestTimeout: DefaultRequestTimeout,
		debounce:       DefaultRepublishDebounce,
		refreshPeriod:  DefaultRefreshPeriod,
		now:            time.Now,
	}
}

func (s *settings) validate() error {
	switch {
	case s.mode < ModeAuto || s.mode > ModeClient:
		return fmt.Errorf("dht: unknown mode %d", s.mode)
	case s.ttl < 10*time.Second:
		return errors.New("dht: record TTL must be at least 10s")
	case s.replication < 1:
		return errors.New("dht: replication must be at least 1")
	case s.concurrency < 1:
		return errors.New("dht: concurrency must be at least 1")
	case s.requestTimeout <= 0:
		return errors.New("dht: request timeout must be positive")
	case s.debounce < 0:
		return errors.New("dht: debounce must not be negative")
	}
	return nil
}

// Option configures a DHT.
type Option func(*settings) error

// WithScope sets which addresses count as public. It filters what the DHT
// stores in the peerstore, which peers it queries and keeps in its routing
// table, and which records it accepts. Default: the internet.
func WithScope(s scope.Scope) Option {
	return func(st *settings) error { st.scope = s; return nil }
}

// WithMode forces server or client mode. Default ModeAuto.
func WithMode(m Mode) Option {
	return func(st *settings) error { st.mode = m; return nil }
}

// WithBootstrapPeers sets the peers the DHT falls back to when its routing
// table is empty.
func WithBootstrapPeers(peers ...peer.AddrInfo) Option {
	return func(st *settings) error {
		st.bootstrap = append(st.bootstrap, peers...)
		return nil
	}
}

// WithRecordTTL sets how long a published record stays valid. It is
// republished at about half of it. Default DefaultRecordTTL.
func WithRecordTTL(d time.Duration) Option {
	return func(st *settings) error { st.ttl = d; return nil }
}

// WithReplication sets on how many of the closest servers a record is stored.
func WithReplication(k int) Option {
	return func(st *settings) error { st.replication = k; return nil }
}

// WithConcurrency sets how many requests a lookup keeps in flight.
func WithConcurrency(alpha int) Option {
	return func(st *settings) error { st.concurrency = alpha; return nil }
}

// WithRequestTimeout bounds one request to one peer.
func WithRequestTimeout(d time.Duration) Option {
	return func(st *settings) error { st.requestTimeout = d; return nil }
}

// WithRepublishDebounce sets how long the publisher waits for changes to
// settle before it republishes.
func WithRepublishDebounce(d time.Duration) Option {
	return func(st *settings) error { st.debounce = d; return nil }
}

// WithRefreshPeriod sets how often the routing table is refreshed while the
// DHT serves (a client never refreshes it); 0 disables the periodic refresh.
func WithRefreshPeriod(d time.Duration) Option {
	return func(st *settings) error { st.refreshPeriod = d; return nil }
}

// WithClock sets the clock used for record times and validation.
func WithClock(now func() time.Time) Option {
	return func(st *settings) error {
		if now == nil {
			return errors.New("dht: nil clock")
		}
		st.now = now
		return nil
	}
}

// WithLogger sets the logger. Default: the "rendezvous/dht" go-log logger.
func WithLogger(l *logging.ZapEventLogger) Option {
	return func(st *settings) error { st.log = l; return nil }
}

// WithSeqFile names a file in which the publisher keeps the last sequence
// number it used, so that sequence numbers stay monotonic across restarts
// even if the clock steps back. Without it, sequence numbers follow the clock
// in milliseconds.
func WithSeqFile(path string) Option {
	return func(st *settings) error { st.seqFile = path; return nil }
}

// WithStoreFile names a file that keeps the records this node serves across
// restarts: loaded at New, written at Close. Default: memory only.
func WithStoreFile(path string) Option {
	return func(st *settings) error { st.storeFile = path; return nil }
}
