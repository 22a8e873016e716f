package probe

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"
)

// ErrUDPBlocked is returned when no probe server answered any request: UDP
// is blocked on the path, or every server is down.
var ErrUDPBlocked = errors.New("probe: no probe server answered; UDP blocked?")

// ErrRefused is returned by MeasureTimeout when the server refused every
// DELAYED request (a limit, or a delay above its maximum).
var ErrRefused = errors.New("probe: server refused the delayed requests")

// settings is what Options write into.
type settings struct {
	samples  int
	attempts int
	wait     time.Duration
	grace    time.Duration
	hairpin  bool
}

func defaultSettings() settings {
	return settings{samples: 3, attempts: 3, wait: 400 * time.Millisecond, grace: 1500 * time.Millisecond, hairpin: true}
}

// Option configures Classify and MeasureTimeout.
type Option func(*settings)

// WithSamples sets how many times Classify repeats each test, each time
// from fresh sockets (default 3). Values below 1 mean 1.
func WithSamples(n int) Option { return func(s *settings) { s.samples = max(1, n) } }

// WithAttempts sets how often a request is sent before its answer is
// taken as lost or filtered (default 3). Values below 1 mean 1.
func WithAttempts(n int) Option { return func(s *settings) { s.attempts = max(1, n) } }

// WithWait sets how long each attempt waits for its answer (default
// 400ms). Values at or below zero keep the default.
func WithWait(d time.Duration) Option {
	return func(s *settings) {
		if d > 0 {
			s.wait = d
		}
	}
}

// WithGrace sets how long MeasureTimeout waits past a candidate's delay
// for its answer (default 1.5s). Values at or below zero keep the default.
func WithGrace(d time.Duration) Option {
	return func(s *settings) {
		if d > 0 {
			s.grace = d
		}
	}
}

// WithHairpin sets whether Classify tests hairpinning (default true).
func WithHairpin(on bool) Option { return func(s *settings) { s.hairpin = on } }

// probeConn is one client socket and what went through it. It is used by
// one goroutine at a time.
type probeConn struct {
	c      net.PacketConn
	local  netip.AddrPort
	stop   func() bool
	buf    [MaxMessageSize + 1]byte
	out    [MaxMessageSize]byte
	pkts   int // sent and received
	nbytes int
}

// openConn opens a socket with the factory. Cancelling ctx interrupts its
// reads.
func openConn(ctx context.Context, socket func() (net.PacketConn, error)) (*probeConn, error) {
	c, err := socket()
	if err != nil {
		return nil, fmt.Errorf("probe: socket: %w", err)
	}
	if c == nil {
		return nil, errors.New("probe: socket factory returned nil")
	}
	local, _ := addrPortOf(c.LocalAddr())
	p := &probeConn{c: c, local: local}
	p.stop = context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	return p, nil
}

func (p *probeConn) close() {
	p.stop()
	p.c.Close()
}

func (p *probeConn) send(m message, dst netip.AddrPort) error {
	b, err := appendMessage(p.out[:0], m)
	if err != nil {
		return err
	}
	if _, err := p.c.WriteTo(b, net.UDPAddrFromAddrPort(dst)); err != nil {
		return fmt.Errorf("probe: send to %v: %w", dst, err)
	}
	p.pkts++
	p.nbytes += len(b)
	return nil
}

// read returns the next well-formed message that arrives before deadline
// (or ctx ends); ok is false when none did.
func (p *probeConn) read(ctx context.Context, deadline time.Time) (m message, from netip.AddrPort, ok bool, err error) {
	if d, has := ctx.Deadline(); has && d.Before(deadline) {
		deadline = d
	}
	for {
		if err := ctx.Err(); err != nil {
			return m, from, false, err
		}
		if err := p.c.SetReadDeadline(deadline); err != nil {
			return m, from, false, err
		}
		n, addr, err := p.c.ReadFrom(p.buf[:])
		if err != nil {
			if ctx.Err() != nil {
				return m, from, false, ctx.Err()
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return m, from, false, nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return m, from, false, nil
			}
			if errors.Is(err, net.ErrClosed) {
				return m, from, false, err
			}
			continue // ICMP errors reported on the socket: keep listening
		}
		p.pkts++
		p.nbytes += n
		if from, ok = addrPortOf(addr); !ok {
			continue
		}
		if m, err = parseMessage(p.buf[:n]); err != nil {
			continue
		}
		return m, from, true, nil
	}
}

// exchange sends req to dst up to attempts times, each time waiting wait
// for a message match accepts. ok is false when none came.
func (p *probeConn) exchange(ctx context.Context, s settings, req message, dst netip.AddrPort, match func(message, netip.AddrPort) bool) (message, netip.AddrPort, bool, error) {
	for range s.attempts {
		if err := p.send(req, dst); err != nil {
			return message{}, netip.AddrPort{}, false, err
		}
		deadline := time.Now().Add(s.wait)
		for {
			m, from, ok, err := p.read(ctx, deadline)
			if err != nil {
				return m, from, false, err
			}
			if !ok {
				break
			}
			if m.TxID == req.TxID && match(m, from) {
				return m, from, true, nil
			}
		}
	}
	return message{}, netip.AddrPort{}, false, nil
}

func newTxID() txID {
	var id txID
	rand.Read(id[:])
	return id
}

// sameHost reports whether from is dst, comparing unmapped addresses.
func sameHost(from, dst netip.AddrPort) bool {
	return from.Addr().Unmap() == dst.Addr().Unmap() && from.Port() == dst.Port()
}
