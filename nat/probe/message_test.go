package probe

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// testTxID is the transaction ID of the fixed encodings below.
var testTxID = txID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}

// header is the encoded header with testTxID for a type byte.
func header(typ string) string { return "72647670" + "01" + typ + "0102030405060708090a0b0c" }

// pad is the zero padding of a request whose body is n bytes long.
func pad(body int) string { return strings.Repeat("00", RequestSize-headerLen-body) }

var (
	testAddr4 = netip.MustParseAddrPort("192.0.2.1:4242")
	testAddr6 = netip.MustParseAddrPort("[2001:db8::1]:443")
)

var messageTests = []struct {
	name string
	m    message
	hex  string
}{
	{"binding", message{Type: typeBinding, TxID: testTxID}, header("01") + pad(0)},
	{"binding-response", message{Type: typeBindingResponse, TxID: testTxID, AltPort: 3479, Addr: testAddr4},
		header("02") + "0d97" + "04" + "1092" + "c0000201"},
	{"alt-port", message{Type: typeAltPort, TxID: testTxID}, header("03") + pad(0)},
	{"alt-port-response", message{Type: typeAltPortResponse, TxID: testTxID, Addr: testAddr6},
		header("04") + "06" + "01bb" + "20010db8000000000000000000000001"},
	{"delayed", message{Type: typeDelayed, TxID: testTxID, Delay: 90 * time.Second},
		header("05") + "00015f90" + pad(4)},
	{"delayed-ack", message{Type: typeDelayedAck, TxID: testTxID, Delay: 90 * time.Second, Status: statusRefused},
		header("06") + "01" + "00015f90"},
	{"delayed-response", message{Type: typeDelayedResponse, TxID: testTxID, Delay: 1500 * time.Millisecond, Addr: testAddr4},
		header("07") + "000005dc" + "04" + "1092" + "c0000201"},
	{"peer-send", message{Type: typePeerSend, TxID: testTxID, Addr: testAddr4},
		header("08") + "04" + "1092" + "c0000201" + pad(7)},
	{"peer-send-ack", message{Type: typePeerSendAck, TxID: testTxID, Status: statusUnknownSibling},
		header("09") + "02"},
	{"peer-forward", message{Type: typePeerForward, TxID: testTxID, Budget: 57, Addr: testAddr4},
		header("0a") + "0039" + "04" + "1092" + "c0000201"},
	{"peer-send-response", message{Type: typePeerSendResponse, TxID: testTxID, Addr: testAddr4},
		header("0b") + "04" + "1092" + "c0000201"},
}

func TestMessageRoundTrip(t *testing.T) {
	for _, tt := range messageTests {
		t.Run(tt.name, func(t *testing.T) {
			want, err := hex.DecodeString(tt.hex)
			if err != nil {
				t.Fatal(err)
			}
			got, err := appendMessage(nil, tt.m)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("encoded\n got %x\nwant %x", got, want)
			}
			if tt.m.Type.isRequest() != (len(got) == RequestSize) {
				t.Errorf("size %d: requests, and only they, are RequestSize", len(got))
			}
			m, err := parseMessage(want)
			if err != nil {
				t.Fatal(err)
			}
			if m != tt.m {
				t.Errorf("decoded %+v, want %+v", m, tt.m)
			}
		})
	}
}

// TestAnswersFitRequests checks the sizes behind the anti-amplification
// rule: what a request can cause to be sent to its source fits in it.
func TestAnswersFitRequests(t *testing.T) {
	size := func(m message) int {
		m.Addr = testAddr6 // the longest address
		b, err := appendMessage(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		return len(b)
	}
	cases := map[string]int{
		"BINDING":   size(message{Type: typeBindingResponse}),
		"ALT-PORT":  size(message{Type: typeAltPortResponse}),
		"DELAYED":   size(message{Type: typeDelayedAck}) + size(message{Type: typeDelayedResponse}),
		"PEER-SEND": size(message{Type: typePeerSendAck}) + size(message{Type: typePeerSendResponse}),
	}
	for name, n := range cases {
		if n > RequestSize {
			t.Errorf("%s causes %d bytes of answers, more than the %d-byte request", name, n, RequestSize)
		}
	}
	if got := size(message{Type: typeDelayedAck}); got != delayedAckLen {
		t.Errorf("DELAYED-ACK is %d bytes, delayedAckLen says %d", got, delayedAckLen)
	}
}

func TestParseErrors(t *testing.T) {
	valid, _ := hex.DecodeString(messageTests[1].hex)
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(valid)) }
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, errShort},
		{"header only", valid[:headerLen], errShort},
		{"cut address", valid[:len(valid)-1], errShort},
		{"too long", make([]byte, MaxMessageSize+1), errLong},
		{"magic", mod(func(b []byte) []byte { b[0] = 'R'; return b }), errMagic},
		{"version", mod(func(b []byte) []byte { b[4] = 2; return b }), errVersion},
		{"type", mod(func(b []byte) []byte { b[5] = 0x7f; return b }), errType},
		{"family", mod(func(b []byte) []byte { b[headerLen+2] = 5; return b }), errAddr},
	}
	for _, tt := range tests {
		if _, err := parseMessage(tt.b); !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
	// An IPv4-mapped IPv6 address has one encoding: family 4.
	mapped := append([]byte{6, 0, 1}, netip.MustParseAddr("::ffff:192.0.2.1").AsSlice()...)
	if _, _, err := parseAddr(mapped); !errors.Is(err, errAddr) {
		t.Errorf("IPv4-mapped address as family 6: err = %v, want %v", err, errAddr)
	}
	b, err := appendAddr(nil, netip.MustParseAddrPort("[::ffff:192.0.2.1]:1"))
	if err != nil || b[0] != 4 {
		t.Errorf("IPv4-mapped address encoded as %x, %v; want family 4", b, err)
	}
	if _, err := appendMessage(nil, message{Type: typeDelayed, Delay: time.Microsecond}); !errors.Is(err, errDelay) {
		t.Errorf("sub-millisecond delay: err = %v, want %v", err, errDelay)
	}
	if _, err := appendMessage(nil, message{Type: typeBindingResponse}); !errors.Is(err, errAddr) {
		t.Errorf("missing address: err = %v, want %v", err, errAddr)
	}
}

func FuzzParseMessage(f *testing.F) {
	for _, tt := range messageTests {
		b, _ := hex.DecodeString(tt.hex)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseMessage(b)
		if err != nil {
			return
		}
		// What decodes re-encodes, and decodes to the same message.
		enc, err := appendMessage(nil, m)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", m, err)
		}
		if len(enc) > MaxMessageSize {
			t.Fatalf("encoding of %+v is %d bytes", m, len(enc))
		}
		m2, err := parseMessage(enc)
		if err != nil {
			t.Fatalf("re-encoded %x does not decode: %v", enc, err)
		}
		if m2 != m {
			t.Fatalf("round trip changed %+v into %+v", m, m2)
		}
	})
}

func FuzzParseAddr(f *testing.F) {
	for _, a := range []netip.AddrPort{testAddr4, testAddr6} {
		b, _ := appendAddr(nil, a)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, rest, err := parseAddr(b)
		if err != nil {
			return
		}
		enc, err := appendAddr(nil, a)
		if err != nil {
			t.Fatalf("decoded %v does not encode: %v", a, err)
		}
		if !bytes.Equal(enc, b[:len(b)-len(rest)]) {
			t.Fatalf("%x decoded as %v, which encodes as %x", b, a, enc)
		}
	})
}
