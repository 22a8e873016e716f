package dht

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	librecord "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/crypto"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2pos/rendezvous/scope"
)

var _ librecord.Validator = (*Validator)(nil)

func clockAt(t time.Time) ValidatorOption {
	return WithValidatorClock(func() time.Time { return t })
}

func TestValidatorAccepts(t *testing.T) {
	keyA, idA := newKey(t)
	loopback := scope.With(netip.MustParsePrefix("127.0.0.0/8"))
	tests := []struct {
		name   string
		modify func(r *Record)
		opts   []ValidatorOption
	}{
		{"typical", func(*Record) {}, nil},
		{"no addresses", func(r *Record) { r.Addrs, r.RelayAddrs = nil, nil }, nil},
		{"dns address", func(r *Record) { r.Addrs = addrs(t, "/dns4/example.com/tcp/443/tls/ws") }, nil},
		{"16 addresses", func(r *Record) {
			for len(r.Addrs)+len(r.RelayAddrs) < MaxRecordAddrs {
				r.Addrs = append(r.Addrs, addr(t, "/ip4/1.2.3.4/tcp/4001"))
			}
		}, nil},
		{"loopback in loopback scope", func(r *Record) {
			r.Addrs = addrs(t, "/ip4/127.0.0.1/udp/4001/quic-v1", "/ip4/127.0.0.2/tcp/4001")
			r.RelayAddrs = []ma.Multiaddr{relayAddr(t, "/ip4/127.0.0.3/udp/4001/quic-v1")}
		}, []ValidatorOption{WithValidatorScope(loopback)}},
		{"private address in its scope", func(r *Record) {
			r.Addrs = addrs(t, "/ip4/10.0.0.1/tcp/4001")
		}, []ValidatorOption{WithValidatorScope(scope.With(netip.MustParsePrefix("10.0.0.0/8")))}},
		{"issued within clock skew", func(r *Record) {
			r.Issued = testNow.Add(DefaultMaxClockSkew)
			r.Expires = r.Issued.Add(time.Hour)
		}, nil},
		{"issued within wider clock skew", func(r *Record) {
			r.Issued = testNow.Add(time.Hour)
			r.Expires = r.Issued.Add(time.Hour)
		}, []ValidatorOption{WithValidatorMaxClockSkew(time.Hour)}},
		{"a second before expiry", func(r *Record) {
			r.Issued = testNow.Add(-time.Hour)
			r.Expires = testNow.Add(time.Second)
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := testRecord(t)
			tt.modify(r)
			data := seal(t, r, keyA)
			v := NewValidator(append([]ValidatorOption{clockAt(testNow)}, tt.opts...)...)
			key := RecordKey(idA)
			if err := v.Validate(key, data); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			got, err := v.Verify(key, data)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if err := recordsEqual(got, r); err != nil {
				t.Fatal(err)
			}
			// kad-dht hands the validator full keys through a
			// NamespacedValidator.
			nv := librecord.NamespacedValidator{"p2pos": v}
			if err := nv.Validate(key, data); err != nil {
				t.Fatalf("NamespacedValidator.Validate: %v", err)
			}
		})
	}
}

// TestValidatorThirdParty checks that a record stored by a third party, byte
// for byte, is as good as one stored by its signer.
func TestValidatorThirdParty(t *testing.T) {
	keyA, idA := newKey(t)
	data := seal(t, testRecord(t), keyA)
	stored := append([]byte(nil), data...) // what a third party holds and serves
	v := NewValidator(clockAt(testNow))
	r, err := v.Verify(RecordKey(idA), stored)
	if err != nil {
		t.Fatal(err)
	}
	if r.PeerID != idA {
		t.Fatalf("PeerID %s, want %s", r.PeerID, idA)
	}
	if err := v.CheckReplace(RecordKey(idA), nil, stored); err != nil {
		t.Fatalf("storing the record on an empty slot: %v", err)
	}
}

func TestValidatorRejects(t *testing.T) {
	keyA, idA := newKey(t)
	keyB, idB := newKey(t)
	keyA2 := RecordKey(idA)
	valid := func(modify func(r *Record)) []byte {
		r := testRecord(t)
		modify(r)
		return seal(t, r, keyA)
	}
	good := valid(func(*Record) {})
	tenNet := scope.With(netip.MustParsePrefix("10.0.0.0/8"))

	tests := []struct {
		name  string
		key   string
		value []byte
		opts  []ValidatorOption
		want  error
	}{
		{"garbage", keyA2, []byte("garbage"), nil, ErrMalformed},
		{"empty", keyA2, nil, nil, ErrMalformed},
		{"truncated", keyA2, good[:len(good)/2], nil, ErrMalformed},
		{"1025 bytes", keyA2, append(append([]byte(nil), good...), make([]byte, MaxRecordSize+1-len(good))...), nil, ErrTooLarge},
		{"forged signature", keyA2, tamperEnvelope(t, good, func(sig, _ []byte) { sig[len(sig)-1] ^= 0x80 }), nil, ErrBadSignature},
		{"forged payload", keyA2, tamperEnvelope(t, good, func(_, p []byte) { p[len(p)-3] ^= 0x01 }), nil, ErrBadSignature},
		{"signed by B under A's key", keyA2, seal(t, testRecord(t), keyB), nil, ErrSignerMismatch},
		{"A's record under B's key", RecordKey(idB), good, nil, ErrSignerMismatch},
		{"bad key", "/p2pos/nobody", good, nil, ErrBadKey},
		{"foreign namespace", "/ipns/" + idA.String(), good, nil, ErrBadKey},
		{"expired", keyA2, good, []ValidatorOption{clockAt(testNow.Add(2 * time.Hour))}, ErrExpired},
		{"at expiry", keyA2, good, []ValidatorOption{clockAt(testNow.Add(DefaultRecordTTL))}, ErrExpired},
		{"from the future", keyA2, valid(func(r *Record) {
			r.Issued = testNow.Add(DefaultMaxClockSkew + time.Second)
			r.Expires = r.Issued.Add(time.Hour)
		}), nil, ErrFromFuture},
		{"from the future, no skew", keyA2, valid(func(r *Record) {
			r.Issued = testNow.Add(time.Second)
			r.Expires = r.Issued.Add(time.Hour)
		}), []ValidatorOption{WithValidatorMaxClockSkew(-time.Minute)}, ErrFromFuture},
		{"17 addresses", keyA2, sealPayloadWithAddrs(t, keyA, 17), nil, ErrTooManyAddrs},
		{"unsupported version", keyA2, func() []byte {
			p := validRawPayload(t)
			p.version = 3
			return sealRaw(t, keyA, recordDomain, recordCodec, p.bytes())
		}(), nil, ErrUnsupportedVersion},
		{"private address", keyA2, valid(func(r *Record) {
			r.Addrs = append(r.Addrs, addr(t, "/ip4/10.0.0.1/tcp/4001"))
		}), nil, ErrOutOfScope},
		{"loopback address", keyA2, valid(func(r *Record) {
			r.Addrs = addrs(t, "/ip4/127.0.0.1/tcp/4001")
		}), nil, ErrOutOfScope},
		{"loopback address in 10/8 scope", keyA2, valid(func(r *Record) {
			r.Addrs = addrs(t, "/ip4/127.0.0.1/tcp/4001")
		}), []ValidatorOption{WithValidatorScope(tenNet)}, ErrOutOfScope},
		{"unspecified address", keyA2, valid(func(r *Record) {
			r.Addrs = addrs(t, "/ip4/0.0.0.0/tcp/4001")
		}), nil, ErrOutOfScope},
		{"localhost name", keyA2, valid(func(r *Record) {
			r.Addrs = addrs(t, "/dns4/localhost/tcp/4001")
		}), nil, ErrOutOfScope},
		{"private relay", keyA2, valid(func(r *Record) {
			r.RelayAddrs = []ma.Multiaddr{relayAddr(t, "/ip4/192.168.1.1/udp/4001/quic-v1")}
		}), nil, ErrOutOfScope},
		{"public address outside an Only scope", keyA2, good,
			[]ValidatorOption{WithValidatorScope(scope.Only(netip.MustParsePrefix("10.0.0.0/8")))}, ErrOutOfScope},
	}
	sentinels := []error{
		ErrMalformed, ErrBadSignature, ErrSignerMismatch, ErrBadKey, ErrExpired, ErrFromFuture,
		ErrStaleSeq, ErrTooLarge, ErrTooManyAddrs, ErrOutOfScope, ErrUnsupportedVersion, ErrNotFound,
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := NewValidator(append([]ValidatorOption{clockAt(testNow)}, tt.opts...)...)
			err := v.Validate(tt.key, tt.value)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Validate = %v, want %v", err, tt.want)
			}
			// Exactly one sentinel matches: every rejection has its own.
			for _, s := range sentinels {
				if s != tt.want && errors.Is(err, s) {
					t.Errorf("Validate = %v, also matches %v", err, s)
				}
			}
			if r, verr := v.Verify(tt.key, tt.value); r != nil || !errors.Is(verr, tt.want) {
				t.Errorf("Verify = %v, %v; want nil, %v", r, verr, tt.want)
			}
			if i, err := v.Select(tt.key, [][]byte{tt.value}); err == nil {
				t.Errorf("Select of an invalid value = %d, nil", i)
			}
		})
	}
}

// sealPayloadWithAddrs seals a payload with n direct addresses, more than
// Seal allows.
func sealPayloadWithAddrs(t testing.TB, key crypto.PrivKey, n int) []byte {
	t.Helper()
	p := validRawPayload(t)
	p.direct, p.relay = nil, nil
	for range n {
		p.direct = append(p.direct, addr(t, "/ip4/1.2.3.4/tcp/4001").Bytes())
	}
	return sealRaw(t, key, recordDomain, recordCodec, p.bytes())
}

func TestValidatorErrorDetails(t *testing.T) {
	keyA, idA := newKey(t)
	keyB, idB := newKey(t)
	v := NewValidator(clockAt(testNow))

	var sm *SignerMismatchError
	err := v.Validate(RecordKey(idA), seal(t, testRecord(t), keyB))
	if !errors.As(err, &sm) || sm.Key != idA || sm.Signer != idB {
		t.Fatalf("signer mismatch: %v (%#v)", err, sm)
	}

	r := testRecord(t)
	bad := addr(t, "/ip4/10.0.0.1/tcp/4001")
	r.RelayAddrs = []ma.Multiaddr{relayAddr(t, "/ip4/10.0.0.2/tcp/4001")}
	r.Addrs = append(r.Addrs, bad)
	var se *AddrScopeError
	err = v.Validate(RecordKey(idA), seal(t, r, keyA))
	if !errors.As(err, &se) || !se.Addr.Equal(bad) {
		t.Fatalf("out of scope: %v", err)
	}
	if !strings.Contains(err.Error(), "/ip4/10.0.0.1/tcp/4001") {
		t.Errorf("error %q does not name the address", err)
	}
	// The same record is fine where 10/8 is public.
	v10 := NewValidator(clockAt(testNow), WithValidatorScope(scope.With(netip.MustParsePrefix("10.0.0.0/8"))))
	if err := v10.Validate(RecordKey(idA), seal(t, r, keyA)); err != nil {
		t.Fatalf("10/8 scope: %v", err)
	}
}

func TestSelect(t *testing.T) {
	keyA, idA := newKey(t)
	keyB, _ := newKey(t)
	key := RecordKey(idA)
	withSeq := func(seq uint64) []byte {
		r := testRecord(t)
		r.Seq = seq
		return seal(t, r, keyA)
	}
	otherAddrs := func(seq uint64) []byte {
		r := testRecord(t)
		r.Seq = seq
		r.Addrs = r.Addrs[:1]
		return seal(t, r, keyA)
	}
	expired := func() []byte {
		r := testRecord(t)
		r.Seq = 100
		r.Issued = testNow.Add(-2 * time.Hour)
		r.Expires = testNow.Add(-time.Hour)
		return seal(t, r, keyA)
	}()
	forged := seal(t, func() *Record { r := testRecord(t); r.Seq = 100; return r }(), keyB)
	v := NewValidator(clockAt(testNow))

	tests := []struct {
		name   string
		values [][]byte
		want   int
	}{
		{"one", [][]byte{withSeq(1)}, 0},
		{"newer second", [][]byte{withSeq(1), withSeq(2)}, 1},
		{"newer first", [][]byte{withSeq(2), withSeq(1)}, 0},
		{"identical tie takes the first", [][]byte{withSeq(3), withSeq(3)}, 0},
		{"different tie keeps the held (last)", [][]byte{otherAddrs(3), withSeq(3)}, 1},
		{"highest of many", [][]byte{withSeq(3), withSeq(9), withSeq(5), withSeq(9)}, 1},
		{"skips expired", [][]byte{withSeq(1), expired}, 0},
		{"skips garbage", [][]byte{[]byte("junk"), withSeq(1)}, 1},
		{"skips other signer", [][]byte{forged, withSeq(1)}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := v.Select(key, tt.values)
			if err != nil || got != tt.want {
				t.Fatalf("Select = %d, %v; want %d", got, err, tt.want)
			}
		})
	}

	if i, err := v.Select(key, [][]byte{expired, []byte("junk")}); !errors.Is(err, ErrExpired) {
		t.Errorf("Select of invalid values = %d, %v; want the first rejection (ErrExpired)", i, err)
	}
	if i, err := v.Select(key, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("Select of no values = %d, %v; want ErrNotFound", i, err)
	}
}

func TestCheckReplace(t *testing.T) {
	keyA, idA := newKey(t)
	keyB, _ := newKey(t)
	key := RecordKey(idA)
	withSeq := func(seq uint64) []byte {
		r := testRecord(t)
		r.Seq = seq
		return seal(t, r, keyA)
	}
	expired := func(seq uint64) []byte {
		r := testRecord(t)
		r.Seq = seq
		r.Issued = testNow.Add(-2 * time.Hour)
		r.Expires = testNow.Add(-time.Hour)
		return seal(t, r, keyA)
	}
	v := NewValidator(clockAt(testNow))

	tests := []struct {
		name       string
		held, next []byte
		want       error
	}{
		{"higher seq", withSeq(5), withSeq(6), nil},
		{"same seq", withSeq(5), withSeq(5), ErrStaleSeq},
		{"lower seq", withSeq(5), withSeq(3), ErrStaleSeq},
		{"held expired", expired(9), withSeq(3), nil},
		{"held garbage", []byte("junk"), withSeq(1), nil},
		{"nothing held", nil, withSeq(1), nil},
		{"next expired", withSeq(1), expired(9), ErrExpired},
		{"next garbage", withSeq(1), []byte("junk"), ErrMalformed},
		{"next from another signer", withSeq(1), seal(t, testRecord(t), keyB), ErrSignerMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := v.CheckReplace(key, tt.held, tt.next)
			if tt.want == nil && err != nil || !errors.Is(err, tt.want) {
				t.Fatalf("CheckReplace = %v, want %v", err, tt.want)
			}
		})
	}

	err := v.CheckReplace(key, withSeq(5), withSeq(3))
	if want := "held 5, offered 3"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("CheckReplace = %v, want it to say %q", err, want)
	}
}

func TestValidatorOptions(t *testing.T) {
	keyA, idA := newKey(t)
	r := testRecord(t)
	r.Issued = time.Now().Add(-time.Minute).Truncate(time.Second)
	r.Expires = r.Issued.Add(time.Hour)
	data := seal(t, r, keyA)

	// The default clock is time.Now and a nil clock keeps it.
	for _, v := range []*Validator{NewValidator(), NewValidator(WithValidatorClock(nil))} {
		if err := v.Validate(RecordKey(idA), data); err != nil {
			t.Fatalf("Validate with the wall clock: %v", err)
		}
	}
	if s := NewValidator().Scope(); s.String() != scope.Internet().String() {
		t.Errorf("default scope %s", s)
	}
}
