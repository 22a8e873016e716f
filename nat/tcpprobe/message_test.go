package tcpprobe

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

var testNonce = Nonce{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}

// header is the encoded header with testNonce for a type byte.
func header(typ string) string { return "72647668" + "01" + typ + "0102030405060708090a0b0c" }

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEncoding(t *testing.T) {
	for _, tt := range []struct {
		name string
		got  []byte
		hex  string
	}{
		{"hold", appendRequest(nil, testNonce, 7800), header("01") + "00001e78" + strings.Repeat("00", 10)},
		{"ack", appendAck(nil, testNonce, StatusOK, 120), header("02") + "00" + "00000078"},
		{"ack-refused", appendAck(nil, testNonce, StatusBadHold, 0), header("02") + "03" + "00000000"},
		{"response", appendResponse(nil, testNonce), header("03")},
	} {
		if want := mustHex(t, tt.hex); !bytes.Equal(tt.got, want) {
			t.Errorf("%s:\n got %x\nwant %x", tt.name, tt.got, want)
		}
	}
	if n, hold, st := parseRequest(appendRequest(nil, testNonce, 7800)); n != testNonce || hold != 7800 || st != StatusOK {
		t.Errorf("parseRequest: %x, %d, %v", n, hold, st)
	}
	if n, st, granted, err := parseAck(appendAck(nil, testNonce, StatusBadVersion, 9)); err != nil || n != testNonce || st != StatusBadVersion || granted != 9 {
		t.Errorf("parseAck: %x, %v, %d, %v", n, st, granted, err)
	}
	if n, err := parseResponse(appendResponse(nil, testNonce)); err != nil || n != testNonce {
		t.Errorf("parseResponse: %x, %v", n, err)
	}
}

func TestParseRequestRefusals(t *testing.T) {
	valid := header("01") + "0000003c" + strings.Repeat("00", 10)
	for _, tt := range []struct {
		name, hex string
		want      Status
		nonce     Nonce
	}{
		{"empty", "", StatusMalformed, Nonce{}},
		{"short", valid[:2*20], StatusMalformed, testNonce},
		{"cut-nonce", valid[:2*10], StatusMalformed, Nonce{1, 2, 3, 4}},
		{"long", valid + "00", StatusMalformed, testNonce},
		{"magic", "72647670" + valid[8:], StatusMalformed, testNonce},
		{"version", valid[:8] + "02" + valid[10:], StatusBadVersion, testNonce},
		{"type", valid[:10] + "03" + valid[12:], StatusMalformed, testNonce},
		{"zero-hold", header("01") + "00000000" + strings.Repeat("00", 10), StatusBadHold, testNonce},
		{"padding-ignored", header("01") + "0000003c" + strings.Repeat("ff", 10), StatusOK, testNonce},
	} {
		n, hold, st := parseRequest(mustHex(t, tt.hex))
		if st != tt.want || n != tt.nonce {
			t.Errorf("%s: status %v, nonce %x; want %v, %x", tt.name, st, n, tt.want, tt.nonce)
		}
		if (st == StatusOK) != (hold == 60) {
			t.Errorf("%s: hold %d with status %v", tt.name, hold, st)
		}
	}
	for _, b := range [][]byte{nil, appendAck(nil, testNonce, 0, 1)[:AckSize-1], appendResponse(nil, testNonce)} {
		if _, _, _, err := parseAck(b); err == nil {
			t.Errorf("parseAck(%x) accepted", b)
		}
	}
	for _, b := range [][]byte{nil, appendAck(nil, testNonce, 0, 1), append(appendResponse(nil, testNonce), 0)} {
		if _, err := parseResponse(b); err == nil {
			t.Errorf("parseResponse(%x) accepted", b)
		}
	}
}

// FuzzParseRequest checks that the server's decoder never panics, accepts
// only RequestSize bytes, and that what it accepts encodes back to the same
// request apart from the ignored padding.
func FuzzParseRequest(f *testing.F) {
	f.Add(appendRequest(nil, testNonce, 7800))
	f.Add(appendRequest(nil, testNonce, 0))
	f.Add(appendAck(nil, testNonce, StatusOK, 60))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: example\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, hold, st := parseRequest(b)
		if st != StatusOK {
			return
		}
		if len(b) != RequestSize || hold == 0 {
			t.Fatalf("accepted %d bytes, hold %d", len(b), hold)
		}
		if enc := appendRequest(nil, n, hold); !bytes.Equal(enc[:headerLen+4], b[:headerLen+4]) {
			t.Fatalf("re-encoded %x, was %x", enc, b)
		}
	})
}

// FuzzParseAnswer checks the client's decoders the same way.
func FuzzParseAnswer(f *testing.F) {
	f.Add(appendAck(nil, testNonce, StatusOK, 60))
	f.Add(appendResponse(nil, testNonce))
	f.Fuzz(func(t *testing.T, b []byte) {
		if n, st, granted, err := parseAck(b); err == nil && !bytes.Equal(appendAck(nil, n, st, granted), b) {
			t.Fatalf("ACK %x re-encoded differently", b)
		}
		if n, err := parseResponse(b); err == nil && !bytes.Equal(appendResponse(nil, n), b) {
			t.Fatalf("RESPONSE %x re-encoded differently", b)
		}
	})
}
