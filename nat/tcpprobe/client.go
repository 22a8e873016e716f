package tcpprobe

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"sync"
	"time"
)

// ErrNoResponse is the cause of an expired hold whose RESPONSE did not
// arrive within the hold and the grace.
var ErrNoResponse = errors.New("tcpprobe: no response within the hold")

// ErrRefused is the cause of a failed hold that the server refused (the
// status follows in the message).
var ErrRefused = errors.New("tcpprobe: server refused the hold")

// ErrBadAnswer is the cause of a failed hold whose ACK or RESPONSE was not
// what the protocol says: malformed, another nonce, another hold, or a
// RESPONSE before the hold was over.
var ErrBadAnswer = errors.New("tcpprobe: bad answer")

// DialFunc makes a TCP connection (network "tcp") to address, as
// net.Dialer.DialContext does; a caller chooses the local address or
// namespace with it. The connection must offer SetKeepAlive(bool) error,
// as *net.TCPConn does: Prove turns kernel keep-alive off with it.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// DefaultHolds returns the holds of a full measurement: 2, 4, 8, 15, 30,
// 60 and 120 minutes. Proving them takes about two hours.
func DefaultHolds() []time.Duration {
	return []time.Duration{2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 15 * time.Minute,
		30 * time.Minute, 60 * time.Minute, 120 * time.Minute}
}

// maxHolds bounds the connections one Prove opens.
const maxHolds = 64

// Outcome is what became of one hold.
type Outcome uint8

const (
	// Failed: the hold tells nothing about the NAT (the connection was
	// not made or acknowledged, the server refused, the answer was bad,
	// or the context ended).
	Failed Outcome = iota
	// Survived: the RESPONSE arrived after the hold, so the mapping
	// outlived that much idle time.
	Survived
	// Expired: the acknowledged connection ended, or stayed silent past
	// the hold and the grace, without a RESPONSE.
	Expired
)

func (o Outcome) String() string {
	switch o {
	case Survived:
		return "survived"
	case Expired:
		return "expired"
	}
	return "failed"
}

// Result is what one hold showed.
type Result struct {
	Hold    time.Duration
	Outcome Outcome
	// Err says why the hold expired (ErrNoResponse, io.EOF, a reset) or
	// failed; nil when it survived.
	Err error
	// Elapsed runs from dialing to the RESPONSE or giving up.
	Elapsed time.Duration
	// Payload bytes written and read.
	BytesSent, BytesReceived int
}

// Lifetime is how long the NAT keeps an idle established TCP mapping, as
// far as a Prove showed.
type Lifetime struct {
	// Lower is the longest hold that survived (0: none). Upper is the
	// shortest that expired (0: none). Lower > Upper means contradictory
	// results, such as a lost RESPONSE.
	Lower, Upper time.Duration
	// Results has one entry per hold, in the order the holds were given.
	Results []Result
	// Payload bytes of all holds, and the time the whole Prove took.
	BytesSent, BytesReceived int
	Elapsed                  time.Duration
}

func (l *Lifetime) add(r Result) {
	l.BytesSent += r.BytesSent
	l.BytesReceived += r.BytesReceived
	switch r.Outcome {
	case Survived:
		l.Lower = max(l.Lower, r.Hold)
	case Expired:
		if l.Upper == 0 || r.Hold < l.Upper {
			l.Upper = r.Hold
		}
	}
}

// KeepAliveIdle returns the idle time after which TCP keep-alive probes
// keep a mapping of this lifetime: fraction of Lower, and never more than
// fraction of Upper, rounded down to a whole second (the unit of kernel
// keep-alive timers). A fraction outside (0, 1] means 0.8. It returns 0
// when no hold survived: the lifetime is unknown, or under the shortest
// hold.
func (l Lifetime) KeepAliveIdle(fraction float64) time.Duration {
	if !(fraction > 0 && fraction <= 1) {
		fraction = 0.8
	}
	d := time.Duration(fraction * float64(l.Lower))
	if l.Upper > 0 {
		d = min(d, time.Duration(fraction*float64(l.Upper)))
	}
	return d.Truncate(time.Second)
}

