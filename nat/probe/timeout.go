package probe

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// DefaultCandidates are the idle durations MeasureTimeout tries when given
// none: from 10 s, below which few NATs time out, to about 7.5 minutes.
func DefaultCandidates() []time.Duration {
	// A geometric series (each 20% above the last, in whole seconds) from
	// 10 s to 7.5 min: the midpoint of the two candidates around the true
	// timeout is within 10% of it, for about twenty packets each way.
	var out []time.Duration
	for d := 10.0; d <= 460; d *= 1.2 {
		out = append(out, time.Duration(math.Round(d))*time.Second)
	}
	return out
}

// maxCandidates bounds the sockets a measurement opens.
const maxCandidates = 32

// TimeoutResult is what MeasureTimeout learned about how long the NAT keeps
// an idle UDP mapping.
type TimeoutResult struct {
	// Lower is the longest candidate whose answer arrived: a mapping
	// survives at least that long without traffic, so keep-alives sent more
	// often than every Lower keep it. 0 when no answer arrived.
	Lower time.Duration
	// Upper is the shortest candidate above Lower whose answer did not
	// arrive: the mapping is gone after that long idle. 0 when every
	// answer arrived (the timeout is longer than every candidate).
	Upper time.Duration
	// Estimate is the middle of Lower and Upper; Lower when Upper is 0,
	// half of Upper when Lower is 0. It is what a peer's NAT description
	// carries.
	Estimate time.Duration
	// Alive and Expired list the candidates whose answers did and did not
	// arrive; Unacknowledged those the server never acknowledged (lost or
	// refused), which say nothing about the timeout.
	Alive, Expired, Unacknowledged []time.Duration
	// Skipped are the longer candidates stopped once two neighbouring
	// candidates had expired.
	Skipped []time.Duration
	// Consistent is false when a candidate expired below one that
	// survived, which a lost answer causes.
	Consistent bool
	// Packets and Bytes count what the sockets sent and received.
	Packets, Bytes int
	Elapsed        time.Duration
}

// MeasureTimeout measures how long the NAT in front of the sockets socket
// makes keeps an idle UDP mapping, with the probe server at server. It
// opens one socket per candidate duration (DefaultCandidates when nil);
// each sends one DELAYED request for its duration, then stays silent and
// waits for the answer until the duration plus a grace (WithGrace) has
// passed. The probes run in parallel, and once two neighbouring candidates
// have expired the longer ones are stopped (Skipped), so MeasureTimeout
// takes about the NAT's timeout, or the longest candidate if that is longer. progress, if not nil, is called each
// time a probe finishes, one call at a time. Candidates must be whole
// milliseconds between 1 ms and 600 s; at most 32.
//
// When no DELAYED request is acknowledged it returns ErrUDPBlocked, or
// ErrRefused when the server refused them.
func MeasureTimeout(ctx context.Context, server netip.AddrPort, candidates []time.Duration, socket func() (net.PacketConn, error), progress func(done, total int), opts ...Option) (TimeoutResult, error) {
	s := defaultSettings()
	for _, o := range opts {
		o(&s)
	}
	if candidates == nil {
		candidates = DefaultCandidates()
	}
	cands := slices.Clone(candidates)
	slices.Sort(cands)
	cands = slices.Compact(cands)
	switch {
	case len(cands) == 0:
		return TimeoutResult{}, errors.New("probe: no candidates")
	case len(cands) > maxCandidates:
		return TimeoutResult{}, fmt.Errorf("probe: %d candidates, at most %d", len(cands), maxCandidates)
	case socket == nil:
		return TimeoutResult{}, errors.New("probe: nil socket factory")
	case !server.IsValid():
		return TimeoutResult{}, errors.New("probe: invalid server address")
	}
	for _, d := range cands {
		if d < time.Millisecond || d > DefaultLimits().MaxDelay || d%time.Millisecond != 0 {
			return TimeoutResult{}, fmt.Errorf("probe: candidate %v out of range", d)
		}
	}

	start := time.Now()
	outcomes := make([]probeOutcome, len(cands))
	// Probes end in the order of their durations. Once two neighbouring
	// candidates have expired, the longer ones cannot tell anything a
	// lost answer could not explain: they are stopped, and the answer
	// comes after about the timeout instead of the longest candidate.
	pctx, stopRest := context.WithCancel(ctx)
	defer stopRest()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex // guards outcomes, resolved and done; serializes progress
		resolved = make([]bool, len(cands))
		done     int
	)
	expired := func(i int) bool {
		o := outcomes[i]
		return resolved[i] && o.err == nil && o.acked && !o.answered
	}
	for i, d := range cands {
		wg.Go(func() {
			o := delayedProbe(pctx, s, server, d, socket)
			mu.Lock()
			defer mu.Unlock()
			outcomes[i], resolved[i] = o, true
			for j := 0; j+1 < len(cands); j++ {
				if expired(j) && expired(j+1) {
					stopRest()
					break
				}
			}
			done++
			if progress != nil {
				progress(done, len(cands))
			}
		})
	}
	wg.Wait()

	res := TimeoutResult{Elapsed: time.Since(start), Consistent: true}
	var refused bool
	var errs []error
	for i, o := range outcomes {
		res.Packets += o.pkts
		res.Bytes += o.nbytes
		switch {
		case o.err != nil && pctx.Err() != nil && ctx.Err() == nil:
			res.Skipped = append(res.Skipped, cands[i])
		case o.err != nil:
			errs = append(errs, o.err)
			res.Unacknowledged = append(res.Unacknowledged, cands[i])
		case !o.acked:
			refused = refused || o.refused
			res.Unacknowledged = append(res.Unacknowledged, cands[i])
		case o.answered:
			res.Alive = append(res.Alive, cands[i])
		default:
			res.Expired = append(res.Expired, cands[i])
		}
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if len(res.Alive)+len(res.Expired) == 0 {
		if len(errs) > 0 {
			return res, errors.Join(errs...)
		}
		if refused {
			return res, ErrRefused
		}
		return res, ErrUDPBlocked
	}
	res.Lower, res.Upper, res.Estimate, res.Consistent = bounds(res.Alive, res.Expired)
	return res, nil
}

