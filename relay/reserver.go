package relay

import (
	"context"
	"slices"
	"sync"
	"time"

	logging "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2pos/rendezvous/scope"
)

// Reservation is a slot held on a relay.
type Reservation struct {
	Relay   peer.ID
	Addr    ma.Multiaddr // the relay's address we reach it on
	Expires time.Time
	// Circuit is our address through this relay: Addr/p2p/Relay/p2p-circuit.
	Circuit ma.Multiaddr

	granted time.Duration // the lifetime the relay granted
}

// DefaultReservations is how many relays a Reserver keeps.
const DefaultReservations = 2

type reserverSettings struct {
	count    int
	scope    scope.Scope
	onChange func()
	log      *logging.ZapEventLogger
	timeout  time.Duration
	connect  func(context.Context, peer.ID) error
}

// ReserverOption configures a Reserver.
type ReserverOption func(*reserverSettings)

// WithReservations sets how many relays to hold at once.
func WithReservations(n int) ReserverOption { return func(s *reserverSettings) { s.count = n } }

// WithScope sets which relay addresses are usable. Default: the internet.
func WithScope(sc scope.Scope) ReserverOption { return func(s *reserverSettings) { s.scope = sc } }

// WithOnChange sets a function called (from the Reserver's goroutine) when
// the set of reservations changes.
func WithOnChange(f func()) ReserverOption { return func(s *reserverSettings) { s.onChange = f } }

// WithConnect sets how the Reserver connects to a relay before reserving
// on it: a caller that wants the standing connection on a given transport
// makes it here. An error skips the relay for now. Default: the reservation
// connects as libp2p would.
func WithConnect(f func(ctx context.Context, relay peer.ID) error) ReserverOption {
	return func(s *reserverSettings) { s.connect = f }
}

// WithLogger sets the logger.
func WithLogger(l *logging.ZapEventLogger) ReserverOption {
	return func(s *reserverSettings) { s.log = l }
}

// Reserver keeps reservations on relays while it is enabled. Its goroutine is
// owned by it and ends with Close.
type Reserver struct {
	h          host.Host
	candidates func() []peer.ID
	s          reserverSettings

	wake   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	enabled bool                     // guarded by mu
	held    map[peer.ID]*Reservation // guarded by mu
	backoff map[peer.ID]time.Time    // guarded by mu: candidates not to retry before
}

// NewReserver starts a disabled Reserver. candidates returns the peers that
// may serve as relays (public peers known to the caller); those that do not
// speak the relay protocol are skipped.
func NewReserver(h host.Host, candidates func() []peer.ID, opts ...ReserverOption) (*Reserver, error) {
	s := reserverSettings{count: DefaultReservations, scope: scope.Internet(), timeout: 10 * time.Second}
	for _, o := range opts {
		o(&s)
	}
	if s.log == nil {
		s.log = logging.Logger("rendezvous/relay")
	}
	sub, err := h.EventBus().Subscribe([]any{
		new(event.EvtPeerConnectednessChanged),
		new(event.EvtPeerIdentificationCompleted),
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Reserver{
		h:          h,
		candidates: candidates,
		s:          s,
		wake:       make(chan struct{}, 1),
		cancel:     cancel,
		done:       make(chan struct{}),
		held:       map[peer.ID]*Reservation{},
		backoff:    map[peer.ID]time.Time{},
	}
	go r.run(ctx, sub)
	return r, nil
}

// SetEnabled starts or stops keeping reservations. Disabling drops them.
func (r *Reserver) SetEnabled(on bool) {
	r.mu.Lock()
	changed := r.enabled != on
	r.enabled = on
	r.mu.Unlock()
	if changed {
		r.poke()
	}
}

// Poke asks the Reserver to look at its candidates again (for example after
// the caller learned new peers).
func (r *Reserver) Poke() { r.poke() }

func (r *Reserver) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Reservations returns the reservations held, ordered by relay ID.
func (r *Reserver) Reservations() []Reservation {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Reservation, 0, len(r.held))
	for _, v := range r.held {
		out = append(out, *v)
	}
	slices.SortFunc(out, func(a, b Reservation) int {
		switch {
		case a.Relay < b.Relay:
			return -1
		case a.Relay > b.Relay:
			return 1
		}
		return 0
	})
	return out
}

// Addrs returns our /p2p-circuit addresses, one per reservation.
func (r *Reserver) Addrs() []ma.Multiaddr {
	rs := r.Reservations()
	out := make([]ma.Multiaddr, 0, len(rs))
	for _, v := range rs {
		out = append(out, v.Circuit)
	}
	return out
}

// Close stops the Reserver and waits for its goroutine. It is idempotent.
func (r *Reserver) Close() error {
	r.cancel()
	<-r.done
	return nil
}

const (
	failBackoff = 30 * time.Second
	renewBefore = 0.25 // renew when less than this fraction of the TTL is left
	idleCheck   = time.Minute
)

func (r *Reserver) run(ctx context.Context, sub event.Subscription) {
	defer close(r.done)
	// Events are read by a goroutine of their own that only pokes the loop:
	// the loop may spend seconds reserving, and a subscriber that stops
	// reading stalls libp2p's event bus for everyone.
	events := make(chan struct{})
	go func() {
		defer close(events)
		defer sub.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-sub.Out():
				if !ok {
					return
				}
				if e, isConn := ev.(event.EvtPeerConnectednessChanged); isConn && e.Connectedness != network.Connected {
					r.mu.Lock()
					_, isRelay := r.held[e.Peer]
					r.mu.Unlock()
					if !isRelay {
						continue
					}
				}
				r.poke()
			}
		}
	}()
	defer func() { <-events }()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			r.dropAll()
			return
		case <-r.wake:
		case <-timer.C:
		}
		timer.Reset(r.maintain(ctx))
	}
}

