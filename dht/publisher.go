package dht

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Content is what a node says about itself in its record.
type Content struct {
	Addrs      []ma.Multiaddr
	RelayAddrs []ma.Multiaddr
	NAT        NATInfo
	DataRelay  DataRelay
}

func (c Content) equal(o Content) bool {
	eq := func(a, b []ma.Multiaddr) bool {
		if len(a) != len(b) {
			return false
		}
		set := make(map[string]int, len(a))
		for _, x := range a {
			set[string(x.Bytes())]++
		}
		for _, y := range b {
			k := string(y.Bytes())
			if set[k] == 0 {
				return false
			}
			set[k]--
		}
		return true
	}
	return eq(c.Addrs, o.Addrs) && eq(c.RelayAddrs, o.RelayAddrs) && c.NAT == o.NAT && c.DataRelay == o.DataRelay
}

// PublishEvent reports one publish attempt of a Publisher.
type PublishEvent struct {
	Record *Record
	Result PublishResult
	Err    error
}

// Publisher keeps the node's record published: at start, after changes
// (debounced), and before the record expires. Its goroutine is owned by the
// Publisher and ends with Close.
type Publisher struct {
	d       *DHT
	source  func() Content
	notify  func(PublishEvent)
	seq     *seqSource
	keepers func() []peer.ID

	trigger chan struct{}
	cancel  context.CancelFunc
	done    chan struct{}
	ready   chan struct{}
	once    sync.Once

	mu      sync.Mutex
	last    *Record   // guarded by mu
	holders []peer.ID // guarded by mu
	lastErr error     // guarded by mu
	// kept and refused are the keepers that took the last record and
	// those that did not (a keeper takes one record per peer every few
	// seconds); guarded by mu.
	kept, refused []peer.ID
	stored        int // the most servers a keeper stored the last record on; guarded by mu
}

// PublisherOption configures a Publisher.
type PublisherOption func(*Publisher)

// WithKeepers makes the Publisher hand its record to keepers (see
// KeepProtocol) instead of storing it itself, whenever one of the peers
// keepers returns serves KeepProtocol: a NATed node's relays. Records handed
// over live DefaultKeptTTL (or the record TTL if longer). When no keeper
// takes the record, the Publisher stores it itself.
func WithKeepers(keepers func() []peer.ID) PublisherOption {
	return func(p *Publisher) { p.keepers = keepers }
}

// NewPublisher starts publishing the record built from source. notify, if
// not nil, is called after every attempt, from the Publisher's goroutine.
func (d *DHT) NewPublisher(source func() Content, notify func(PublishEvent), opts ...PublisherOption) (*Publisher, error) {
	if d.isClosed() {
		return nil, ErrClosed
	}
	seq, err := newSeqSource(d.s.seqFile, d.s.now)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Publisher{
		d:       d,
		source:  source,
		notify:  notify,
		seq:     seq,
		trigger: make(chan struct{}, 1),
		cancel:  cancel,
		done:    make(chan struct{}),
		ready:   make(chan struct{}),
	}
	for _, o := range opts {
		o(p)
	}
	go p.run(ctx)
	return p, nil
}

// Trigger asks for a republish soon: the content changed. Calls within the
// debounce interval are merged.
func (p *Publisher) Trigger() {
	select {
	case p.trigger <- struct{}{}:
	default:
	}
}

// Ready is closed after the first successful publish.
func (p *Publisher) Ready() <-chan struct{} { return p.ready }

// Last returns the last record published, its holders and the last error.
func (p *Publisher) Last() (*Record, []peer.ID, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last, slices.Clone(p.holders), p.lastErr
}

// Close stops the Publisher and waits for its goroutine. It is idempotent.
func (p *Publisher) Close() error {
	p.cancel()
	<-p.done
	return nil
}

const (
	minRetry = 500 * time.Millisecond
	maxRetry = 30 * time.Second
	// keepRetry is when a record is handed again to the keepers that did
	// not take it: after a keeper's per-peer limit (minKeepInterval) has
	// passed.
	keepRetry = minKeepInterval + time.Second
	// keepRetries bounds those hand-offs per record.
	keepRetries = 4
)

