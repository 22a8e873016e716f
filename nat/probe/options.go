package probe

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Limits bound what a Server spends on its clients. The zero value of a
// field means its default (DefaultLimits).
type Limits struct {
	// Rate is the number of requests per second each source IP address
	// may send; Burst is how many it may send at once.
	Rate  float64
	Burst int
	// MaxSources is how many source addresses the rate limiter tracks.
	// When it tracks that many and none has been idle long enough to be
	// forgotten, requests from new sources are dropped.
	MaxSources int
	// MaxDelay is the longest delay a DELAYED request may ask for.
	MaxDelay time.Duration
	// MaxDelayedPerSource bounds the DELAYED answers pending for one source
	// IP address, MaxDelayed those pending in all.
	MaxDelayedPerSource int
	MaxDelayed          int
	// ForwardRate is the number of PEER-FORWARD messages per second a
	// server accepts from each sibling IP address, ForwardBurst how many
	// at once. A sibling forwards for all of its clients, so these are
	// higher than Rate and Burst.
	ForwardRate  float64
	ForwardBurst int
}

// DefaultLimits returns the limits a Server uses unless told otherwise:
// 20 requests per second with bursts of 64 per source, 16384 tracked
// sources, delays up to 600 s, 32 pending delayed answers per source and
// 8192 in all, and 200 forwards per second with bursts of 400 per sibling.
func DefaultLimits() Limits {
	return Limits{
		Rate:                20,
		Burst:               64,
		MaxSources:          16384,
		MaxDelay:            600 * time.Second,
		MaxDelayedPerSource: 32,
		MaxDelayed:          8192,
		ForwardRate:         200,
		ForwardBurst:        400,
	}
}

// withDefaults fills zero fields from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.Rate == 0 {
		l.Rate = d.Rate
	}
	if l.Burst == 0 {
		l.Burst = d.Burst
	}
	if l.MaxSources == 0 {
		l.MaxSources = d.MaxSources
	}
	if l.MaxDelay == 0 {
		l.MaxDelay = d.MaxDelay
	}
	if l.MaxDelayedPerSource == 0 {
		l.MaxDelayedPerSource = d.MaxDelayedPerSource
	}
	if l.MaxDelayed == 0 {
		l.MaxDelayed = d.MaxDelayed
	}
	if l.ForwardRate == 0 {
		l.ForwardRate = d.ForwardRate
	}
	if l.ForwardBurst == 0 {
		l.ForwardBurst = d.ForwardBurst
	}
	return l
}

func (l Limits) validate() error {
	switch {
	case l.Rate < 0, l.Burst < 0, l.MaxSources < 0, l.MaxDelayedPerSource < 0, l.MaxDelayed < 0,
		l.ForwardRate < 0, l.ForwardBurst < 0:
		return errors.New("probe: negative limit")
	case l.MaxDelay < time.Millisecond || l.MaxDelay > maxWireDelay:
		return fmt.Errorf("probe: MaxDelay %v out of range", l.MaxDelay)
	}
	return nil
}

// Clock is the time source of a Server: the real clock unless WithClock
// says otherwise.
type Clock interface {
	Now() time.Time
	// At returns a channel that receives once the clock reads t or later.
	At(t time.Time) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                  { return time.Now() }
func (realClock) At(t time.Time) <-chan time.Time { return time.After(time.Until(t)) }

// serverSettings is what ServerOptions write into.
type serverSettings struct {
	alt      net.PacketConn
	siblings []netip.AddrPort
	limits   Limits
	clock    Clock
	logf     func(format string, args ...any)
	errs     []error
}

func defaultServerSettings() serverSettings {
	return serverSettings{limits: DefaultLimits(), clock: realClock{}, logf: func(string, ...any) {}}
}

// ServerOption configures NewServer.
type ServerOption func(*serverSettings)

// WithAltConn gives the server its alternate socket, on another port of
// the same address: BINDING-RESPONSE advertises its port, and ALT-PORT
// requests are answered from it. The Server owns conn from then on and
// closes it in Close.
func WithAltConn(conn net.PacketConn) ServerOption {
	return func(s *serverSettings) {
		if conn == nil {
			s.errs = append(s.errs, errors.New("probe: WithAltConn(nil)"))
			return
		}
		if s.alt != nil {
			s.errs = append(s.errs, errors.New("probe: WithAltConn given twice"))
			return
		}
		s.alt = conn
	}
}

// WithSiblings lists the primary addresses of the other probe servers of a
// deployment. The server forwards PEER-SEND requests naming one of them,
// and accepts PEER-FORWARD only from them. Siblings must list each other.
// Repeated calls add to the list; Server.AddSibling and RemoveSibling
// change it at run time.
func WithSiblings(addrs ...netip.AddrPort) ServerOption {
	return func(s *serverSettings) {
		for _, a := range addrs {
			a, err := siblingAddr(a)
			if err != nil {
				s.errs = append(s.errs, err)
				continue
			}
			s.siblings = append(s.siblings, a)
		}
	}
}

// WithLimits sets the server's limits; zero fields keep their defaults.
func WithLimits(l Limits) ServerOption {
	return func(s *serverSettings) { s.limits = l.withDefaults() }
}

// WithClock sets the server's time source, for example a simulated clock.
func WithClock(c Clock) ServerOption {
	return func(s *serverSettings) {
		if c == nil {
			s.errs = append(s.errs, errors.New("probe: WithClock(nil)"))
			return
		}
		s.clock = c
	}
}

// WithLogf sends the server's diagnostics (dropped packets and why, send
// errors) to logf. The default is silence.
func WithLogf(logf func(format string, args ...any)) ServerOption {
	return func(s *serverSettings) {
		if logf != nil {
			s.logf = logf
		}
	}
}