// Prove measures how long the NAT in front of dial's connections keeps an
// idle established TCP mapping, with the hold server at server. For every
// hold (DefaultHolds when nil), in parallel, it dials a connection, turns
// its kernel keep-alive off, sends one HOLD request and then nothing: a
// RESPONSE arriving within the hold plus the grace (WithGrace) proves the
// mapping survived that long idle. Holds are counted in whole seconds,
// rounded up, at most 64 of them.
//
// Prove returns when every hold is done, so it takes about the longest
// hold. It reports each Result through WithProgress as it comes. It fails
// when the arguments are invalid, when ctx ends (returning what was learned
// so far), or when no hold survived or expired.
func Prove(ctx context.Context, dial DialFunc, server netip.AddrPort, holds []time.Duration, opts ...Option) (Lifetime, error) {
	s := defaultSettings()
	for _, o := range opts {
		o(&s)
	}
	if holds == nil {
		holds = DefaultHolds()
	}
	switch {
	case dial == nil:
		return Lifetime{}, errors.New("tcpprobe: Prove without a DialFunc")
	case !server.IsValid() || server.Port() == 0:
		return Lifetime{}, fmt.Errorf("tcpprobe: invalid server %v", server)
	case len(holds) == 0 || len(holds) > maxHolds:
		return Lifetime{}, fmt.Errorf("tcpprobe: %d holds, want 1 to %d", len(holds), maxHolds)
	}
	units := make([]uint32, len(holds))
	for i, h := range holds {
		if h <= 0 || h/s.unit >= math.MaxUint32 {
			return Lifetime{}, fmt.Errorf("tcpprobe: hold %v out of range", h)
		}
		units[i] = uint32((h + s.unit - 1) / s.unit)
	}

	start := time.Now()
	type done struct {
		i int
		r Result
	}
	results := make(chan done)
	var wg sync.WaitGroup
	for i := range units {
		wg.Go(func() { results <- done{i, proveOne(ctx, dial, server, units[i], &s)} })
	}
	lt := Lifetime{Results: make([]Result, len(holds))}
	for range units {
		d := <-results
		lt.Results[d.i] = d.r
		lt.add(d.r)
		if s.progress != nil {
			s.progress(d.r)
		}
	}
	wg.Wait()
	lt.Elapsed = time.Since(start)
	if err := ctx.Err(); err != nil {
		return lt, err
	}
	if lt.Lower == 0 && lt.Upper == 0 {
		return lt, fmt.Errorf("tcpprobe: no hold was proved: %w", lt.Results[0].Err)
	}
	return lt, nil
}

// proveOne runs the hold of n units on a connection of its own.
func proveOne(ctx context.Context, dial DialFunc, server netip.AddrPort, n uint32, s *settings) (r Result) {
	r.Hold = time.Duration(n) * s.unit
	start := time.Now()
	fail := func(format string, args ...any) Result {
		if err := ctx.Err(); err != nil {
			r.Err = err
		} else {
			r.Err = fmt.Errorf(format, args...)
		}
		r.Outcome = Failed
		r.Elapsed = time.Since(start)
		return r
	}
	dctx, cancel := context.WithTimeout(ctx, s.grace)
	c, err := dial(dctx, "tcp", server.String())
	cancel()
	if err != nil {
		return fail("tcpprobe: dial %v: %w", server, err)
	}
	defer c.Close()
	defer context.AfterFunc(ctx, func() { c.Close() })()
	// Keep-alive probes would refresh the mapping: only the server's
	// RESPONSE may cross it after the request.
	ka, ok := c.(keepAliver)
	if !ok {
		return fail("tcpprobe: %T cannot turn keep-alive off", c)
	}
	if err := ka.SetKeepAlive(false); err != nil {
		return fail("tcpprobe: keep-alive off: %w", err)
	}

	var nonce Nonce
	rand.Read(nonce[:])
	var buf [RequestSize]byte
	c.SetDeadline(start.Add(s.grace))
	sent := time.Now()
	m, err := c.Write(appendRequest(buf[:0], nonce, n))
	r.BytesSent = m
	if err != nil {
		return fail("tcpprobe: send request: %w", err)
	}
	m, err = io.ReadFull(c, buf[:AckSize])
	r.BytesReceived = m
	if err != nil {
		return fail("tcpprobe: no acknowledgement: %w", err)
	}
	an, st, granted, err := parseAck(buf[:AckSize])
	switch {
	case err != nil || an != nonce:
		return fail("%w: ACK %x", ErrBadAnswer, buf[:AckSize])
	case st != StatusOK:
		return fail("%w: %v", ErrRefused, st)
	case granted != n:
		return fail("%w: granted %d of %d", ErrBadAnswer, granted, n)
	}

	c.SetReadDeadline(sent.Add(r.Hold + s.grace))
	m, err = io.ReadFull(c, buf[:ResponseSize])
	r.BytesReceived += m
	r.Elapsed = time.Since(start)
	var ne net.Error
	switch {
	case err != nil && (ctx.Err() != nil || m > 0):
		return fail("%w: RESPONSE cut short: %w", ErrBadAnswer, err)
	case errors.As(err, &ne) && ne.Timeout():
		r.Outcome, r.Err = Expired, ErrNoResponse
		return r
	case err != nil:
		r.Outcome, r.Err = Expired, err
		return r
	}
	if rn, err := parseResponse(buf[:ResponseSize]); err != nil || rn != nonce {
		return fail("%w: RESPONSE %x", ErrBadAnswer, buf[:ResponseSize])
	}
	if d := time.Since(sent); d < r.Hold {
		return fail("%w: RESPONSE after %v, before the hold", ErrBadAnswer, d)
	}
	r.Outcome = Survived
	return r
}