// maintain drops dead reservations, renews old ones, adds new ones up to
// count, and returns when to look again.
func (r *Reserver) maintain(ctx context.Context) time.Duration {
	r.mu.Lock()
	enabled := r.enabled
	r.mu.Unlock()
	if !enabled {
		r.dropAll()
		return idleCheck
	}
	changed := false
	now := time.Now()
	next := idleCheck

	// Drop reservations whose relay is gone or expired; renew those past
	// half their life.
	r.mu.Lock()
	var renew []peer.ID
	for id, res := range r.held {
		if r.h.Network().Connectedness(id) != network.Connected || !now.Before(res.Expires) {
			r.s.log.Infow("relay lost", "relay", id)
			delete(r.held, id)
			r.h.ConnManager().Unprotect(id, ProtectTag)
			r.backoff[id] = now.Add(failBackoff)
			changed = true
			continue
		}
		renew = append(renew, id)
	}
	r.mu.Unlock()
	for _, id := range renew {
		r.mu.Lock()
		res := r.held[id]
		r.mu.Unlock()
		if res == nil {
			continue
		}
		left := res.Expires.Sub(now)
		renewAt := time.Duration(float64(res.granted) * renewBefore)
		if left > renewAt {
			next = min(next, left-renewAt)
			continue
		}
		nr, err := r.reserve(ctx, id)
		r.mu.Lock()
		if err != nil {
			delete(r.held, id)
			r.h.ConnManager().Unprotect(id, ProtectTag)
			r.backoff[id] = now.Add(failBackoff)
			changed = true
		} else {
			r.held[id] = nr
			if !nr.Circuit.Equal(res.Circuit) {
				changed = true
			}
		}
		r.mu.Unlock()
	}

	// Add reservations.
	for ctx.Err() == nil {
		r.mu.Lock()
		need := r.s.count - len(r.held)
		r.mu.Unlock()
		if need <= 0 {
			break
		}
		cand := r.pick(now)
		if cand == "" {
			next = min(next, 5*time.Second)
			break
		}
		res, err := r.reserve(ctx, cand)
		r.mu.Lock()
		if err != nil {
			r.s.log.Debugw("reservation failed", "relay", cand, "error", err)
			r.backoff[cand] = now.Add(failBackoff)
		} else {
			r.held[cand] = res
			changed = true
		}
		r.mu.Unlock()
	}
	// A data relay found after the slots filled takes the place of the
	// slowest other relay: relayed connections that cannot become direct
	// last through it.
	if ctx.Err() == nil && r.swapInDataRelay(ctx, now) {
		changed = true
	}
	if changed && r.s.onChange != nil {
		r.s.onChange()
	}
	return max(next, time.Second)
}

// swapInDataRelay reserves on a data relay when all slots are held and
// none is one, and drops the slowest of the others. It reports whether
// it did.
func (r *Reserver) swapInDataRelay(ctx context.Context, now time.Time) bool {
	r.mu.Lock()
	full := len(r.held) >= r.s.count && r.s.count > 0
	for id := range r.held {
		if IsDataRelay(r.h, id) {
			full = false
		}
	}
	r.mu.Unlock()
	if !full {
		return false
	}
	cand := r.pick(now)
	if cand == "" || !IsDataRelay(r.h, cand) {
		return false
	}
	res, err := r.reserve(ctx, cand)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.backoff[cand] = now.Add(failBackoff)
		return false
	}
	var victim peer.ID
	var worst time.Duration = -1
	for id := range r.held {
		if lat := r.h.Peerstore().LatencyEWMA(id); lat > worst {
			victim, worst = id, lat
		}
	}
	if victim != "" {
		delete(r.held, victim)
		r.h.ConnManager().Unprotect(victim, ProtectTag)
	}
	r.held[cand] = res
	r.s.log.Debugw("data relay swapped in", "relay", cand, "dropped", victim)
	return true
}

