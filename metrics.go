package rendezvous

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2pos/rendezvous/dht"
	"github.com/p2pos/rendezvous/relay"
)

// metrics are the node's own Prometheus metrics (libp2p's, the relay's and
// DCUtR's come on top, on the same registerer). All methods are nil-safe:
// without a registerer there are none.
type metrics struct {
	connects   *prometheus.CounterVec // path, local_nat, remote_nat
	attempts   *prometheus.CounterVec // kind, outcome
	punches    *prometheus.CounterVec // role, status
	sprays     *prometheus.CounterVec // role, outcome
	probes     prometheus.Counter
	upgrades   prometheus.Counter
	keepIdle   prometheus.Gauge
	standingGa prometheus.Gauge
	keepSent   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "rendezvous", Name: "connects_total",
			Help: "Connections Connect made or failed to make, by path (direct, hole-punched, relayed, failed) and the NAT kinds of both sides.",
		}, []string{"path", "local_nat", "remote_nat"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "rendezvous", Name: "connect_attempts_total",
			Help: "Ways Connect tried (punch, dial), by outcome: ok, or why not.",
		}, []string{"kind", "outcome"}),
		punches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "rendezvous", Name: "punch_requests_total",
			Help: "Hole-punch requests this node forwarded as a relay or took as a target, by status.",
		}, []string{"role", "status"}),
		sprays: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "rendezvous", Name: "spray_punches_total",
			Help: "Spray punches (for an endpoint-dependent NAT facing a strict one) by this side's part (catch, spray) and outcome (hit, miss).",
		}, []string{"role", "outcome"}),
		probes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "rendezvous", Name: "spray_probes_total",
			Help: "Probes this node sent in spray punches.",
		}),
		upgrades: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "rendezvous", Name: "path_upgrades_total",
			Help: "Relayed connections that became direct.",
		}),
		keepIdle: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "rendezvous", Name: "keepalive_interval_seconds",
			Help: "Idle time after which the standing connections to relays send a keep-alive probe.",
		}),
		standingGa: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "rendezvous", Name: "standing_connections",
			Help: "Connections to relays held open with adaptive keep-alives.",
		}),
		keepSent: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "rendezvous", Name: "keepalives_sent_total",
			Help: "Keep-alive probes sent on the standing TCP connections to relays, as the kernel's TCP state shows them (Linux).",
		}),
	}
	cs := []prometheus.Collector{m.connects, m.attempts, m.punches, m.upgrades, m.keepIdle, m.standingGa, m.sprays, m.probes, m.keepSent}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			// A second node on the same registerer shares the first one's.
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
			cs[i] = are.ExistingCollector
		}
	}
	m.connects, m.attempts, m.punches = cs[0].(*prometheus.CounterVec), cs[1].(*prometheus.CounterVec), cs[2].(*prometheus.CounterVec)
	m.upgrades, m.keepIdle, m.standingGa = cs[3].(prometheus.Counter), cs[4].(prometheus.Gauge), cs[5].(prometheus.Gauge)
	m.sprays, m.probes = cs[6].(*prometheus.CounterVec), cs[7].(prometheus.Counter)
	m.keepSent = cs[8].(prometheus.Counter)
	return m, nil
}

// natKind names a NAT for a label: "public", "unknown", or mapping/filtering
// such as "ei/apd".
func natKind(n dht.NATInfo) string {
	if n.Reachability == dht.ReachabilityPublic {
		return "public"
	}
	short := func(b dht.Behavior) string {
		switch b {
		case dht.EndpointIndependent:
			return "ei"
		case dht.AddressDependent:
			return "ad"
		case dht.AddressAndPortDependent:
			return "apd"
		}
		return "unknown"
	}
	if n.Mapping == dht.BehaviorUnknown && n.Filtering == dht.BehaviorUnknown {
		return "unknown"
	}
	return short(n.Mapping) + "/" + short(n.Filtering)
}

func (m *metrics) connected(path string, local, remote dht.NATInfo, attempts []Attempt) {
	if m == nil {
		return
	}
	m.connects.WithLabelValues(path, natKind(local), natKind(remote)).Inc()
	for _, a := range attempts {
		m.attempts.WithLabelValues(a.Kind, outcome(a.Err)).Inc()
	}
}

// outcome is an attempt's outcome label: "ok", a punch status, or
// "failed".
func outcome(err error) string {
	var pe *relay.PunchError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &pe):
		return pe.Status.String()
	case errors.Is(err, relay.ErrPunchFailed):
		return "no direct connection"
	case errors.Is(err, ErrPunchPending):
		return "pending"
	}
	return "failed"
}

func (m *metrics) punch(role string, status relay.PunchStatus) {
	if m == nil {
		return
	}
	m.punches.WithLabelValues(role, status.String()).Inc()
}

func (m *metrics) sprayed(role string, hit bool, probes int) {
	if m == nil {
		return
	}
	out := "miss"
	if hit {
		out = "hit"
	}
	m.sprays.WithLabelValues(role, out).Inc()
	m.probes.Add(float64(probes))
}

func (m *metrics) upgraded() {
	if m == nil {
		return
	}
	m.upgrades.Inc()
}

func (m *metrics) keepAlivesSent(n uint64) {
	if m == nil || n == 0 {
		return
	}
	m.keepSent.Add(float64(n))
}

func (m *metrics) keepAlive(idleSeconds float64, standing int) {
	if m == nil {
		return
	}
	m.keepIdle.Set(idleSeconds)
	m.standingGa.Set(float64(standing))
}