// bounds derives the timeout's bounds from sorted lists of the candidates
// that survived and expired.
func bounds(alive, expired []time.Duration) (lower, upper, estimate time.Duration, consistent bool) {
	if len(alive) > 0 {
		lower = alive[len(alive)-1]
	}
	consistent = true
	for _, d := range expired {
		if d < lower {
			consistent = false
			continue
		}
		if upper == 0 {
			upper = d
		}
	}
	switch {
	case upper == 0:
		estimate = lower
	case lower == 0:
		estimate = upper / 2
	default:
		estimate = lower + (upper-lower)/2
	}
	return lower, upper, estimate, consistent
}

// probeOutcome is what one candidate's socket saw.
type probeOutcome struct {
	acked, refused, answered bool
	pkts, nbytes             int
	err                      error
}

// delayedProbe sends one DELAYED request for d and waits for its answer.
func delayedProbe(ctx context.Context, s settings, server netip.AddrPort, d time.Duration, socket func() (net.PacketConn, error)) (out probeOutcome) {
	p, err := openConn(ctx, socket)
	if err != nil {
		return probeOutcome{err: err}
	}
	defer func() {
		out.pkts, out.nbytes = p.pkts, p.nbytes
		p.close()
	}()
	req := message{Type: typeDelayed, TxID: newTxID(), Delay: d}
	ack, _, ok, err := p.exchange(ctx, s, req, server, func(m message, from netip.AddrPort) bool {
		return sameHost(from, server) && (m.Type == typeDelayedAck || m.Type == typeDelayedResponse)
	})
	if err != nil {
		return probeOutcome{err: err}
	}
	if !ok {
		return probeOutcome{}
	}
	if ack.Type == typeDelayedAck && ack.Status != statusOK {
		return probeOutcome{refused: true}
	}
	out.acked = true
	if ack.Type == typeDelayedResponse {
		out.answered = true
		return out
	}
	// The mapping's idle time starts with the acknowledgement, the last
	// packet through it.
	deadline := time.Now().Add(d + s.grace)
	for {
		m, from, ok, err := p.read(ctx, deadline)
		if err != nil {
			out.err = err
			return out
		}
		if !ok {
			return out
		}
		if m.TxID == req.TxID && m.Type == typeDelayedResponse && sameHost(from, server) {
			out.answered = true
			return out
		}
	}
}