// ProtectTag is the connection-manager tag the Reserver protects relays
// with, from the start of a reservation until it is dropped.
const ProtectTag = "rendezvous-relay"

// pick returns the best candidate relay among those speaking the hop
// protocol: a data relay first while none is held (so that relayed
// connections that cannot become direct last), then the lowest latency.
func (r *Reserver) pick(now time.Time) peer.ID {
	cands := r.candidates()
	r.mu.Lock()
	wantData := true
	for id := range r.held {
		if IsDataRelay(r.h, id) {
			wantData = false
		}
	}
	for id, until := range r.backoff {
		if !now.Before(until) {
			delete(r.backoff, id)
		}
	}
	skip := func(id peer.ID) bool { return r.held[id] != nil || now.Before(r.backoff[id]) }
	var usable []peer.ID
	for _, id := range cands {
		if id != r.h.ID() && !skip(id) {
			usable = append(usable, id)
		}
	}
	r.mu.Unlock()
	var best peer.ID
	var bestLat time.Duration
	bestData := false
	for _, id := range usable {
		if ok, _ := r.h.Peerstore().SupportsProtocols(id, proto.ProtoIDv2Hop); len(ok) == 0 {
			continue
		}
		if len(r.s.scope.Filter(r.h.Peerstore().Addrs(id))) == 0 && r.connAddr(id) == nil {
			continue
		}
		lat := r.h.Peerstore().LatencyEWMA(id)
		if lat == 0 {
			lat = time.Hour
		}
		data := wantData && IsDataRelay(r.h, id)
		if best == "" || (data && !bestData) || (data == bestData && lat < bestLat) {
			best, bestLat, bestData = id, lat, data
		}
	}
	return best
}

// connAddr returns the in-scope address of a direct connection to id.
func (r *Reserver) connAddr(id peer.ID) ma.Multiaddr {
	for _, c := range r.h.Network().ConnsToPeer(id) {
		// Only our own dials name a port the relay listens on.
		if c.Stat().Limited || c.Stat().Direction != network.DirOutbound {
			continue
		}
		if a := c.RemoteMultiaddr(); r.s.scope.IsPublic(a) {
			return a
		}
	}
	return nil
}

func (r *Reserver) reserve(ctx context.Context, id peer.ID) (*Reservation, error) {
	ctx, cancel := context.WithTimeout(ctx, r.s.timeout)
	defer cancel()
	r.h.ConnManager().Protect(id, ProtectTag)
	res, err := r.reserveProtected(ctx, id)
	if err != nil {
		r.mu.Lock()
		held := r.held[id] != nil
		r.mu.Unlock()
		if !held {
			r.h.ConnManager().Unprotect(id, ProtectTag)
		}
	}
	return res, err
}

func (r *Reserver) reserveProtected(ctx context.Context, id peer.ID) (*Reservation, error) {
	if r.s.connect != nil {
		if err := r.s.connect(ctx, id); err != nil {
			return nil, err
		}
	}
	ai := peer.AddrInfo{ID: id, Addrs: r.s.scope.Filter(r.h.Peerstore().Addrs(id))}
	rsv, err := client.Reserve(ctx, r.h, ai)
	if err != nil {
		return nil, err
	}
	addr := r.connAddr(id)
	if addr == nil {
		for _, a := range rsv.Addrs {
			if r.s.scope.IsPublic(a) {
				addr, _ = ma.SplitFunc(a, func(c ma.Component) bool { return c.Code() == ma.P_P2P })
				break
			}
		}
	}
	if addr == nil {
		return nil, errNoRelayAddr
	}
	circ, err := circuitAddr(addr, id)
	if err != nil {
		return nil, err
	}
	return &Reservation{Relay: id, Addr: addr, Expires: rsv.Expiration, Circuit: circ,
		granted: time.Until(rsv.Expiration)}, nil
}

func (r *Reserver) dropAll() {
	r.mu.Lock()
	changed := len(r.held) > 0
	for id := range r.held {
		r.h.ConnManager().Unprotect(id, ProtectTag)
	}
	clear(r.held)
	r.mu.Unlock()
	if changed && r.s.onChange != nil {
		r.s.onChange()
	}
}
