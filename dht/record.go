package dht

import (
	"fmt"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	ma "github.com/multiformats/go-multiaddr"
)

// Limits and defaults of address records.
const (
	// RecordVersion is the version of the payload wire format Seal writes
	// for a record that offers no data relay, and the lowest OpenRecord
	// accepts.
	RecordVersion = 1
	// RecordVersionDataRelay is the version Seal writes for a record that
	// offers a data relay: version 1 and the offer's caps after it.
	RecordVersionDataRelay = 2

	// MaxRecordSize is the largest accepted sealed record, in bytes of the
	// whole marshalled envelope (public key, payload and signature).
	MaxRecordSize = 1024

	// MaxRecordAddrs is the largest accepted number of addresses in a
	// record, direct and relay addresses together.
	MaxRecordAddrs = 16

	// DefaultRecordTTL is the lifetime a node gives the records it issues.
	DefaultRecordTTL = time.Hour

	// DefaultMaxClockSkew is how far in the future a record's issue time may
	// be before a Validator rejects it with ErrFromFuture.
	DefaultMaxClockSkew = 5 * time.Minute

	// KeyPrefix starts the DHT key of every address record; the key's
	// namespace for a record.NamespacedValidator is "p2pos".
	KeyPrefix = "/p2pos/"
)

const (
	// maxUnixSeconds bounds the issue and expiry times (9999-12-31T23:59:59Z),
	// so every time that decodes can be encoded again.
	maxUnixSeconds = 253402300799

	// maxUDPTimeout bounds NATInfo.UDPTimeout; real binding timeouts are
	// seconds to minutes.
	maxUDPTimeout = 24 * time.Hour
)

// RecordKey returns the DHT key of the address record of id: KeyPrefix
// followed by the text form of id.
func RecordKey(id peer.ID) string { return KeyPrefix + id.String() }

// PeerIDFromKey returns the peer ID named by a key made by RecordKey. It
// accepts only the canonical text form of a peer ID, so every peer has
// exactly one key. Errors wrap ErrBadKey.
func PeerIDFromKey(key string) (peer.ID, error) {
	s, ok := strings.CutPrefix(key, KeyPrefix)
	if !ok {
		return "", fmt.Errorf("%w: %q does not start with %q", ErrBadKey, key, KeyPrefix)
	}
	id, err := peer.Decode(s)
	if err != nil {
		return "", fmt.Errorf("%w: %q: %v", ErrBadKey, key, err)
	}
	if id.String() != s {
		return "", fmt.Errorf("%w: %q is not the canonical form of peer %s", ErrBadKey, key, id)
	}
	return id, nil
}

// Reachability says whether a peer can be dialed directly from the public
// network. Its values match those of go-libp2p's network.Reachability.
type Reachability uint8

// Reachability values.
const (
	ReachabilityUnknown Reachability = 0
	ReachabilityPublic  Reachability = 1
	ReachabilityPrivate Reachability = 2
)

func (r Reachability) valid() bool { return r <= ReachabilityPrivate }

// String returns "unknown", "public" or "private".
func (r Reachability) String() string {
	switch r {
	case ReachabilityUnknown:
		return "unknown"
	case ReachabilityPublic:
		return "public"
	case ReachabilityPrivate:
		return "private"
	}
	return fmt.Sprintf("Reachability(%d)", uint8(r))
}

// Behavior is a NAT's mapping or filtering behaviour, named as in RFC 4787.
type Behavior uint8

// Behavior values.
const (
	// BehaviorUnknown means the behaviour was not measured.
	BehaviorUnknown Behavior = 0
	// EndpointIndependent mapping reuses one external port for every
	// destination; endpoint-independent filtering accepts packets from any
	// source once a mapping exists.
	EndpointIndependent Behavior = 1
	// AddressDependent mapping or filtering depends on the remote IP address.
	AddressDependent Behavior = 2
	// AddressAndPortDependent mapping or filtering depends on the remote IP
	// address and port.
	AddressAndPortDependent Behavior = 3
)

func (b Behavior) valid() bool { return b <= AddressAndPortDependent }

// String returns "unknown", "endpoint-independent", "address-dependent" or
// "address-and-port-dependent".
func (b Behavior) String() string {
	switch b {
	case BehaviorUnknown:
		return "unknown"
	case EndpointIndependent:
		return "endpoint-independent"
	case AddressDependent:
		return "address-dependent"
	case AddressAndPortDependent:
		return "address-and-port-dependent"
	}
	return fmt.Sprintf("Behavior(%d)", uint8(b))
}

// NATInfo describes the NAT in front of a peer, as the peer measured it.
type NATInfo struct {
	Reachability Reachability
	Mapping      Behavior
	Filtering    Behavior
	// UDPTimeout is the measured UDP binding timeout, 0 if unknown. It is
	// encoded in whole seconds (truncated) and must not exceed 24 hours.
	UDPTimeout time.Duration
}

// String describes the NAT for logs, for example
// "public, mapping endpoint-independent, filtering address-dependent, udp timeout 30s".
func (n NATInfo) String() string {
	s := fmt.Sprintf("%s, mapping %s, filtering %s", n.Reachability, n.Mapping, n.Filtering)
	if n.UDPTimeout > 0 {
		s += fmt.Sprintf(", udp timeout %s", n.UDPTimeout)
	}
	return s
}

// Record says where a peer can be reached. It travels as a signed libp2p
// envelope (see Seal and OpenRecord); the payload format is described in
// record_codec.go.
type Record struct {
	// PeerID is the signer. Seal sets it from the signing key; OpenRecord
	// derives it from the envelope's public key. It is not part of the
	// payload.
	PeerID peer.ID
	// Seq orders the records of one peer: a record replaces another only
	// with a higher Seq.
	Seq uint64
	// Issued is when the record was made, with unix second precision.
	Issued time.Time
	// Expires is when the record stops being valid, with unix second
	// precision. It must be after Issued.
	Expires time.Time
	// Addrs are the direct addresses of the peer, without /p2p/<PeerID>.
	// They must not go through a relay (contain /p2p-circuit).
	Addrs []ma.Multiaddr
	// RelayAddrs are addresses of relays holding a reservation for the peer,
	// each of the form <transport>/p2p/<relay>/p2p-circuit, without the
	// peer's own /p2p/<PeerID> suffix (AddrInfo appends it).
	RelayAddrs []ma.Multiaddr
	// NAT describes the NAT in front of the peer.
	NAT NATInfo
	// DataRelay is what the peer offers as a volunteer data relay; the
	// zero value offers none. Only a public peer may offer one.
	DataRelay DataRelay
}

// DataRelay is what a public peer offers as a volunteer data relay:
// relayed connections that carry application traffic, not only the
// setup of a direct one, within the peer's caps. The relay enforces them
// and closes a relayed connection that reaches one. The zero value offers
// none.
type DataRelay struct {
	// Duration bounds one relayed connection: whole seconds, from 1 s to
	// 24 h.
	Duration time.Duration
	// Data bounds the bytes one relayed connection carries each way: whole
	// KiB, at least 1 KiB, at most 1 TiB.
	Data int64
	// Circuits bounds the relayed connections to one peer at once, from 1
	// to 1024.
	Circuits int
}

// IsZero tells whether d offers nothing.
func (d DataRelay) IsZero() bool { return d == DataRelay{} }

// Bounds of a DataRelay offer.
const (
	maxRelayDuration = 24 * time.Hour
	maxRelayData     = 1 << 40
	maxRelayCircuits = 1024
)

// Validate tells whether d is a valid offer (or none), as Seal checks it.
func (d DataRelay) Validate() error { return d.check() }

