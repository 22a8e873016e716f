package dht

import (
	"bytes"
	"fmt"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2pos/rendezvous/scope"
)

// Validator checks address records for the DHT. It implements
// github.com/libp2p/go-libp2p-record.Validator for the "p2pos" namespace of
// a record.NamespacedValidator, which passes it full keys ("/p2pos/<id>").
//
// A record is valid under a key when it opens (see OpenRecord), its signer is
// the peer the key names, it is not expired and not issued further in the
// future than the clock skew allows, and every address, direct or through a
// relay (first hop), is public in the validator's scope.
//
// A Validator is immutable and safe for concurrent use.
type Validator struct {
	s validatorSettings
}

type validatorSettings struct {
	scope   scope.Scope
	now     func() time.Time
	maxSkew time.Duration
}

func defaultValidatorSettings() validatorSettings {
	return validatorSettings{
		scope:   scope.Internet(),
		now:     time.Now,
		maxSkew: DefaultMaxClockSkew,
	}
}

// ValidatorOption configures a Validator.
type ValidatorOption func(*validatorSettings)

// WithValidatorScope sets which addresses a record may contain: every direct
// address and the first hop of every relay address must be public in s.
// Default scope.Internet().
func WithValidatorScope(s scope.Scope) ValidatorOption {
	return func(st *validatorSettings) { st.scope = s }
}

// WithValidatorClock sets the clock records are checked against. Default
// time.Now; nil keeps the default.
func WithValidatorClock(now func() time.Time) ValidatorOption {
	return func(st *validatorSettings) {
		if now != nil {
			st.now = now
		}
	}
}

// WithValidatorMaxClockSkew sets how far in the future a record's issue time
// may be; a negative d counts as 0. Default DefaultMaxClockSkew.
func WithValidatorMaxClockSkew(d time.Duration) ValidatorOption {
	return func(st *validatorSettings) { st.maxSkew = max(d, 0) }
}

// NewValidator returns a Validator configured by opts.
func NewValidator(opts ...ValidatorOption) *Validator {
	s := defaultValidatorSettings()
	for _, o := range opts {
		o(&s)
	}
	return &Validator{s: s}
}

// Scope returns the scope addresses are checked against.
func (v *Validator) Scope() scope.Scope { return v.s.scope }

// Validate reports whether value is a valid record for key, the full key
// "/p2pos/<peer-id>". It implements record.Validator. See Verify for the
// errors.
func (v *Validator) Validate(key string, value []byte) error {
	_, err := v.Verify(key, value)
	return err
}

// Verify opens value (see OpenRecord) and checks it as a record for key:
// ErrBadKey if key is not RecordKey of a peer, a *SignerMismatchError
// (ErrSignerMismatch) if another peer signed it, ErrFromFuture if it was
// issued after now plus the allowed clock skew, ErrExpired if now is at or
// past its expiry, and an *AddrScopeError (ErrOutOfScope) for the first
// address that is not public in the validator's scope. On success it returns
// the record.
func (v *Validator) Verify(key string, value []byte) (*Record, error) {
	id, err := PeerIDFromKey(key)
	if err != nil {
		return nil, err
	}
	r, err := OpenRecord(value)
	if err != nil {
		return nil, err
	}
	if r.PeerID != id {
		return nil, &SignerMismatchError{Key: id, Signer: r.PeerID}
	}
	now := v.s.now()
	if r.Issued.After(now.Add(v.s.maxSkew)) {
		return nil, fmt.Errorf("%w: issued %s, now %s", ErrFromFuture,
			r.Issued.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if !now.Before(r.Expires) {
		return nil, fmt.Errorf("%w: at %s, now %s", ErrExpired,
			r.Expires.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if err := v.checkScope(r.Addrs); err != nil {
		return nil, err
	}
	if err := v.checkScope(r.RelayAddrs); err != nil {
		return nil, err
	}
	return r, nil
}

func (v *Validator) checkScope(addrs []ma.Multiaddr) error {
	for _, a := range addrs {
		if !v.s.scope.IsPublic(a) {
			return &AddrScopeError{Addr: a}
		}
	}
	return nil
}

// Select returns the index of the best of values for key: the valid record
// with the highest Seq; among different records of equal Seq, the last one
// (kad-dht passes [offered, held], so the held record stays), and among
// identical ones the first. It skips invalid values
// and fails if none is valid (wrapping ErrNotFound for no values, the first
// value's rejection otherwise). It implements record.Validator.
func (v *Validator) Select(key string, values [][]byte) (int, error) {
	best := -1
	var bestSeq uint64
	var firstErr error
	for i, value := range values {
		r, err := v.Verify(key, value)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		// On equal sequence numbers the later value wins unless it is the
		// same bytes: kad-dht's store calls Select([offered, held]), so a
		// different record whose seq is not higher never replaces the held
		// one, while re-storing the held bytes is accepted.
		if best < 0 || r.Seq > bestSeq || (r.Seq == bestSeq && !bytes.Equal(value, values[best])) {
			best, bestSeq = i, r.Seq
		}
	}
	switch {
	case best >= 0:
		return best, nil
	case len(values) == 0:
		return -1, fmt.Errorf("%w: no values for %q", ErrNotFound, key)
	}
	return -1, fmt.Errorf("dht: none of %d values for %q is valid: %w", len(values), key, firstErr)
}

// CheckReplace reports whether a holder of held for key may replace it with
// next. It returns next's rejection if next is not valid; nil if held is not
// valid (expired, say) or next has a higher Seq; and an error wrapping
// ErrStaleSeq with both sequence numbers otherwise.
func (v *Validator) CheckReplace(key string, held, next []byte) error {
	n, err := v.Verify(key, next)
	if err != nil {
		return err
	}
	h, err := v.Verify(key, held)
	if err != nil {
		return nil
	}
	if n.Seq <= h.Seq {
		return fmt.Errorf("%w: held %d, offered %d", ErrStaleSeq, h.Seq, n.Seq)
	}
	return nil
}
