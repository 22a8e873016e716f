package dht

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Record keeping: a NATed peer hands its sealed record to its relays over
// the connections it keeps to them anyway, and the relays store it on the
// closest servers and store it again every republish interval for as long
// as the peer stays connected to them. The peer spends a few hundred bytes
// per relay instead of a lookup and twenty stores (each a new connection);
// the record's expiry can be long (DefaultKeptTTL) because its holders drop
// it MaxRecordAge after the last store, which stops when the peer is gone.
//
// Wire format of KeepProtocol, one exchange per stream:
//
//	request:  uvarint length (1..MaxRecordSize), the sealed record
//	response: 1 byte status (0 stored, 1 refused, 2 invalid, 3 failed),
//	          uvarint number of servers that stored it,
//	          uvarint length (0..maxKeepMessage), a UTF-8 reason
//
// A keeper takes records only from the peer that signed them, over a
// direct connection, and keeps at most a bounded number of them.

// KeepProtocol is the record-keeping protocol relays serve.
const KeepProtocol = protocol.ID(ProtocolPrefix + "/keep/1.0.0")

// DefaultKeptTTL is the lifetime of records handed to keepers.
const DefaultKeptTTL = 12 * time.Hour

// DefaultMaxKept is how many peers' records a KeepService keeps at most.
const DefaultMaxKept = 1024

const (
	keepStored byte = iota
	keepRefused
	keepInvalid
	keepFailed
)

const (
	maxKeepMessage  = 256
	keepTimeout     = 30 * time.Second
	minKeepInterval = 5 * time.Second // between records of one peer
)

// ErrKeepRefused is returned by HandRecord when the keeper does not keep
// the record; KeepError says why.
var ErrKeepRefused = errors.New("dht: keeper refused the record")

// KeepError is a keeper's answer other than stored.
type KeepError struct {
	Status byte
	Reason string
}

func (e *KeepError) Error() string {
	return fmt.Sprintf("dht: keeper answered %d: %s", e.Status, e.Reason)
}

// Is matches ErrKeepRefused.
func (e *KeepError) Is(target error) bool { return target == ErrKeepRefused }

// KeepService keeps the records of peers that hand them over (see
// KeepProtocol). Its goroutine is owned by it and ends with Close.
type KeepService struct {
	d       *DHT
	allow   func(peer.ID) bool
	every   time.Duration
	maxKept int

	cancel context.CancelFunc
	done   chan struct{}
	wake   chan struct{}

	mu      sync.Mutex
	enabled bool                   // guarded by mu
	kept    map[peer.ID]*keptEntry // guarded by mu
}

type keptEntry struct {
	rec     *Record
	data    []byte
	holders []peer.ID
	stored  time.Time
}

// NewKeepService returns a disabled KeepService. allow, if not nil, says
// which peers' records to keep (a relay keeps those it holds a reservation
// for); peers must also be directly connected.
func (d *DHT) NewKeepService(allow func(peer.ID) bool) *KeepService {
	ctx, cancel := context.WithCancel(context.Background())
	k := &KeepService{
		d: d, allow: allow, every: d.s.ttl / 2, maxKept: DefaultMaxKept,
		cancel: cancel, done: make(chan struct{}), wake: make(chan struct{}, 1),
		kept: map[peer.ID]*keptEntry{},
	}
	go k.run(ctx)
	return k
}

// SetEnabled starts or stops serving KeepProtocol. Stopping forgets the
// records kept.
func (k *KeepService) SetEnabled(on bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if on == k.enabled {
		return
	}
	k.enabled = on
	if on {
		k.d.h.SetStreamHandler(KeepProtocol, k.handle)
		return
	}
	k.d.h.RemoveStreamHandler(KeepProtocol)
	clear(k.kept)
}

// Kept returns how many records the service keeps.
func (k *KeepService) Kept() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.kept)
}

// Close stops the service and waits for its goroutine. It is idempotent.
func (k *KeepService) Close() error {
	k.SetEnabled(false)
	k.cancel()
	<-k.done
	return nil
}

func (k *KeepService) handle(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(keepTimeout))
	p := s.Conn().RemotePeer()
	status, stored, reason := k.take(s, p)
	_ = writeKeepAnswer(s, status, stored, reason)
}

func (k *KeepService) take(s network.Stream, p peer.ID) (byte, int, string) {
	data, err := readKeepRequest(bufio.NewReader(s))
	if err != nil {
		_ = s.Reset()
		return keepInvalid, 0, err.Error()
	}
	if s.Conn().Stat().Limited || (k.allow != nil && !k.allow(p)) {
		return keepRefused, 0, "no reservation here"
	}
	rec, err := k.d.validator.Verify(RecordKey(p), data)
	if err != nil {
		return keepInvalid, 0, err.Error()
	}
	k.mu.Lock()
	old := k.kept[p]
	full := old == nil && len(k.kept) >= k.maxKept
	k.mu.Unlock()
	if full {
		return keepRefused, 0, "keeper full"
	}
	if old != nil && old.rec.Seq > rec.Seq {
		return keepInvalid, 0, ErrStaleSeq.Error()
	}
	if old != nil && time.Since(old.stored) < minKeepInterval {
		return keepRefused, 0, "too frequent"
	}
	var holders []peer.ID
	if old != nil {
		holders = old.holders
	}
	ctx, cancel := context.WithTimeout(context.Background(), keepTimeout)
	defer cancel()
	res, err := k.d.storeSealed(ctx, RecordKey(p), data, holders)
	if err != nil {
		return keepFailed, 0, err.Error()
	}
	k.mu.Lock()
	if k.enabled {
		k.kept[p] = &keptEntry{rec: rec, data: data, holders: res.Holders, stored: time.Now()}
	}
	k.mu.Unlock()
	return keepStored, len(res.Holders), ""
}

// run stores the kept records again every interval, and forgets those of
// peers that left or whose record expired.
func (k *KeepService) run(ctx context.Context) {
	defer close(k.done)
	t := time.NewTicker(min(k.every, time.Minute))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := k.d.s.now()
		var due []peer.ID
		k.mu.Lock()
		for p, e := range k.kept {
			gone := k.d.h.Network().Connectedness(p) != network.Connected || (k.allow != nil && !k.allow(p))
			if gone || !now.Before(e.rec.Expires) {
				delete(k.kept, p)
				continue
			}
			if time.Since(e.stored) >= k.every {
				due = append(due, p)
			}
		}
		k.mu.Unlock()
		for _, p := range due {
			k.mu.Lock()
			e := k.kept[p]
			k.mu.Unlock()
			if e == nil {
				continue
			}
			rctx, cancel := context.WithTimeout(ctx, keepTimeout)
			res, err := k.d.storeSealed(rctx, RecordKey(p), e.data, e.holders)
			cancel()
			if ctx.Err() != nil {
				return
			}
			k.mu.Lock()
			if cur := k.kept[p]; cur == e {
				e.stored = time.Now()
				if err == nil {
					e.holders = res.Holders
				}
			}
			k.mu.Unlock()
			if err != nil {
				k.d.log.Debugw("keeping record", "peer", p, "error", err)
			}
		}
	}
}

// HandRecord hands the node's sealed record to a keeper over an existing
// connection and returns how many servers stored it.
func (d *DHT) HandRecord(ctx context.Context, keeper peer.ID, data []byte) (int, error) {
	if d.isClosed() {
		return 0, ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, keepTimeout)
	defer cancel()
	s, err := d.h.NewStream(network.WithNoDial(ctx, "hand record"), keeper, KeepProtocol)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	b := binary.AppendUvarint(nil, uint64(len(data)))
	if _, err := s.Write(append(b, data...)); err != nil {
		_ = s.Reset()
		return 0, err
	}
	_ = s.CloseWrite()
	status, stored, reason, err := readKeepAnswer(bufio.NewReader(s))
	if err != nil {
		_ = s.Reset()
		return 0, err
	}
	if status != keepStored {
		return 0, &KeepError{Status: status, Reason: reason}
	}
	return stored, nil
}

// readKeepRequest reads a request: a length-prefixed sealed record.
func readKeepRequest(r io.ByteReader) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("%w: keep request: %v", ErrMalformed, err)
	}
	if n == 0 || n > MaxRecordSize {
		return nil, fmt.Errorf("%w: keep request of %d bytes", ErrTooLarge, n)
	}
	return readN(r, int(n))
}

func readN(r io.ByteReader, n int) ([]byte, error) {
	b := make([]byte, n)
	for i := range b {
		c, err := r.ReadByte()
		if err != nil {
			return nil, fmt.Errorf("%w: truncated: %v", ErrMalformed, err)
		}
		b[i] = c
	}
	return b, nil
}

func writeKeepAnswer(w io.Writer, status byte, stored int, reason string) error {
	if len(reason) > maxKeepMessage {
		reason = reason[:maxKeepMessage]
	}
	b := []byte{status}
	b = binary.AppendUvarint(b, uint64(stored))
	b = binary.AppendUvarint(b, uint64(len(reason)))
	_, err := w.Write(append(b, reason...))
	return err
}

// readKeepAnswer reads a keeper's answer.
func readKeepAnswer(r io.ByteReader) (status byte, stored int, reason string, err error) {
	status, err = r.ReadByte()
	if err != nil {
		return 0, 0, "", fmt.Errorf("%w: keep answer: %v", ErrMalformed, err)
	}
	if status > keepFailed {
		return 0, 0, "", fmt.Errorf("%w: keep answer status %d", ErrMalformed, status)
	}
	n, err := binary.ReadUvarint(r)
	if err != nil || n > 1<<16 {
		return 0, 0, "", fmt.Errorf("%w: keep answer count", ErrMalformed)
	}
	l, err := binary.ReadUvarint(r)
	if err != nil || l > maxKeepMessage {
		return 0, 0, "", fmt.Errorf("%w: keep answer reason", ErrMalformed)
	}
	msg, err := readN(r, int(l))
	if err != nil {
		return 0, 0, "", err
	}
	return status, int(n), string(msg), nil
}

// keepers returns the peers among cands that serve KeepProtocol.
func (d *DHT) keepers(cands []peer.ID) []peer.ID {
	var out []peer.ID
	for _, p := range cands {
		if ok, _ := d.h.Peerstore().SupportsProtocols(p, KeepProtocol); len(ok) > 0 && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}
