package standby

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/p2pos/rendezvous/internal/natlab"
)

// peer is one NATed peer under measurement, alone behind its router.
type peer struct {
	name    string
	impl    string
	udp     time.Duration
	host    *natlab.Host
	router  *natlab.Router
	proc    *natlab.Proc
	started time.Time

	// follow updates the tracker from the program's output; everything
	// else reads it. Every change closes wake and replaces it.
	mu        sync.Mutex
	t         tracker       // guarded by mu
	settledAt time.Time     // guarded by mu; zero until settled
	exitErr   error         // guarded by mu; why the program stopped early
	wake      chan struct{} // guarded by mu
}

// tracker follows one kind of peer's output lines.
type tracker interface {
	// apply takes one line the peer printed.
	apply(line []byte, now time.Time)
	// settled reports whether the peer is ready to be measured, and if not,
	// what it lacks.
	settled() (bool, string)
	// openWindow starts counting what the peer reports; closeWindow stops.
	openWindow(now time.Time)
	closeWindow(now time.Time)
	// window returns what was counted.
	window() window
	peerID() string
}

// window is what a peer reported during the window.
type window struct {
	open        bool
	relaysStart []string
	relaysEnd   []string
	lost        int
	// reachChanges and republishes are a rendezvous node's reachability
	// and publish events.
	reachChanges int
	republishes  int
	events       []string
}

// maxEvents bounds the events a window keeps.
const maxEvents = 20

func (w *window) note(now time.Time, format string, args ...any) {
	if !w.open {
		return
	}
	if len(w.events) == maxEvents {
		w.events = append(w.events, "...")
	}
	if len(w.events) > maxEvents {
		return
	}
	w.events = append(w.events, now.UTC().Format(time.TimeOnly)+" "+fmt.Sprintf(format, args...))
}

// follow reads the program's output until it exits or ctx ends.
func (p *peer) follow(ctx context.Context) {
	for {
		l, err := p.proc.Next(ctx)
		p.mu.Lock()
		if err != nil {
			if ctx.Err() == nil {
				p.exitErr = err
			}
			p.changedLocked()
			p.mu.Unlock()
			return
		}
		now := time.Now()
		p.t.apply(l, now)
		if p.settledAt.IsZero() {
			if ok, _ := p.t.settled(); ok {
				p.settledAt = now
			}
		}
		p.changedLocked()
		p.mu.Unlock()
	}
}

func (p *peer) changedLocked() {
	close(p.wake)
	p.wake = make(chan struct{})
}

// errExited is returned by waitSettled when the program stopped before it
// settled.
var errExited = errors.New("standby: peer stopped")

// waitSettled waits until the peer has settled or deadline passes. It
// returns what the peer lacks when it has not settled, and an error when ctx
// ended or the program stopped.
func (p *peer) waitSettled(ctx context.Context, deadline time.Time) (bool, string, error) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		p.mu.Lock()
		settled := !p.settledAt.IsZero()
		_, missing := p.t.settled()
		exitErr, wake := p.exitErr, p.wake
		p.mu.Unlock()
		switch {
		case settled:
			return true, "", nil
		case exitErr != nil:
			return false, missing, fmt.Errorf("%w: %s: %v", errExited, p.name, exitErr)
		}
		select {
		case <-wake:
		case <-t.C:
			return false, missing, nil
		case <-ctx.Done():
			return false, missing, ctx.Err()
		}
	}
}

func (p *peer) settleTime() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.settledAt.Sub(p.started)
}

// snapshot is the state of a peer's router at one end of the window.
type snapshot struct {
	at       time.Time
	counters natlab.Counters
	flows    []flow
	flowsErr error
}

// snapshot reads the router's counters and conntrack table, and opens
// (open) or closes the peer's window.
func (p *peer) snapshot(ctx context.Context, open bool) (snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var s snapshot
	s.flows, s.flowsErr = readFlows(ctx, p.router)
	c, err := p.router.Counters(ctx)
	if err != nil {
		return s, fmt.Errorf("standby: %s: counters: %w", p.name, err)
	}
	s.at, s.counters = time.Now(), c
	p.mu.Lock()
	if open {
		p.t.openWindow(s.at)
	} else {
		p.t.closeWindow(s.at)
	}
	p.mu.Unlock()
	return s, nil
}
