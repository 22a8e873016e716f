package dht

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2pos/rendezvous/scope"
)

// fuzzRecords returns valid records, sealed with a fixed key so that the
// seeds are the same on every run, and the key.
func fuzzRecords(t testing.TB) (peer.ID, [][]byte) {
	key, id := seededKey(t, 0x02)
	full := testRecord(t)
	loopback := testRecord(t)
	loopback.Addrs = addrs(t, "/ip4/127.0.0.1/udp/4001/quic-v1", "/ip6/::1/tcp/4001")
	loopback.RelayAddrs = []ma.Multiaddr{relayAddr(t, "/ip4/127.0.0.2/tcp/4001")}
	empty := &Record{Seq: 1, Issued: testNow, Expires: testNow.Add(time.Minute)}
	var out [][]byte
	for _, r := range []*Record{full, loopback, empty} {
		out = append(out, seal(t, r, key))
	}
	return id, out
}

// fuzzBroken returns invalid encodings near valid ones.
func fuzzBroken(t testing.TB, valid []byte) [][]byte {
	key, _ := seededKey(t, 0x02)
	v2 := validRawPayload(t)
	v2.version = 2
	return [][]byte{
		nil,
		[]byte("garbage"),
		valid[:len(valid)/2],
		tamperEnvelope(t, valid, func(sig, _ []byte) { sig[0] ^= 0xff }),
		sealRaw(t, key, recordDomain, recordCodec, v2.bytes()),
		sealRaw(t, key, recordDomain, recordCodec, append(validRawPayload(t).bytes(), 0)),
		sealRaw(t, key, recordDomain, recordCodec, sealPayloadAddrs(t, 17)),
	}
}

func sealPayloadAddrs(t testing.TB, n int) []byte {
	p := validRawPayload(t)
	p.direct, p.relay = nil, nil
	for range n {
		p.direct = append(p.direct, addr(t, "/ip4/1.2.3.4/tcp/4001").Bytes())
	}
	return p.bytes()
}

// openErrors are the errors OpenRecord may return.
var openErrors = []error{ErrTooLarge, ErrMalformed, ErrBadSignature, ErrUnsupportedVersion, ErrTooManyAddrs}

func isOneOf(err error, targets []error) bool {
	for _, target := range targets {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

func FuzzOpenRecord(f *testing.F) {
	_, valid := fuzzRecords(f)
	for _, v := range valid {
		f.Add(v)
	}
	for _, b := range fuzzBroken(f, valid[0]) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := OpenRecord(data)
		if err != nil {
			if r != nil {
				t.Fatalf("OpenRecord returned a record and %v", err)
			}
			if !isOneOf(err, openErrors) {
				t.Fatalf("OpenRecord = %v, not one of its documented errors", err)
			}
			return
		}
		if len(data) > MaxRecordSize {
			t.Fatalf("OpenRecord accepted %d bytes", len(data))
		}
		env, err := record.UnmarshalEnvelope(data)
		if err != nil {
			t.Fatalf("OpenRecord accepted an envelope that does not parse: %v", err)
		}
		if !r.PeerID.MatchesPublicKey(env.PublicKey) {
			t.Fatalf("PeerID %s is not the signer's", r.PeerID)
		}
		// The payload encoding is canonical: re-encoding the decoded
		// record gives back the signed bytes, and decodes to the same record.
		enc, err := encodePayload(r)
		if err != nil {
			t.Fatalf("re-encoding an opened record: %v", err)
		}
		if !bytes.Equal(enc, env.RawPayload) {
			t.Fatalf("re-encoded payload differs:\n%x\n%x", enc, env.RawPayload)
		}
		dec, err := decodePayload(enc)
		if err != nil {
			t.Fatalf("decoding a re-encoded payload: %v", err)
		}
		dec.PeerID = r.PeerID
		if err := recordsEqual(&dec, r); err != nil {
			t.Fatal(err)
		}
		if n := len(r.Addrs) + len(r.RelayAddrs); n > MaxRecordAddrs {
			t.Fatalf("OpenRecord accepted %d addresses", n)
		}
		if !r.Expires.After(r.Issued) {
			t.Fatalf("OpenRecord accepted expiry %s before issue %s", r.Expires, r.Issued)
		}
		_ = r.String()
		_ = r.AddrInfo()
	})
}

func FuzzValidate(f *testing.F) {
	id, valid := fuzzRecords(f)
	key := RecordKey(id)
	for _, v := range valid {
		f.Add(key, v)
	}
	for _, b := range fuzzBroken(f, valid[0]) {
		f.Add(key, b)
	}
	f.Add("/p2pos/"+testRelayID, valid[0])
	f.Add("/p2pos/", valid[0])
	f.Add("", valid[0])
	loopback := scope.With(netip.MustParsePrefix("127.0.0.0/8"))
	v := NewValidator(clockAt(testNow), WithValidatorScope(loopback))
	f.Fuzz(func(t *testing.T, key string, data []byte) {
		err := v.Validate(key, data)
		r, openErr := OpenRecord(data)
		if err != nil {
			if _, verr := v.Verify(key, data); verr == nil {
				t.Fatalf("Validate = %v but Verify accepts", err)
			}
			if i, serr := v.Select(key, [][]byte{data}); serr == nil {
				t.Fatalf("Select chose invalid value %d", i)
			}
			return
		}
		if openErr != nil {
			t.Fatalf("Validate accepted what OpenRecord rejects: %v", openErr)
		}
		if key != RecordKey(r.PeerID) {
			t.Fatalf("Validate accepted a record of %s under %q", r.PeerID, key)
		}
		if r.Issued.After(testNow.Add(DefaultMaxClockSkew)) || !testNow.Before(r.Expires) {
			t.Fatalf("Validate accepted a record valid from %s to %s at %s", r.Issued, r.Expires, testNow)
		}
		for _, a := range append(r.Addrs, r.RelayAddrs...) {
			if !loopback.IsPublic(a) {
				t.Fatalf("Validate accepted out-of-scope address %s", a)
			}
		}
		if i, err := v.Select(key, [][]byte{[]byte("junk"), data, data}); err != nil || i != 1 {
			t.Fatalf("Select = %d, %v; want 1", i, err)
		}
		if err := v.CheckReplace(key, data, data); !errors.Is(err, ErrStaleSeq) {
			t.Fatalf("CheckReplace of a record by itself = %v, want ErrStaleSeq", err)
		}
	})
}

// FuzzDecodePayload fuzzes the payload decoder directly: OpenRecord reaches
// it only through a valid signature, which a fuzzer cannot forge.
func FuzzDecodePayload(f *testing.F) {
	offer := &Record{Issued: testNow, Expires: testNow.Add(time.Hour), NAT: NATInfo{Reachability: ReachabilityPublic},
		DataRelay: DataRelay{Duration: time.Hour, Data: 64 << 20, Circuits: 16}}
	for _, r := range []*Record{testRecord(f), {Issued: testNow, Expires: testNow.Add(time.Second)}, offer} {
		b, err := encodePayload(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(validRawPayload(f).bytes())
	f.Add(sealPayloadAddrs(f, 17))
	f.Add([]byte{RecordVersion})
	f.Add([]byte{2})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodePayload(b)
		if err != nil {
			if !isOneOf(err, []error{ErrMalformed, ErrUnsupportedVersion, ErrTooManyAddrs}) {
				t.Fatalf("decodePayload = %v, not one of its documented errors", err)
			}
			return
		}
		enc, err := encodePayload(&r)
		if err != nil {
			t.Fatalf("re-encoding a decoded payload: %v", err)
		}
		if !bytes.Equal(enc, b) {
			t.Fatalf("re-encoded payload differs:\n%x\n%x", enc, b)
		}
	})
}

// TestFuzzCorpus checks that the committed seed corpus of FuzzOpenRecord
// still holds the valid encodings it was made of, so that it does not rot
// when the format changes.
func TestFuzzCorpus(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzOpenRecord", "*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no seed corpus for FuzzOpenRecord")
	}
	for _, file := range files {
		name := filepath.Base(file)
		t.Run(name, func(t *testing.T) {
			data := readCorpusFile(t, file)
			_, err := OpenRecord(data)
			if valid := strings.HasPrefix(name, "valid-"); valid != (err == nil) {
				t.Fatalf("OpenRecord = %v for a seed named %q", err, name)
			}
		})
	}
}

// readCorpusFile reads a "go test fuzz v1" file holding one []byte value.
func readCorpusFile(t *testing.T, file string) []byte {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(lines) != 2 || lines[0] != "go test fuzz v1" {
		t.Fatalf("%s is not a one-value fuzz corpus file", file)
	}
	v, ok := strings.CutPrefix(lines[1], "[]byte(")
	v, ok2 := strings.CutSuffix(v, ")")
	if !ok || !ok2 {
		t.Fatalf("%s does not hold a []byte", file)
	}
	s, err := strconv.Unquote(v)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return []byte(s)
}
