package dht

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"time"

	ma "github.com/multiformats/go-multiaddr"
)

// An address record travels as a libp2p signed envelope
// (github.com/libp2p/go-libp2p/core/record): a protobuf holding the signer's
// public key, the payload type, the payload and a signature over
//
//	uvarint(len(domain)) domain uvarint(len(type)) type uvarint(len(payload)) payload
//
// with domain "p2pos-address-record" and payload type 0x70 0x32 (ASCII "p2";
// an opaque tag checked on open, not a multicodec). The signer's peer ID is
// the record's peer ID, so the payload does not repeat it.
//
// The payload, in order. A uvarint is unsigned LEB128 as in encoding/binary
// and must be minimal (no redundant 0x80 bytes), so every record has exactly
// one encoding:
//
//	field        size      meaning
//	version      1         RecordVersion (1), or RecordVersionDataRelay (2)
//	                       when the record offers a data relay; any other
//	                       value is rejected with ErrUnsupportedVersion
//	seq          uvarint   sequence number
//	issued       uvarint   issue time, unix seconds, at most 253402300799
//	expires      uvarint   expiry time, unix seconds, greater than issued
//	reach        1         Reachability: 0 unknown, 1 public, 2 private
//	mapping      1         Behavior of the NAT mapping: 0 unknown,
//	                       1 endpoint-independent, 2 address-dependent,
//	                       3 address-and-port-dependent
//	filtering    1         Behavior of the NAT filtering, as mapping
//	udp-timeout  uvarint   UDP binding timeout in seconds, 0 unknown,
//	                       at most 86400
//	ndirect      1         number of direct addresses
//	             ndirect × (uvarint length, then that many bytes of a
//	                       binary multiaddr)
//	nrelay       1         number of relay addresses
//	             nrelay ×  (uvarint length, then that many bytes of a
//	                       binary multiaddr)
//
// and in version 2 only, the data relay offer (DataRelay), which a
// version 2 record must have and which only a public peer may make:
//
//	duration     uvarint   seconds one relayed connection may last, 1-86400
//	data         uvarint   KiB one relayed connection may carry each way,
//	                       1-2^30
//	circuits     uvarint   relayed connections to one peer at once, 1-1024
//
// ndirect + nrelay is at most MaxRecordAddrs (else ErrTooManyAddrs).
// Every multiaddr is non-empty and parses. Direct addresses do not contain
// /p2p-circuit; relay addresses are <transport>/p2p/<relay>/p2p-circuit.
// Nothing may follow the last field. Any violation other than the
// version and the address count is ErrMalformed.
//
// For example, seq 7, issued 2026-01-01T00:00:00Z, expiring an hour later,
// behind an endpoint-independent mapping with address-and-port-dependent
// filtering and a 30s UDP timeout, reachable at /ip4/1.2.3.4/udp/4001/quic-v1,
// with no relay addresses:
//
//	01                    version 1
//	07                    seq 7
//	80 f2 d6 ca 06        issued 1767225600
//	90 8e d7 ca 06        expires 1767229200
//	02 01 03              private, endpoint-independent, address-and-port-dependent
//	1e                    udp timeout 30s
//	01                    1 direct address
//	0b                    11 bytes:
//	04 01 02 03 04        /ip4/1.2.3.4
//	91 02 0f a1           /udp/4001
//	cd 03                 /quic-v1
//	00                    0 relay addresses

const (
	// recordDomain is the signature domain of address record envelopes.
	recordDomain = "p2pos-address-record"
	// recordCodec is the envelope payload type of address records.
	recordCodec = "\x70\x32"
)

// payload adapts Record to go-libp2p's record.Record for sealing and
// opening envelopes.
type payload struct {
	rec Record
	// decoded is set once UnmarshalRecord ran, that is once the envelope's
	// signature verified; err is what it returned.
	decoded bool
	err     error
}

// Domain implements record.Record.
func (*payload) Domain() string { return recordDomain }

// Codec implements record.Record.
func (*payload) Codec() []byte { return []byte(recordCodec) }

// MarshalRecord implements record.Record.
func (p *payload) MarshalRecord() ([]byte, error) { return encodePayload(&p.rec) }

// UnmarshalRecord implements record.Record.
func (p *payload) UnmarshalRecord(b []byte) error {
	p.decoded = true
	p.rec, p.err = decodePayload(b)
	return p.err
}

// encodePayload encodes r (whose PeerID it ignores) in the payload format.
func encodePayload(r *Record) ([]byte, error) {
	if err := r.checkShape(); err != nil {
		return nil, err
	}
	size := 1 + 3*binary.MaxVarintLen64 + 3 + binary.MaxVarintLen64 + 2
	for _, a := range r.Addrs {
		size += binary.MaxVarintLen16 + len(a.Bytes())
	}
	for _, a := range r.RelayAddrs {
		size += binary.MaxVarintLen16 + len(a.Bytes())
	}
	size += 3 * binary.MaxVarintLen64
	b := make([]byte, 0, size)
	if r.DataRelay.IsZero() {
		b = append(b, RecordVersion)
	} else {
		b = append(b, RecordVersionDataRelay)
	}
	b = binary.AppendUvarint(b, r.Seq)
	b = binary.AppendUvarint(b, uint64(r.Issued.Unix()))
	b = binary.AppendUvarint(b, uint64(r.Expires.Unix()))
	b = append(b, byte(r.NAT.Reachability), byte(r.NAT.Mapping), byte(r.NAT.Filtering))
	b = binary.AppendUvarint(b, uint64(r.NAT.UDPTimeout/time.Second))
	b = appendAddrs(b, r.Addrs)
	b = appendAddrs(b, r.RelayAddrs)
	if d := r.DataRelay; !d.IsZero() {
		b = binary.AppendUvarint(b, uint64(d.Duration/time.Second))
		b = binary.AppendUvarint(b, uint64(d.Data/1024))
		b = binary.AppendUvarint(b, uint64(d.Circuits))
	}
	return b, nil
}

