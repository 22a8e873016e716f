package relay

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	circuit "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2pos/rendezvous/scope"
)

// DefaultReservationTTL is how long a reservation lasts before the peer
// must renew it. circuit relay v2's default is one hour; a reservation also
// ends when the peer disconnects, so a longer one only spares idle peers
// renewals (a few hundred bytes each).
const DefaultReservationTTL = 4 * time.Hour

// DefaultResources are the relay limits of a Service: circuit relay v2's
// defaults, which suit connection setup (2 min and 128 KiB per relayed
// connection), with reservations lasting DefaultReservationTTL.
func DefaultResources() circuit.Resources {
	r := circuit.DefaultResources()
	r.ReservationTTL = DefaultReservationTTL
	return r
}

type serviceSettings struct {
	resources circuit.Resources
	dataRelay bool
	scope     scope.Scope
	tracer    circuit.MetricsTracer
}

// ServiceOption configures a Service.
type ServiceOption func(*serviceSettings)

// WithResources sets the relay's limits.
func WithResources(r circuit.Resources) ServiceOption {
	return func(s *serviceSettings) { s.resources = r }
}

// WithServiceScope sets which of the node's addresses the relay tells
// reserving peers about. Default: the internet.
func WithServiceScope(sc scope.Scope) ServiceOption {
	return func(s *serviceSettings) { s.scope = sc }
}

// WithServiceMetrics registers the relay's metrics (reservations,
// circuits, relayed bytes) with reg; nil: none.
func WithServiceMetrics(reg prometheus.Registerer) ServiceOption {
	return func(s *serviceSettings) {
		if reg != nil {
			s.tracer = circuit.NewMetricsTracer(circuit.WithRegisterer(reg))
		}
	}
}

// Service runs the relay (hop) protocol while it is enabled. The zero value is
// not usable; create one with NewService.
type Service struct {
	h host.Host
	s serviceSettings

	mu     sync.Mutex
	relay  *circuit.Relay // guarded by mu; nil while disabled
	closed bool           // guarded by mu
}

// NewService returns a disabled relay service for h.
func NewService(h host.Host, opts ...ServiceOption) *Service {
	s := serviceSettings{resources: DefaultResources(), scope: scope.Internet()}
	for _, o := range opts {
		o(&s)
	}
	return &Service{h: h, s: s}
}

// ErrServiceClosed is returned by SetEnabled after Close.
var ErrServiceClosed = errors.New("relay: service closed")

// SetEnabled starts or stops serving. It is a no-op when nothing changes.
func (s *Service) SetEnabled(on bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrServiceClosed
	}
	switch {
	case on && s.relay == nil:
		sc := s.s.scope
		opts := []circuit.Option{
			circuit.WithResources(s.s.resources),
			circuit.WithReservationAddressFilter(func(a ma.Multiaddr) bool { return sc.IsPublic(a) }),
		}
		if s.s.tracer != nil {
			opts = append(opts, circuit.WithMetricsTracer(s.s.tracer))
		}
		r, err := circuit.New(s.h, opts...)
		if err != nil {
			return fmt.Errorf("relay: start service: %w", err)
		}
		s.relay = r
		if s.s.dataRelay {
			s.h.SetStreamHandler(DataRelayProtocol, closeStream)
		}
	case !on && s.relay != nil:
		s.h.RemoveStreamHandler(DataRelayProtocol)
		err := s.relay.Close()
		s.relay = nil
		return err
	}
	return nil
}

// DataRelay tells whether the service serves as a data relay, and with
// which limits: while it is enabled and was made one with WithDataRelay.
func (s *Service) DataRelay() (circuit.RelayLimit, int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.relay == nil || !s.s.dataRelay {
		return circuit.RelayLimit{}, 0, false
	}
	return *s.s.resources.Limit, s.s.resources.MaxCircuits, true
}

// Enabled reports whether the service is serving.
func (s *Service) Enabled() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.relay != nil
}

// Close stops the service for good. It is idempotent.
func (s *Service) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.relay == nil {
		return nil
	}
	s.h.RemoveStreamHandler(DataRelayProtocol)
	err := s.relay.Close()
	s.relay = nil
	return err
}

// HopProtocol is the circuit relay v2 protocol relays serve.
const HopProtocol = proto.ProtoIDv2Hop
