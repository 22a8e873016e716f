package dht

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	recordpb "github.com/libp2p/go-libp2p/core/record/pb"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"
)

// testNow is the fixed time tests issue and validate records at.
var testNow = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// testRelayID is the peer ID of the ed25519 key with seed 32 × 0x01, used as
// the relay in relay addresses.
const testRelayID = "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"

func newKey(t testing.TB) (crypto.PrivKey, peer.ID) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, id
}

// seededKey returns a deterministic key, so that sealed bytes are stable.
func seededKey(t testing.TB, b byte) (crypto.PrivKey, peer.ID) {
	t.Helper()
	k, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, ed25519.SeedSize)))
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, id
}

func addr(t testing.TB, s string) ma.Multiaddr {
	t.Helper()
	a, err := ma.NewMultiaddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func addrs(t testing.TB, ss ...string) []ma.Multiaddr {
	t.Helper()
	out := make([]ma.Multiaddr, len(ss))
	for i, s := range ss {
		out[i] = addr(t, s)
	}
	return out
}

func relayAddr(t testing.TB, transport string) ma.Multiaddr {
	t.Helper()
	return addr(t, transport+"/p2p/"+testRelayID+"/p2p-circuit")
}

// testRecord returns a valid record issued at testNow.
func testRecord(t testing.TB) *Record {
	t.Helper()
	return &Record{
		Seq:     uint64(testNow.UnixMilli()),
		Issued:  testNow,
		Expires: testNow.Add(DefaultRecordTTL),
		Addrs: addrs(t,
			"/ip4/1.2.3.4/udp/4001/quic-v1",
			"/ip4/1.2.3.4/tcp/4001",
			"/ip6/2001:4860::1/udp/4001/quic-v1",
		),
		RelayAddrs: []ma.Multiaddr{relayAddr(t, "/ip4/5.6.7.8/udp/4001/quic-v1")},
		NAT: NATInfo{
			Reachability: ReachabilityPrivate,
			Mapping:      EndpointIndependent,
			Filtering:    AddressAndPortDependent,
			UDPTimeout:   30 * time.Second,
		},
	}
}

func seal(t testing.TB, r *Record, key crypto.PrivKey) []byte {
	t.Helper()
	data, err := r.Seal(key)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return data
}

// rawRecord seals arbitrary payload bytes, to build correctly signed
// envelopes that Seal would refuse to make.
type rawRecord struct {
	domain, codec string
	b             []byte
}

func (r *rawRecord) Domain() string                 { return r.domain }
func (r *rawRecord) Codec() []byte                  { return []byte(r.codec) }
func (r *rawRecord) MarshalRecord() ([]byte, error) { return r.b, nil }
func (r *rawRecord) UnmarshalRecord(b []byte) error { r.b = b; return nil }

func sealRaw(t testing.TB, key crypto.PrivKey, domain, codec string, payload []byte) []byte {
	t.Helper()
	env, err := record.Seal(&rawRecord{domain: domain, codec: codec, b: payload}, key)
	if err != nil {
		t.Fatal(err)
	}
	data, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// rawPayload builds a payload field by field, without any checks.
type rawPayload struct {
	version         byte
	seq             uint64
	issued, expires uint64
	nat             [3]byte
	udpTimeout      uint64
	direct, relay   [][]byte
}

func validRawPayload(t testing.TB) rawPayload {
	return rawPayload{
		version: RecordVersion,
		seq:     1,
		issued:  uint64(testNow.Unix()),
		expires: uint64(testNow.Add(time.Hour).Unix()),
		nat:     [3]byte{1, 1, 1},
		direct:  [][]byte{addr(t, "/ip4/1.2.3.4/udp/4001/quic-v1").Bytes()},
		relay:   [][]byte{relayAddr(t, "/ip4/5.6.7.8/tcp/4001").Bytes()},
	}
}

func (p rawPayload) bytes() []byte {
	b := []byte{p.version}
	b = binary.AppendUvarint(b, p.seq)
	b = binary.AppendUvarint(b, p.issued)
	b = binary.AppendUvarint(b, p.expires)
	b = append(b, p.nat[:]...)
	b = binary.AppendUvarint(b, p.udpTimeout)
	for _, list := range [][][]byte{p.direct, p.relay} {
		b = append(b, byte(len(list)))
		for _, a := range list {
			b = binary.AppendUvarint(b, uint64(len(a)))
			b = append(b, a...)
		}
	}
	return b
}

func recordsEqual(a, b *Record) error {
	switch {
	case a.PeerID != b.PeerID:
		return fmt.Errorf("PeerID %s != %s", a.PeerID, b.PeerID)
	case a.Seq != b.Seq:
		return fmt.Errorf("Seq %d != %d", a.Seq, b.Seq)
	case !a.Issued.Equal(b.Issued):
		return fmt.Errorf("Issued %s != %s", a.Issued, b.Issued)
	case !a.Expires.Equal(b.Expires):
		return fmt.Errorf("Expires %s != %s", a.Expires, b.Expires)
	case a.NAT != b.NAT:
		return fmt.Errorf("NAT %+v != %+v", a.NAT, b.NAT)
	case a.DataRelay != b.DataRelay:
		return fmt.Errorf("DataRelay %+v != %+v", a.DataRelay, b.DataRelay)
	case !addrsEqual(a.Addrs, b.Addrs):
		return fmt.Errorf("Addrs %v != %v", a.Addrs, b.Addrs)
	case !addrsEqual(a.RelayAddrs, b.RelayAddrs):
		return fmt.Errorf("RelayAddrs %v != %v", a.RelayAddrs, b.RelayAddrs)
	}
	return nil
}

func addrsEqual(a, b []ma.Multiaddr) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

func TestRecordKey(t *testing.T) {
	_, id := newKey(t)
	key := RecordKey(id)
	if want := "/p2pos/" + id.String(); key != want {
		t.Fatalf("RecordKey = %q, want %q", key, want)
	}
	got, err := PeerIDFromKey(key)
	if err != nil || got != id {
		t.Fatalf("PeerIDFromKey(%q) = %s, %v; want %s", key, got, err, id)
	}

	for _, key := range []string{
		"",
		"/p2pos/",
		"/p2pos/not-a-peer-id",
		id.String(),
		"/ipns/" + id.String(),
		"/p2pos/" + id.String() + "/",
		"/p2pos/" + peer.ToCid(id).String(), // valid, but not the canonical text form
		"/p2pos/" + string(id),              // binary form
	} {
		if _, err := PeerIDFromKey(key); !errors.Is(err, ErrBadKey) {
			t.Errorf("PeerIDFromKey(%q) = %v, want ErrBadKey", key, err)
		}
	}
}

func TestSealOpenRoundTrip(t *testing.T) {
	key, id := newKey(t)
	for name, r := range map[string]*Record{
		"full": testRecord(t),
		"empty": {
			Issued:  testNow,
			Expires: testNow.Add(time.Second),
		},
		"max": {
			Seq:     ^uint64(0),
			Issued:  time.Unix(maxUnixSeconds-1, 0),
			Expires: time.Unix(maxUnixSeconds, 0),
			NAT:     NATInfo{Reachability: ReachabilityPublic, Mapping: AddressDependent, Filtering: AddressDependent, UDPTimeout: 24 * time.Hour},
		},
		"data relay": {
			Issued:    testNow,
			Expires:   testNow.Add(time.Hour),
			NAT:       NATInfo{Reachability: ReachabilityPublic},
			Addrs:     addrs(t, "/ip4/1.2.3.4/udp/4001/quic-v1"),
			DataRelay: DataRelay{Duration: time.Hour, Data: 64 << 20, Circuits: 16},
		},
		"loopback": {
			Issued:  testNow,
			Expires: testNow.Add(time.Hour),
			Addrs:   addrs(t, "/ip4/127.0.0.1/udp/4001/quic-v1", "/ip6/::1/tcp/4001", "/dns4/example.com/tcp/443/tls/ws"),
		},
	} {
		t.Run(name, func(t *testing.T) {
			data := seal(t, r, key)
			if r.PeerID != id {
				t.Fatalf("Seal set PeerID %s, want %s", r.PeerID, id)
			}
			got, err := OpenRecord(data)
			if err != nil {
				t.Fatalf("OpenRecord: %v", err)
			}
			if err := recordsEqual(got, r); err != nil {
				t.Fatal(err)
			}
			// Sealing the opened record again gives the same bytes:
			// ed25519 signatures and the payload encoding are deterministic.
			if again := seal(t, got, key); !bytes.Equal(again, data) {
				t.Fatalf("resealed record differs:\n%x\n%x", again, data)
			}
		})
	}
}

func TestSealTruncatesToSeconds(t *testing.T) {
	key, _ := newKey(t)
	r := testRecord(t)
	r.Issued = testNow.Add(700 * time.Millisecond)
	r.Expires = r.Issued.Add(time.Hour)
	r.NAT.UDPTimeout = 30*time.Second + 900*time.Millisecond
	got, err := OpenRecord(seal(t, r, key))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Issued.Equal(testNow) || !got.Expires.Equal(testNow.Add(time.Hour)) || got.NAT.UDPTimeout != 30*time.Second {
		t.Fatalf("got issued %s expires %s udp %s", got.Issued, got.Expires, got.NAT.UDPTimeout)
	}
}

func TestPayloadFixedHex(t *testing.T) {
	tests := []struct {
		name string
		rec  Record
		hex  string
	}{{
		// The example of the format description in record_codec.go.
		name: "direct",
		rec: Record{
			Seq:     7,
			Issued:  time.Unix(1767225600, 0).UTC(),
			Expires: time.Unix(1767229200, 0).UTC(),
			Addrs:   addrs(t, "/ip4/1.2.3.4/udp/4001/quic-v1"),
			NAT: NATInfo{
				Reachability: ReachabilityPrivate,
				Mapping:      EndpointIndependent,
				Filtering:    AddressAndPortDependent,
				UDPTimeout:   30 * time.Second,
			},
		},
		hex: "01" + "07" + "80f2d6ca06" + "908ed7ca06" + "020103" + "1e" +
			"01" + "0b" + "0401020304" + "91020fa1" + "cd03" +
			"00",
	}, {
		name: "relay",
		rec: Record{
			Seq:        300,
			Issued:     time.Unix(1767225600, 0).UTC(),
			Expires:    time.Unix(1767225601, 0).UTC(),
			RelayAddrs: []ma.Multiaddr{relayAddr(t, "/ip4/5.6.7.8/tcp/4001")},
			NAT:        NATInfo{Reachability: ReachabilityPublic},
		},
		hex: "01" + "ac02" + "80f2d6ca06" + "81f2d6ca06" + "010000" + "00" +
			"00" + // no direct addresses
			"01" + "33" + // 1 relay address, 51 bytes:
			"0405060708" + "060fa1" + // /ip4/5.6.7.8/tcp/4001
			"a50326" + "002408011220" + // /p2p/, 38 bytes: identity multihash of a protobuf ed25519 key
			"8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c" +
			"a202", // /p2p-circuit
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, err := hex.DecodeString(tt.hex)
			if err != nil {
				t.Fatal(err)
			}
			got, err := encodePayload(&tt.rec)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("encoded\n%x\nwant\n%x", got, want)
			}
			dec, err := decodePayload(want)
			if err != nil {
				t.Fatal(err)
			}
			if err := recordsEqual(&dec, &tt.rec); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestSealedSize(t *testing.T) {
	key, _ := newKey(t)
	direct := []string{
		"/ip4/1.2.3.4/udp/4001/quic-v1",
		"/ip4/1.2.3.5/udp/4001/quic-v1",
		"/ip4/1.2.3.4/tcp/4001",
		"/ip4/1.2.3.5/tcp/4001",
		"/ip4/1.2.3.6/udp/4001/quic-v1",
		"/ip4/1.2.3.7/udp/4001/quic-v1",
		"/ip4/1.2.3.6/tcp/4001",
		"/ip4/1.2.3.7/tcp/4001",
	}
	relays := []ma.Multiaddr{
		relayAddr(t, "/ip4/5.6.7.8/udp/4001/quic-v1"),
		relayAddr(t, "/ip4/5.6.7.9/udp/4001/quic-v1"),
	}
	size := func(n int) int {
		r := testRecord(t)
		r.Addrs = addrs(t, direct[:n]...)
		r.RelayAddrs = relays
		return len(seal(t, r, key))
	}
	for _, n := range []int{1, 4, 8} {
		t.Logf("sealed record with %d direct + %d relay addresses: %d bytes", n, len(relays), size(n))
	}
	if got := size(4); got > 300 {
		t.Errorf("sealed record with 4 direct + 2 relay addresses is %d bytes, want <= 300", got)
	}
}

func TestSealRejects(t *testing.T) {
	key, _ := newKey(t)
	_, other := newKey(t)
	longDNS := "/dns4/" + strings.Repeat("a", 60) + ".example.com/tcp/443"
	tests := []struct {
		name   string
		modify func(r *Record)
		want   error
	}{
		{"other peer", func(r *Record) { r.PeerID = other }, ErrSignerMismatch},
		{"17 addresses", func(r *Record) {
			r.Addrs = nil
			for i := range 16 {
				r.Addrs = append(r.Addrs, addr(t, fmt.Sprintf("/ip4/1.2.3.%d/tcp/4001", i)))
			}
		}, ErrTooManyAddrs},
		{"too large", func(r *Record) {
			r.Addrs = nil
			r.RelayAddrs = nil
			for range 14 {
				r.Addrs = append(r.Addrs, addr(t, longDNS))
			}
		}, ErrTooLarge},
		{"expires at issue", func(r *Record) { r.Expires = r.Issued }, ErrMalformed},
		{"expires before issue", func(r *Record) { r.Expires = r.Issued.Add(-time.Hour) }, ErrMalformed},
		{"expires in same second", func(r *Record) { r.Expires = r.Issued.Add(500 * time.Millisecond) }, ErrMalformed},
		{"zero times", func(r *Record) { r.Issued, r.Expires = time.Time{}, time.Time{} }, ErrMalformed},
		{"zero expiry", func(r *Record) { r.Expires = time.Time{} }, ErrMalformed},
		{"after year 9999", func(r *Record) { r.Expires = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, ErrMalformed},
		{"unknown reachability", func(r *Record) { r.NAT.Reachability = 3 }, ErrMalformed},
		{"data relay from a private peer", func(r *Record) {
			r.DataRelay = DataRelay{Duration: time.Hour, Data: 1 << 20, Circuits: 1}
		}, ErrMalformed},
		{"data relay without circuits", func(r *Record) {
			r.NAT.Reachability = ReachabilityPublic
			r.DataRelay = DataRelay{Duration: time.Hour, Data: 1 << 20}
		}, ErrMalformed},
		{"data relay of half a KiB", func(r *Record) {
			r.NAT.Reachability = ReachabilityPublic
			r.DataRelay = DataRelay{Duration: time.Hour, Data: 512, Circuits: 1}
		}, ErrMalformed},
		{"data relay for two days", func(r *Record) {
			r.NAT.Reachability = ReachabilityPublic
			r.DataRelay = DataRelay{Duration: 48 * time.Hour, Data: 1 << 20, Circuits: 1}
		}, ErrMalformed},
		{"unknown mapping", func(r *Record) { r.NAT.Mapping = 4 }, ErrMalformed},
		{"unknown filtering", func(r *Record) { r.NAT.Filtering = 255 }, ErrMalformed},
		{"negative UDP timeout", func(r *Record) { r.NAT.UDPTimeout = -time.Second }, ErrMalformed},
		{"huge UDP timeout", func(r *Record) { r.NAT.UDPTimeout = 25 * time.Hour }, ErrMalformed},
		{"empty direct address", func(r *Record) { r.Addrs = append(r.Addrs, nil) }, ErrMalformed},
		{"relayed direct address", func(r *Record) { r.Addrs = append(r.Addrs, r.RelayAddrs[0]) }, ErrMalformed},
		{"relay address without circuit", func(r *Record) {
			r.RelayAddrs = addrs(t, "/ip4/5.6.7.8/tcp/4001/p2p/"+testRelayID)
		}, ErrMalformed},
		{"relay address without relay", func(r *Record) {
			r.RelayAddrs = addrs(t, "/ip4/5.6.7.8/tcp/4001/p2p-circuit")
		}, ErrMalformed},
		{"relay address without transport", func(r *Record) {
			r.RelayAddrs = addrs(t, "/p2p/"+testRelayID+"/p2p-circuit")
		}, ErrMalformed},
		{"relay address with own suffix", func(r *Record) {
			r.RelayAddrs = addrs(t, r.RelayAddrs[0].String()+"/p2p/"+testRelayID)
		}, ErrMalformed},
		{"two relay hops", func(r *Record) {
			r.RelayAddrs = []ma.Multiaddr{relayAddr(t, r.RelayAddrs[0].String()+"/p2p/"+testRelayID)}
		}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := testRecord(t)
			tt.modify(r)
			before := r.PeerID
			data, err := r.Seal(key)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Seal = %d bytes, %v; want %v", len(data), err, tt.want)
			}
			if r.PeerID != before {
				t.Errorf("failed Seal changed PeerID to %s", r.PeerID)
			}
		})
	}

	if _, err := testRecord(t).Seal(nil); err == nil {
		t.Error("Seal(nil) succeeded")
	}
	var sm *SignerMismatchError
	r := testRecord(t)
	r.PeerID = other
	if _, err := r.Seal(key); !errors.As(err, &sm) || sm.Key != other {
		t.Errorf("Seal for another peer = %v, want *SignerMismatchError for %s", err, other)
	}
}

func TestOpenRecordRejects(t *testing.T) {
	key, _ := newKey(t)
	valid := seal(t, testRecord(t), key)
	sealPayload := func(p rawPayload) []byte { return sealRaw(t, key, recordDomain, recordCodec, p.bytes()) }
	withPayload := func(modify func(p *rawPayload)) []byte {
		p := validRawPayload(t)
		modify(&p)
		return sealPayload(p)
	}
	tooManyAddrs := func(ndirect, nrelay int) []byte {
		return withPayload(func(p *rawPayload) {
			p.direct, p.relay = nil, nil
			for range ndirect {
				p.direct = append(p.direct, addr(t, "/ip4/1.2.3.4/tcp/1").Bytes())
			}
			for range nrelay {
				p.relay = append(p.relay, relayAddr(t, "/ip4/1.2.3.4/tcp/1").Bytes())
			}
		})
	}

	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"nil", nil, ErrMalformed},
		{"garbage", []byte("this is not a record at all"), ErrMalformed},
		{"truncated", valid[:len(valid)-10], ErrMalformed},
		{"1025 bytes", append(bytes.Clone(valid), make([]byte, MaxRecordSize+1-len(valid))...), ErrTooLarge},
		{"huge", make([]byte, 1<<20), ErrTooLarge},
		{"forged signature", tamperEnvelope(t, valid, func(sig, _ []byte) { sig[10] ^= 0x01 }), ErrBadSignature},
		{"forged payload", tamperEnvelope(t, valid, func(_, payload []byte) { payload[1] ^= 0x01 }), ErrBadSignature},
		{"other domain", sealRaw(t, key, "libp2p-peer-record", recordCodec, validRawPayload(t).bytes()), ErrBadSignature},
		{"other payload type", sealRaw(t, key, recordDomain, "\x03\x01", validRawPayload(t).bytes()), ErrMalformed},
		{"empty payload", sealRaw(t, key, recordDomain, recordCodec, nil), ErrMalformed},
		{"version 0", withPayload(func(p *rawPayload) { p.version = 0 }), ErrUnsupportedVersion},
		{"version 3", withPayload(func(p *rawPayload) { p.version = 3 }), ErrUnsupportedVersion},
		{"version 2 without an offer", withPayload(func(p *rawPayload) { p.version = 2 }), ErrMalformed},
		{"17 direct addresses", tooManyAddrs(17, 0), ErrTooManyAddrs},
		{"255 direct addresses", sealRaw(t, key, recordDomain, recordCodec, func() []byte {
			p := validRawPayload(t)
			p.direct, p.relay = nil, nil
			b := p.bytes() // ends in the two address counts
			return append(b[:len(b)-2], 0xff)
		}()), ErrTooManyAddrs},
		{"10 direct and 7 relay addresses", tooManyAddrs(10, 7), ErrTooManyAddrs},
		{"trailing byte", sealRaw(t, key, recordDomain, recordCodec, append(validRawPayload(t).bytes(), 0)), ErrMalformed},
		{"truncated payload", sealRaw(t, key, recordDomain, recordCodec, validRawPayload(t).bytes()[:20]), ErrMalformed},
		{"non-minimal uvarint", sealRaw(t, key, recordDomain, recordCodec,
			append([]byte{RecordVersion, 0x81, 0x00}, validRawPayload(t).bytes()[2:]...)), ErrMalformed},
		{"expires at issue", withPayload(func(p *rawPayload) { p.expires = p.issued }), ErrMalformed},
		{"expires after 9999", withPayload(func(p *rawPayload) { p.expires = maxUnixSeconds + 1 }), ErrMalformed},
		{"expires beyond int64", withPayload(func(p *rawPayload) { p.expires = 1 << 63 }), ErrMalformed},
		{"unknown reachability", withPayload(func(p *rawPayload) { p.nat[0] = 3 }), ErrMalformed},
		{"unknown mapping", withPayload(func(p *rawPayload) { p.nat[1] = 4 }), ErrMalformed},
		{"unknown filtering", withPayload(func(p *rawPayload) { p.nat[2] = 0xff }), ErrMalformed},
		{"huge UDP timeout", withPayload(func(p *rawPayload) { p.udpTimeout = 1 << 62 }), ErrMalformed},
		{"empty address", withPayload(func(p *rawPayload) { p.direct = [][]byte{{}} }), ErrMalformed},
		{"unparsable address", withPayload(func(p *rawPayload) { p.direct = [][]byte{{0xff, 0xff, 0xff}} }), ErrMalformed},
		{"address with extra bytes", withPayload(func(p *rawPayload) {
			p.direct[0] = append(bytes.Clone(p.direct[0]), 0x04)
		}), ErrMalformed},
		{"relay as direct address", withPayload(func(p *rawPayload) { p.direct = p.relay }), ErrMalformed},
		{"direct as relay address", withPayload(func(p *rawPayload) { p.relay = p.direct }), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := OpenRecord(tt.data)
			if !errors.Is(err, tt.want) {
				t.Fatalf("OpenRecord = %v, %v; want %v", r, err, tt.want)
			}
			if r != nil {
				t.Fatalf("OpenRecord returned a record with error %v", err)
			}
		})
	}

	// The payload builder itself produces a valid record.
	if _, err := OpenRecord(sealPayload(validRawPayload(t))); err != nil {
		t.Fatalf("valid raw payload: %v", err)
	}
	// Sixteen addresses are fine.
	if _, err := OpenRecord(tooManyAddrs(10, 6)); err != nil {
		t.Fatalf("16 addresses: %v", err)
	}
}

