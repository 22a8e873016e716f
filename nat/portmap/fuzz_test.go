package portmap

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

// checkDecodeError fails unless err is one a decoder may return for bad
// input: ErrMalformed, or for the protocol-level refusals ErrNotSupported
// and a *ResultError.
func checkDecodeError(t *testing.T, err error) {
	t.Helper()
	var re *ResultError
	if err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNotSupported) && !errors.As(err, &re) {
		t.Fatalf("untyped error %v", err)
	}
}

func FuzzDecodePMPResponse(f *testing.F) {
	for _, s := range []string{hexPMPAddrResponse, hexPMPMapResponse, "00 82 0002 000003e8", "00 80 0000"} {
		f.Add(unhex(f, s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodePMPResponse(b)
		checkDecodeError(t, err)
		if err != nil {
			return
		}
		if r.op > pmpOpTCP || r.result != binary.BigEndian.Uint16(b[2:]) {
			t.Fatalf("decoded %+v from %x", r, b)
		}
		if r.result == 0 && r.op == pmpOpAddr && r.external != netip.AddrFrom4([4]byte(b[8:12])) {
			t.Fatalf("address %v from %x", r.external, b)
		}
		if r.result == 0 && r.op != pmpOpAddr && r.lifetime != binary.BigEndian.Uint32(b[12:]) {
			t.Fatalf("lifetime %d from %x", r.lifetime, b)
		}
	})
}

func FuzzDecodePCPResponse(f *testing.F) {
	for _, s := range []string{hexPCPMapResponse, hexPCPAnnounceResponse, hexPCPMapResponse + "01 00 0005 0102030405 000000",
		"02 81 00 02 0000001e 000003e8 000000000000000000000000", "00 81 0001 000003e8"} {
		f.Add(unhex(f, s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodePCPResponse(b)
		checkDecodeError(t, err)
		if err != nil {
			return
		}
		if len(b)%4 != 0 || len(b) < pcpHeaderLen || len(b) > maxDatagram || b[1]&pcpResponseBit == 0 {
			t.Fatalf("accepted %x", b)
		}
		if r.hasMap {
			// The MAP body decodes to what a request with its fields encodes.
			req := encodePCPMap(pcpMapRequest{nonce: r.nonce, protocol: r.protocol, internalPort: r.internalPort,
				suggestedPort: r.externalPort, suggestedAddr: r.external})
			if string(req[24:36]) != string(b[24:36]) || string(req[40:44]) != string(b[40:44]) {
				t.Fatalf("MAP body %+v from %x", r, b)
			}
		}
	})
}

func FuzzDecodeSSDPResponse(f *testing.F) {
	f.Add([]byte(testSSDPAnswer))
	f.Add([]byte("HTTP/1.1 200 OK\nlocation:http://192.168.1.1/\n\n"))
	f.Add([]byte("HTTP/1.1 404 Not Found\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeSSDPResponse(b)
		checkDecodeError(t, err)
		if err == nil && r.location == "" {
			t.Fatalf("no location from %q", b)
		}
		if err == nil {
			// Only a URL on the gateway is ever followed.
			u, err := gatewayURL(nil, r.location, netip.MustParseAddr("192.168.1.1"))
			checkDecodeError(t, err)
			if err == nil && (u.Scheme != "http" || u.Hostname() != "192.168.1.1") {
				t.Fatalf("followed %v", u)
			}
		}
	})
}

func FuzzDecodeSOAPResponse(f *testing.F) {
	f.Add(200, []byte(testSOAPOK))
	f.Add(500, []byte(testSOAPFault))
	f.Add(200, []byte(`<s:Envelope xmlns:s="x"><s:Body><u:GetExternalIPAddressResponse/></s:Body></s:Envelope>`))
	f.Add(500, []byte(`<a><Body><Fault><detail><UPnPError><errorCode>-1</errorCode></UPnPError></detail></Fault></Body></a>`))
	f.Fuzz(func(t *testing.T, status int, b []byte) {
		out, err := decodeSOAPResponse(status, b, "GetExternalIPAddress")
		checkDecodeError(t, err)
		if err == nil && (out == nil || status != 200) {
			t.Fatalf("accepted %q with status %d: %v", b, status, out)
		}
	})
}

func FuzzDecodeDescription(f *testing.F) {
	for _, s := range wanServices {
		f.Add([]byte(testDescription(s)))
	}
	f.Add([]byte(strings.Replace(testDescription(wanServices[0]), "<specVersion>", "<URLBase>http://192.168.1.1:5000/</URLBase><specVersion>", 1)))
	gw := netip.MustParseAddr("192.168.1.1")
	loc, _ := url.Parse("http://192.168.1.1:40000/rootDesc.xml")
	f.Fuzz(func(t *testing.T, b []byte) {
		_, ctrl, err := decodeDescription(b, loc, gw)
		checkDecodeError(t, err)
		if err == nil {
			u, err := url.Parse(ctrl)
			if err != nil || u.Scheme != "http" || u.Hostname() != gw.String() {
				t.Fatalf("control URL %q off the gateway", ctrl)
			}
		}
	})
}