func appendAddrs(b []byte, addrs []ma.Multiaddr) []byte {
	b = append(b, byte(len(addrs)))
	for _, a := range addrs {
		ab := a.Bytes()
		b = binary.AppendUvarint(b, uint64(len(ab)))
		b = append(b, ab...)
	}
	return b
}

// decodePayload decodes a payload; the returned record has no PeerID.
func decodePayload(b []byte) (Record, error) {
	if len(b) == 0 {
		return Record{}, fmt.Errorf("%w: empty payload", ErrMalformed)
	}
	if b[0] != RecordVersion && b[0] != RecordVersionDataRelay {
		return Record{}, fmt.Errorf("%w: version %d, want %d or %d", ErrUnsupportedVersion, b[0], RecordVersion, RecordVersionDataRelay)
	}
	d := decoder{b: b[1:]}
	var r Record
	r.Seq = d.uvarint("seq")
	issued := d.uvarint("issue time")
	expires := d.uvarint("expiry time")
	r.NAT.Reachability = Reachability(d.byte("reachability"))
	r.NAT.Mapping = Behavior(d.byte("mapping"))
	r.NAT.Filtering = Behavior(d.byte("filtering"))
	udpTimeout := d.uvarint("UDP timeout")
	ndirect := int(d.byte("direct address count"))
	if d.err == nil && ndirect > MaxRecordAddrs {
		return Record{}, fmt.Errorf("%w: %d direct addresses, limit %d", ErrTooManyAddrs, ndirect, MaxRecordAddrs)
	}
	r.Addrs = d.addrs(ndirect, "direct address")
	nrelay := int(d.byte("relay address count"))
	if d.err == nil && ndirect+nrelay > MaxRecordAddrs {
		return Record{}, fmt.Errorf("%w: %d addresses, limit %d", ErrTooManyAddrs, ndirect+nrelay, MaxRecordAddrs)
	}
	r.RelayAddrs = d.addrs(nrelay, "relay address")
	var offer [3]uint64
	if b[0] == RecordVersionDataRelay {
		offer = [3]uint64{d.uvarint("data relay duration"), d.uvarint("data relay data"), d.uvarint("data relay circuits")}
	}
	if d.err != nil {
		return Record{}, d.err
	}
	if len(d.b) != 0 {
		return Record{}, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(d.b))
	}
	if issued > maxUnixSeconds || expires > maxUnixSeconds {
		return Record{}, fmt.Errorf("%w: time out of range", ErrMalformed)
	}
	if udpTimeout > uint64(maxUDPTimeout/time.Second) {
		return Record{}, fmt.Errorf("%w: UDP timeout %ds out of range", ErrMalformed, udpTimeout)
	}
	r.Issued = time.Unix(int64(issued), 0).UTC()
	r.Expires = time.Unix(int64(expires), 0).UTC()
	r.NAT.UDPTimeout = time.Duration(udpTimeout) * time.Second
	if b[0] == RecordVersionDataRelay {
		if offer[0] == 0 || offer[0] > uint64(maxRelayDuration/time.Second) || offer[1] == 0 || offer[1] > maxRelayData/1024 ||
			offer[2] == 0 || offer[2] > maxRelayCircuits {
			return Record{}, fmt.Errorf("%w: data relay offer %v out of range", ErrMalformed, offer)
		}
		r.DataRelay = DataRelay{Duration: time.Duration(offer[0]) * time.Second, Data: int64(offer[1]) * 1024, Circuits: int(offer[2])}
	}
	if err := r.checkShape(); err != nil {
		return Record{}, err
	}
	return r, nil
}

// decoder reads payload fields from b. The first failure is kept in err;
// after it every read returns a zero value.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
}

func (d *decoder) byte(field string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail("truncated at %s", field)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint(field string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	switch {
	case n == 0:
		d.fail("truncated at %s", field)
		return 0
	case n < 0:
		d.fail("%s overflows 64 bits", field)
		return 0
	case n != uvarintLen(v):
		d.fail("%s is not a minimal uvarint", field)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) addrs(n int, field string) []ma.Multiaddr {
	if d.err != nil || n == 0 {
		return nil
	}
	out := make([]ma.Multiaddr, 0, n)
	for i := range n {
		l := d.uvarint(field + " length")
		if d.err != nil {
			return nil
		}
		if l == 0 || l > uint64(len(d.b)) {
			d.fail("%s %d: bad length %d", field, i, l)
			return nil
		}
		a, err := ma.NewMultiaddrBytes(d.b[:l])
		if err != nil {
			d.fail("%s %d: %v", field, i, err)
			return nil
		}
		d.b = d.b[l:]
		out = append(out, a)
	}
	return out
}

// uvarintLen is the length of the minimal uvarint encoding of v.
func uvarintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }
