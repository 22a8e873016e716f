package portmap

import (
	"context"
	"sync"
	"time"

	logging "github.com/ipfs/go-log/v2"
)

// mapper is what a Keeper needs from a Client.
type mapper interface {
	mapPort(ctx context.Context, req request, prev Mapping) (Mapping, error)
	Delete(ctx context.Context, m Mapping) error
}

// Keeper keeps one port mapping alive. It owns one goroutine, which
// obtains the mapping, renews it at half its granted lifetime (a mapping
// granted until deleted is refreshed at half the asked lifetime), retries
// failures with exponential backoff, and deletes the mapping when the
// Keeper is closed.
type Keeper struct {
	m        mapper
	req      request
	onChange func(Mapping, error)
	now      func() time.Time
	log      *logging.ZapEventLogger
	min, max time.Duration

	cancel context.CancelFunc
	done   chan struct{} // closed when run has returned

	closeOnce sync.Once
	closeErr  error // set by run before done is closed

	mu      sync.Mutex
	current Mapping // guarded by mu: the last mapping obtained, zero if none
}

// Keep starts a Keeper for internalPort over transport ("udp" or "tcp"),
// asking for the Client's lifetime (WithLifetime). The first attempt
// starts at once; Keep returns without waiting for it and fails only for
// bad arguments.
//
// onChange, if not nil, is called from the Keeper's goroutine, one call at
// a time, after every attempt: with the new mapping and a nil error when
// one was obtained or renewed (compare External to see whether it moved),
// or with the last mapping obtained (the zero Mapping if none) and the
// error when an attempt failed. It must not call Close.
func (c *Client) Keep(transport string, internalPort uint16, onChange func(Mapping, error)) (*Keeper, error) {
	req, err := checkRequest(transport, internalPort, c.s.lifetime)
	if err != nil {
		return nil, err
	}
	return newKeeper(c, req, onChange, c.s.now, c.log, c.s.minBackoff, c.s.maxBackoff), nil
}

func newKeeper(m mapper, req request, onChange func(Mapping, error), now func() time.Time, log *logging.ZapEventLogger, minBackoff, maxBackoff time.Duration) *Keeper {
	if onChange == nil {
		onChange = func(Mapping, error) {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	k := &Keeper{
		m: m, req: req, onChange: onChange, now: now, log: log,
		min: minBackoff, max: maxBackoff,
		cancel: cancel, done: make(chan struct{}),
	}
	go k.run(ctx)
	return k
}

// Mapping returns the mapping in force: the last one obtained, if it has
// not expired by the Client's clock. ok is false otherwise, and after Close.
func (k *Keeper) Mapping() (m Mapping, ok bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	m = k.current
	if m.Protocol == "" {
		return Mapping{}, false
	}
	if exp := m.Expires(); !exp.IsZero() && !k.now().Before(exp) {
		return Mapping{}, false
	}
	return m, true
}

// Close stops the Keeper, waits for its goroutine and deletes the mapping
// from the gateway (bounded by the Client's timeout), returning the
// deletion's error. It is idempotent: later calls wait for the first and
// return its result.
func (k *Keeper) Close() error {
	k.closeOnce.Do(func() {
		k.cancel()
		<-k.done
	})
	return k.closeErr
}

func (k *Keeper) run(ctx context.Context) {
	defer close(k.done)
	var cur Mapping
	backoff := k.min
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
		case <-timer.C:
		}
		if ctx.Err() != nil {
			k.closeErr = k.release(cur)
			return
		}
		m, err := k.m.mapPort(ctx, k.req, cur)
		if ctx.Err() != nil {
			// Closed mid-attempt: a mapping granted now is still deleted.
			if err == nil {
				cur = m
			}
			continue
		}
		var wait time.Duration
		if err == nil {
			cur = m
			k.mu.Lock()
			k.current = m
			k.mu.Unlock()
			backoff = k.min
			wait = m.Lifetime / 2
			if m.Lifetime == 0 {
				wait = k.req.lifetime / 2
			}
			k.log.Debugw("mapping kept", "mapping", m.String(), "renew in", wait)
		} else {
			wait = backoff
			backoff = min(2*backoff, k.max)
			k.log.Debugw("keeping mapping failed", "transport", k.req.transport, "port", k.req.internalPort, "retry in", wait, "error", err)
		}
		k.onChange(cur, err)
		timer.Reset(wait)
	}
}

// release deletes m, if there is one, and forgets it.
func (k *Keeper) release(m Mapping) error {
	k.mu.Lock()
	k.current = Mapping{}
	k.mu.Unlock()
	if m.Protocol == "" {
		return nil
	}
	return k.m.Delete(context.Background(), m)
}