// tamperEnvelope decodes a sealed envelope, lets modify change its signature
// and payload in place, and marshals it again.
func tamperEnvelope(t testing.TB, data []byte, modify func(sig, payload []byte)) []byte {
	t.Helper()
	var env recordpb.Envelope
	if err := proto.Unmarshal(data, &env); err != nil {
		t.Fatal(err)
	}
	modify(env.Signature, env.Payload)
	out, err := proto.Marshal(&env)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAddrInfo(t *testing.T) {
	key, id := newKey(t)
	r := testRecord(t)
	seal(t, r, key)
	info := r.AddrInfo()
	if info.ID != id {
		t.Fatalf("ID = %s, want %s", info.ID, id)
	}
	wantAddrs := append([]ma.Multiaddr{}, r.Addrs...)
	wantAddrs = append(wantAddrs, addr(t, r.RelayAddrs[0].String()+"/p2p/"+id.String()))
	if !addrsEqual(info.Addrs, wantAddrs) {
		t.Fatalf("Addrs = %v, want %v", info.Addrs, wantAddrs)
	}
	// AddrInfo does not alias the record's slices.
	info.Addrs[0] = nil
	if r.Addrs[0] == nil {
		t.Fatal("AddrInfo aliases Record.Addrs")
	}
	if !r.RelayAddrs[0].Equal(relayAddr(t, "/ip4/5.6.7.8/udp/4001/quic-v1")) {
		t.Fatalf("AddrInfo changed the relay address to %s", r.RelayAddrs[0])
	}
	// Without a peer ID the relay addresses are returned as they are.
	r.PeerID = ""
	if got := r.AddrInfo().Addrs; !got[len(got)-1].Equal(r.RelayAddrs[0]) {
		t.Fatalf("relay address without peer ID = %s", got[len(got)-1])
	}
}

func TestStrings(t *testing.T) {
	for v, want := range map[fmt.Stringer]string{
		ReachabilityUnknown:     "unknown",
		ReachabilityPublic:      "public",
		ReachabilityPrivate:     "private",
		Reachability(9):         "Reachability(9)",
		BehaviorUnknown:         "unknown",
		EndpointIndependent:     "endpoint-independent",
		AddressDependent:        "address-dependent",
		AddressAndPortDependent: "address-and-port-dependent",
		Behavior(9):             "Behavior(9)",
		NATInfo{Reachability: ReachabilityPrivate, Mapping: EndpointIndependent, Filtering: AddressDependent, UDPTimeout: 30 * time.Second}: "private, mapping endpoint-independent, filtering address-dependent, udp timeout 30s",
	} {
		if got := v.String(); got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
	}
	key, id := newKey(t)
	r := testRecord(t)
	seal(t, r, key)
	s := r.String()
	for _, part := range []string{id.String(), "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z", "/ip4/1.2.3.4/udp/4001/quic-v1", "p2p-circuit", "endpoint-independent"} {
		if !strings.Contains(s, part) {
			t.Errorf("String() = %q, lacks %q", s, part)
		}
	}
}
