package tcpprobe

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// DefaultMaxHold is the longest hold a server grants unless told
// otherwise: a little above the two hours RFC 5382 REQ-5 asks NATs to keep
// an idle established TCP mapping, so that DefaultHolds can prove it.
const DefaultMaxHold = 130 * time.Minute

// Limits bound what a Server spends on its clients. The zero value of a
// field means its default (DefaultLimits).
type Limits struct {
	// MaxHold is the longest hold granted; longer requests are refused
	// with StatusBadHold. It is counted in whole seconds, rounded down.
	MaxHold time.Duration
	// MaxHoldsPerSource bounds the connections open at once from one
	// source IP address, MaxHolds those from all. A connection counts from
	// its accept, while it sends its request as while it is held; one over
	// either limit is closed at once.
	MaxHoldsPerSource int
	MaxHolds          int
	// RequestTimeout is how long a connection may take to send its
	// request.
	RequestTimeout time.Duration
}

// DefaultLimits returns the limits a Server uses unless told otherwise:
// holds up to DefaultMaxHold, 16 connections per source IP and 4096 in
// all, 5 s to send the request.
func DefaultLimits() Limits {
	return Limits{MaxHold: DefaultMaxHold, MaxHoldsPerSource: 16, MaxHolds: 4096, RequestTimeout: 5 * time.Second}
}

// withDefaults fills zero fields from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxHold == 0 {
		l.MaxHold = d.MaxHold
	}
	if l.MaxHoldsPerSource == 0 {
		l.MaxHoldsPerSource = d.MaxHoldsPerSource
	}
	if l.MaxHolds == 0 {
		l.MaxHolds = d.MaxHolds
	}
	if l.RequestTimeout == 0 {
		l.RequestTimeout = d.RequestTimeout
	}
	return l
}

func (l Limits) validate(unit time.Duration) error {
	switch {
	case l.MaxHoldsPerSource < 0, l.MaxHolds < 0, l.RequestTimeout < 0:
		return errors.New("tcpprobe: negative limit")
	case l.MaxHold < unit || l.MaxHold/unit > math.MaxUint32:
		return fmt.Errorf("tcpprobe: MaxHold %v out of range", l.MaxHold)
	}
	return nil
}

// serverSettings is what ServerOptions write into.
type serverSettings struct {
	limits Limits
	logf   func(format string, args ...any)
	unit   time.Duration // of holds on the wire
}

func defaultServerSettings() serverSettings {
	return serverSettings{limits: DefaultLimits(), logf: func(string, ...any) {}, unit: time.Second}
}

// ServerOption configures NewServer.
type ServerOption func(*serverSettings)

// WithLimits sets the server's limits; zero fields keep their defaults.
func WithLimits(l Limits) ServerOption {
	return func(s *serverSettings) { s.limits = l.withDefaults() }
}

// WithLogf sends the server's diagnostics (refused connections and
// requests, I/O errors) to logf. The default is silence.
func WithLogf(logf func(format string, args ...any)) ServerOption {
	return func(s *serverSettings) {
		if logf != nil {
			s.logf = logf
		}
	}
}

// withServerUnit makes a hold of n on the wire last n*unit instead of n
// seconds, so that tests can hold for fractions of a second.
func withServerUnit(unit time.Duration) ServerOption {
	return func(s *serverSettings) { s.unit = unit }
}

// settings is what Options write into.
type settings struct {
	grace    time.Duration
	progress func(Result)
	unit     time.Duration
}

func defaultSettings() settings { return settings{grace: 10 * time.Second, unit: time.Second} }

// Option configures Prove.
type Option func(*settings)

// WithGrace sets how long past a hold Prove waits for its RESPONSE, and
// how long it gives the connection to be made and acknowledged (default
// 10 s). Values at or below zero keep the default.
func WithGrace(d time.Duration) Option {
	return func(s *settings) {
		if d > 0 {
			s.grace = d
		}
	}
}

// WithProgress makes Prove call f with each hold's Result as soon as it is
// known. The calls come from Prove's goroutine, one at a time; while f
// runs, other results wait.
func WithProgress(f func(Result)) Option { return func(s *settings) { s.progress = f } }

// withUnit is the client side of withServerUnit.
func withUnit(unit time.Duration) Option { return func(s *settings) { s.unit = unit } }
