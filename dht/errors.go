package dht

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Errors returned when a record is rejected. Every rejection has its own
// sentinel, so callers can branch on it with errors.Is; the returned errors
// wrap the sentinel with details.
var (
	// ErrMalformed is returned for bytes that do not decode as a record: a
	// broken envelope, a foreign payload type, a payload that breaks the wire
	// format, an address that does not parse or has the wrong shape, or a
	// record that expires before it is issued.
	ErrMalformed = errors.New("dht: malformed record")

	// ErrBadSignature is returned when the envelope's signature does not verify.
	ErrBadSignature = errors.New("dht: bad record signature")

	// ErrSignerMismatch is returned when a record is signed by a peer other
	// than the one its key names. The returned error is a *SignerMismatchError.
	ErrSignerMismatch = errors.New("dht: record signer does not match key")

	// ErrBadKey is returned for a key that is not KeyPrefix followed by the
	// canonical text form of a peer ID.
	ErrBadKey = errors.New("dht: bad record key")

	// ErrExpired is returned for a record whose expiry time has passed.
	ErrExpired = errors.New("dht: record expired")

	// ErrFromFuture is returned for a record issued further in the future
	// than the validator's clock skew allows.
	ErrFromFuture = errors.New("dht: record issued in the future")

	// ErrStaleSeq is returned when a record may not replace another one
	// because its sequence number is not higher.
	ErrStaleSeq = errors.New("dht: stale record sequence number")

	// ErrTooLarge is returned for a sealed record larger than MaxRecordSize.
	ErrTooLarge = errors.New("dht: record too large")

	// ErrTooManyAddrs is returned for a record with more than MaxRecordAddrs
	// addresses.
	ErrTooManyAddrs = errors.New("dht: too many addresses in record")

	// ErrOutOfScope is returned for a record with an address that is not
	// public in the validator's scope. The returned error is an
	// *AddrScopeError.
	ErrOutOfScope = errors.New("dht: record address out of scope")

	// ErrUnsupportedVersion is returned for a record payload whose version
	// is not RecordVersion.
	ErrUnsupportedVersion = errors.New("dht: unsupported record version")

	// ErrNotFound is returned when no record is known for a peer.
	ErrNotFound = errors.New("dht: record not found")
)

// AddrScopeError reports an address of a record that is not public in the
// validator's scope. It matches ErrOutOfScope with errors.Is.
type AddrScopeError struct {
	// Addr is the offending address: a direct address, or a relay address
	// whose first hop is out of scope.
	Addr ma.Multiaddr
}

// Error names the address.
func (e *AddrScopeError) Error() string {
	return fmt.Sprintf("%s: %s", ErrOutOfScope.Error(), e.Addr)
}

// Is reports whether target is ErrOutOfScope.
func (e *AddrScopeError) Is(target error) bool { return target == ErrOutOfScope }

// SignerMismatchError reports a record signed by a peer other than the one
// it is stored or sealed for. It matches ErrSignerMismatch with errors.Is.
type SignerMismatchError struct {
	// Key is the peer the record claims to be for: the peer ID in the key it
	// is stored under, or Record.PeerID when sealing.
	Key peer.ID
	// Signer is the peer whose key signed the record.
	Signer peer.ID
}

// Error names both peers.
func (e *SignerMismatchError) Error() string {
	return fmt.Sprintf("%s: record for %s signed by %s", ErrSignerMismatch.Error(), e.Key, e.Signer)
}

// Is reports whether target is ErrSignerMismatch.
func (e *SignerMismatchError) Is(target error) bool { return target == ErrSignerMismatch }
