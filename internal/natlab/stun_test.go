package natlab

import (
	"bytes"
	"encoding/hex"
	"net/netip"
	"testing"
)

// stunRequest is a Binding request as miniupnpd sends it, with the
// CHANGE-REQUEST flags given.
func stunRequest(change byte) []byte {
	b, _ := hex.DecodeString("00010008" + "2112a442" + "0102030405060708090a0b0c" + "00030004000000")
	return append(b, change)
}

func TestSTUNRoundTrip(t *testing.T) {
	txid, change, err := parseSTUNRequest(stunRequest(stunChangeIP | stunChangePort))
	if err != nil {
		t.Fatal(err)
	}
	if change != stunChangeIP|stunChangePort {
		t.Errorf("change flags %#x", change)
	}
	got := appendSTUNResponse(nil, txid, netip.MustParseAddrPort("10.77.1.1:53771"))
	want, _ := hex.DecodeString("0101" + "0018" + "2112a442" + "0102030405060708090a0b0c" +
		"0020" + "0008" + "0001" + "f319" + "2b5fa543" + // port ^ 0x2112, address ^ 0x2112a442
		"0001" + "0008" + "0001" + "d20b" + "0a4d0101")
	if !bytes.Equal(got, want) {
		t.Errorf("response\n got %x\nwant %x", got, want)
	}
	for _, bad := range [][]byte{nil, stunRequest(0)[:19], append([]byte{0, 2}, stunRequest(0)[2:]...), stunRequest(0)[:26]} {
		if _, _, err := parseSTUNRequest(bad); err == nil {
			t.Errorf("parsed %x", bad)
		}
	}
}

func FuzzParseSTUNRequest(f *testing.F) {
	f.Add(stunRequest(0))
	f.Add(stunRequest(stunChangeIP))
	f.Add(stunRequest(stunChangePort))
	f.Fuzz(func(t *testing.T, b []byte) {
		txid, _, err := parseSTUNRequest(b)
		if err != nil {
			return
		}
		resp := appendSTUNResponse(nil, txid, netip.MustParseAddrPort("10.77.0.10:1"))
		if len(resp) != 20+24 || !bytes.Equal(resp[4:20], b[4:20]) {
			t.Fatalf("response %x to %x", resp, b)
		}
	})
}