func (p *Publisher) run(ctx context.Context) {
	defer close(p.done)
	timer := time.NewTimer(0) // publish at start
	defer timer.Stop()
	due := time.Now()
	wake := func(d time.Duration) {
		due = time.Now().Add(d)
		timer.Reset(d)
	}
	retry := minRetry
	forced := true // the next publish happens even if nothing changed
	handRetries := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.trigger:
			// A change brings the next publish forward, never back:
			// a stream of changes must not postpone a due republish.
			if time.Until(due) > p.d.s.debounce {
				wake(p.d.s.debounce)
			}
			continue
		case <-timer.C:
		}
		c := p.source()
		p.mu.Lock()
		last, refused := p.last, p.refused
		p.mu.Unlock()
		now := p.d.s.now()
		if !forced && last != nil && c.equal(Content{last.Addrs, last.RelayAddrs, last.NAT, last.DataRelay}) &&
			now.Before(halfLife(last)) {
			if len(refused) > 0 && handRetries < keepRetries {
				// The record is current, but not every keeper took it.
				handRetries++
				res := p.handAgain(ctx, last)
				if ctx.Err() != nil {
					return
				}
				if p.notify != nil {
					p.notify(PublishEvent{Record: last, Result: res})
				}
				if len(p.refusedNow()) > 0 && handRetries < keepRetries {
					wake(keepRetry << handRetries)
					continue
				}
			}
			wake(halfLife(last).Sub(now))
			continue
		}
		rec, res, err := p.publishOnce(ctx, c)
		if ctx.Err() != nil {
			return
		}
		if p.notify != nil {
			p.notify(PublishEvent{Record: rec, Result: res, Err: err})
		}
		if err != nil {
			p.d.log.Debugw("publish failed", "error", err, "retry", retry)
			wake(retry)
			retry = min(retry*2, maxRetry)
			forced = true
			continue
		}
		retry = minRetry
		forced = false
		p.once.Do(func() { close(p.ready) })
		handRetries = 0
		if len(p.refusedNow()) > 0 {
			wake(keepRetry)
			continue
		}
		wake(halfLife(rec).Sub(p.d.s.now()))
	}
}

// halfLife is when a record is due for republishing.
func halfLife(r *Record) time.Time { return r.Issued.Add(r.Expires.Sub(r.Issued) / 2) }

func (p *Publisher) publishOnce(ctx context.Context, c Content) (*Record, PublishResult, error) {
	seq, err := p.seq.next()
	if err != nil {
		return nil, PublishResult{}, err
	}
	var keepers []peer.ID
	if p.keepers != nil {
		keepers = p.d.keepers(p.keepers())
	}
	ttl := p.d.s.ttl
	if len(keepers) > 0 {
		ttl = max(ttl, DefaultKeptTTL)
	}
	now := p.d.s.now()
	rec := &Record{
		Seq:        seq,
		Issued:     now,
		Expires:    now.Add(ttl),
		Addrs:      c.Addrs,
		RelayAddrs: c.RelayAddrs,
		NAT:        c.NAT,
		DataRelay:  c.DataRelay,
	}
	// A record that would be too big loses direct addresses first (the
	// relays are a NATed node's only way in), then relay addresses.
	for {
		_, err := rec.Seal(p.d.key)
		if !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrTooManyAddrs) {
			break
		}
		switch {
		case len(rec.Addrs) > 0:
			rec.Addrs = rec.Addrs[:len(rec.Addrs)-1]
		case len(rec.RelayAddrs) > 0:
			rec.RelayAddrs = rec.RelayAddrs[:len(rec.RelayAddrs)-1]
		default:
			return nil, PublishResult{}, err
		}
	}
	p.mu.Lock()
	holders := slices.Clone(p.holders)
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if len(keepers) > 0 {
		res, refused, err := p.hand(ctx, rec, keepers)
		if err == nil {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.lastErr, p.last, p.holders = nil, rec, nil
			p.kept, p.refused, p.stored = res.Keepers, refused, res.Stored
			p.d.cache.put(rec)
			return rec, res, nil
		}
		p.d.log.Debugw("no keeper took the record; storing it", "error", err)
		rec.Expires = now.Add(p.d.s.ttl)
	}
	res, err := p.d.PublishRecord(ctx, rec, holders)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastErr = err
	if err == nil {
		p.last = rec
		p.holders = res.Holders
		p.kept, p.refused, p.stored = nil, nil, 0
	}
	return rec, res, err
}