func (d DataRelay) check() error {
	if d.IsZero() {
		return nil
	}
	switch {
	case d.Duration < time.Second || d.Duration > maxRelayDuration || d.Duration%time.Second != 0:
		return fmt.Errorf("%w: data relay duration %s out of range", ErrMalformed, d.Duration)
	case d.Data < 1024 || d.Data > maxRelayData || d.Data%1024 != 0:
		return fmt.Errorf("%w: data relay data %d out of range", ErrMalformed, d.Data)
	case d.Circuits < 1 || d.Circuits > maxRelayCircuits:
		return fmt.Errorf("%w: data relay circuits %d out of range", ErrMalformed, d.Circuits)
	}
	return nil
}

// Seal signs r with key and returns the marshalled envelope, ready to store
// under RecordKey(r.PeerID). It sets r.PeerID to the peer ID of key, and
// fails with a *SignerMismatchError if r.PeerID is already set to another
// peer.
//
// Seal checks the structural rules OpenRecord enforces and returns the same
// errors: ErrTooManyAddrs for more than MaxRecordAddrs addresses,
// ErrTooLarge for an envelope over MaxRecordSize bytes, and ErrMalformed for
// an address of the wrong shape (see Record.Addrs and Record.RelayAddrs), an
// Expires not after Issued (in whole seconds), times before 1970 or after
// 9999, unknown NAT values or an out-of-range UDP timeout. It does not check
// addresses against a scope; a Validator does.
func (r *Record) Seal(key crypto.PrivKey) ([]byte, error) {
	if key == nil {
		return nil, fmt.Errorf("dht: sealing record: nil private key")
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("dht: sealing record: %w", err)
	}
	if r.PeerID != "" && r.PeerID != id {
		return nil, &SignerMismatchError{Key: r.PeerID, Signer: id}
	}
	if err := r.checkShape(); err != nil {
		return nil, err
	}
	env, err := record.Seal(&payload{rec: *r}, key)
	if err != nil {
		return nil, fmt.Errorf("dht: sealing record: %w", err)
	}
	data, err := env.Marshal()
	if err != nil {
		return nil, fmt.Errorf("dht: marshalling record envelope: %w", err)
	}
	if len(data) > MaxRecordSize {
		return nil, fmt.Errorf("%w: sealed record is %d bytes, limit %d", ErrTooLarge, len(data), MaxRecordSize)
	}
	r.PeerID = id
	return data, nil
}

// OpenRecord verifies the signature of a sealed record and decodes it. The
// returned record's PeerID is the signer's. OpenRecord checks the record's
// structure but not its times, key or addresses' scope; a Validator does.
//
// Errors: ErrTooLarge (checked first, before parsing), ErrMalformed,
// ErrBadSignature, ErrUnsupportedVersion and ErrTooManyAddrs.
func OpenRecord(data []byte) (*Record, error) {
	if len(data) > MaxRecordSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), MaxRecordSize)
	}
	var p payload
	env, err := record.ConsumeTypedEnvelope(data, &p)
	switch {
	case env == nil:
		return nil, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	case err != nil && !p.decoded:
		// The envelope parsed but its payload was never reached: the
		// signature did not verify.
		return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
	case string(env.PayloadType) != recordCodec:
		// ConsumeTypedEnvelope does not compare payload types; a correctly
		// signed envelope of another type is not an address record.
		return nil, fmt.Errorf("%w: payload type %x, want %x", ErrMalformed, env.PayloadType, recordCodec)
	case err != nil:
		return nil, p.err
	}
	id, err := peer.IDFromPublicKey(env.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%w: signer key: %v", ErrMalformed, err)
	}
	rec := p.rec
	rec.PeerID = id
	return &rec, nil
}

// AddrInfo returns the peer's ID and addresses for dialing: the direct
// addresses, then the relay addresses suffixed with /p2p/<PeerID>.
func (r *Record) AddrInfo() peer.AddrInfo {
	info := peer.AddrInfo{
		ID:    r.PeerID,
		Addrs: make([]ma.Multiaddr, 0, len(r.Addrs)+len(r.RelayAddrs)),
	}
	info.Addrs = append(info.Addrs, r.Addrs...)
	var self *ma.Component
	if r.PeerID != "" {
		self, _ = ma.NewComponent("p2p", r.PeerID.String())
	}
	for _, a := range r.RelayAddrs {
		if self == nil {
			info.Addrs = append(info.Addrs, a)
			continue
		}
		full := make(ma.Multiaddr, 0, len(a)+1)
		info.Addrs = append(info.Addrs, append(append(full, a...), *self))
	}
	return info
}

// String describes the record for logs.
func (r *Record) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "record %s seq %d issued %s expires %s nat (%s)",
		r.PeerID, r.Seq,
		r.Issued.UTC().Format(time.RFC3339), r.Expires.UTC().Format(time.RFC3339), r.NAT)
	fmt.Fprintf(&b, " addrs %v relays %v", r.Addrs, r.RelayAddrs)
	if d := r.DataRelay; !d.IsZero() {
		fmt.Fprintf(&b, " data relay (%s, %d bytes, %d circuits)", d.Duration, d.Data, d.Circuits)
	}
	return b.String()
}

// checkShape checks the context-free rules every record obeys: the ones
// Seal and OpenRecord enforce, as opposed to the time, key and scope checks
// of a Validator.
func (r *Record) checkShape() error {
	issued, expires := r.Issued.Unix(), r.Expires.Unix()
	if issued < 0 || issued > maxUnixSeconds {
		return fmt.Errorf("%w: issue time %s out of range", ErrMalformed, r.Issued)
	}
	if expires < 0 || expires > maxUnixSeconds {
		return fmt.Errorf("%w: expiry time %s out of range", ErrMalformed, r.Expires)
	}
	if expires <= issued {
		return fmt.Errorf("%w: expires %s, not after issued %s", ErrMalformed,
			r.Expires.UTC().Format(time.RFC3339), r.Issued.UTC().Format(time.RFC3339))
	}
	if n := r.NAT; !n.Reachability.valid() || !n.Mapping.valid() || !n.Filtering.valid() {
		return fmt.Errorf("%w: unknown NAT values (%s)", ErrMalformed, n)
	}
	if t := r.NAT.UDPTimeout; t < 0 || t > maxUDPTimeout {
		return fmt.Errorf("%w: UDP timeout %s out of range", ErrMalformed, t)
	}
	if err := r.DataRelay.check(); err != nil {
		return err
	}
	if !r.DataRelay.IsZero() && r.NAT.Reachability != ReachabilityPublic {
		return fmt.Errorf("%w: a data relay offer from a peer that is not public (%s)", ErrMalformed, r.NAT.Reachability)
	}
	if n := len(r.Addrs) + len(r.RelayAddrs); n > MaxRecordAddrs {
		return fmt.Errorf("%w: %d addresses, limit %d", ErrTooManyAddrs, n, MaxRecordAddrs)
	}
	for _, a := range r.Addrs {
		if err := checkDirectAddr(a); err != nil {
			return err
		}
	}
	for _, a := range r.RelayAddrs {
		if err := checkRelayAddr(a); err != nil {
			return err
		}
	}
	return nil
}

func checkDirectAddr(a ma.Multiaddr) error {
	if len(a) == 0 {
		return fmt.Errorf("%w: empty direct address", ErrMalformed)
	}
	for _, c := range a {
		if c.Code() == ma.P_CIRCUIT {
			return fmt.Errorf("%w: direct address %s goes through a relay", ErrMalformed, a)
		}
	}
	return nil
}

// checkRelayAddr accepts <transport>/p2p/<relay>/p2p-circuit: exactly one
// relay hop, named by its peer ID, reached over a transport address.
func checkRelayAddr(a ma.Multiaddr) error {
	n := len(a)
	if n < 3 || a[n-1].Code() != ma.P_CIRCUIT || a[n-2].Code() != ma.P_P2P {
		return fmt.Errorf("%w: relay address %q is not <transport>/p2p/<relay>/p2p-circuit", ErrMalformed, a)
	}
	for _, c := range a[:n-2] {
		if c.Code() == ma.P_CIRCUIT || c.Code() == ma.P_P2P {
			return fmt.Errorf("%w: relay address %q has more than one hop", ErrMalformed, a)
		}
	}
	return nil
}