// refusedNow returns the keepers that did not take the last record.
func (p *Publisher) refusedNow() []peer.ID {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.refused)
}

// handAgain hands rec, the last record, to the keepers that did not take
// it and are keepers still. The result lists every keeper that holds it.
func (p *Publisher) handAgain(ctx context.Context, rec *Record) PublishResult {
	p.mu.Lock()
	refused, kept := slices.Clone(p.refused), slices.Clone(p.kept)
	p.mu.Unlock()
	current := p.d.keepers(p.keepers())
	refused = slices.DeleteFunc(refused, func(k peer.ID) bool { return !slices.Contains(current, k) })
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, still, err := p.hand(ctx, rec, refused)
	if err != nil {
		p.d.log.Debugw("keepers refused the record again", "error", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last != rec { // a publish came in between: its outcome stands
		return PublishResult{Keepers: slices.Clone(p.kept), Stored: p.stored}
	}
	p.kept = append(kept, res.Keepers...)
	p.refused = still
	p.stored = max(p.stored, res.Stored)
	res.Keepers, res.Stored = slices.Clone(p.kept), p.stored
	return res
}

// hand gives the record to the keepers at once and succeeds when one of
// them stored it; it also returns the keepers that did not.
func (p *Publisher) hand(ctx context.Context, rec *Record, keepers []peer.ID) (PublishResult, []peer.ID, error) {
	data, err := rec.Seal(p.d.key)
	if err != nil {
		return PublishResult{}, nil, err
	}
	type answer struct {
		keeper peer.ID
		stored int
		err    error
	}
	answers := make(chan answer, len(keepers))
	for _, k := range keepers {
		go func() {
			n, err := p.d.HandRecord(ctx, k, data)
			answers <- answer{k, n, err}
		}()
	}
	var res PublishResult
	var refused []peer.ID
	var errs []error
	for range keepers {
		a := <-answers
		if a.err != nil {
			refused = append(refused, a.keeper)
			errs = append(errs, fmt.Errorf("%s: %w", a.keeper, a.err))
			continue
		}
		res.Keepers = append(res.Keepers, a.keeper)
		res.Stored = max(res.Stored, a.stored)
	}
	if len(res.Keepers) == 0 {
		return res, refused, errors.Join(errs...)
	}
	return res, refused, nil
}

// seqSource hands out sequence numbers that only grow: the clock in
// milliseconds, or one more than the last, whichever is larger. With a file,
// the last number survives restarts.
type seqSource struct {
	mu   sync.Mutex
	path string
	now  func() time.Time
	last uint64
}

func newSeqSource(path string, now func() time.Time) (*seqSource, error) {
	s := &seqSource{path: path, now: now}
	if path == "" {
		return s, nil
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("dht: seq file: %w", err)
	default:
		v, perr := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if perr != nil {
			return nil, fmt.Errorf("dht: seq file %s: %w", path, perr)
		}
		s.last = v
	}
	return s, nil
}

func (s *seqSource) next() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := max(s.last+1, uint64(s.now().UnixMilli()))
	if s.path != "" {
		tmp := s.path + ".tmp"
		if err := writeSynced(tmp, []byte(strconv.FormatUint(v, 10)+"\n")); err != nil {
			return 0, fmt.Errorf("dht: seq file: %w", err)
		}
		if err := os.Rename(tmp, s.path); err != nil {
			return 0, fmt.Errorf("dht: seq file: %w", err)
		}
	}
	s.last = v
	return v, nil
}

// writeSynced writes data to a new file at path (mode 0600) and syncs it, so
// that a rename after it never leaves an empty file behind a crash.
func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}
