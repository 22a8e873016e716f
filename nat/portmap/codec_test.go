package portmap

import (
	"encoding/hex"
	"errors"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const (
	hexPMPAddrResponse = "00 80 0000 000003e8 cb007107"
	hexPMPMapRequest   = "00 01 0000 1234 1235 00001c20"
	hexPMPMapResponse  = "00 81 0000 000003e8 1234 1235 00001c20"
	hexPCPAnnounce     = "02 00 0000 00000000 00000000000000000000ffffc0a80102"
	hexPCPMapRequest   = "02 01 0000 00001c20 00000000000000000000ffffc0a80102" +
		"0102030405060708090a0b0c 11 000000 1234 1235 00000000000000000000ffff00000000"
	hexPCPMapResponse = "02 81 00 00 00001c20 000003e8 000000000000000000000000" +
		"0102030405060708090a0b0c 11 000000 1234 1235 00000000000000000000ffffcb007107"
	hexPCPAnnounceResponse = "02 80 00 00 00000000 000003e8 000000000000000000000000"
)

var testNonce = [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}

func TestPMPEncode(t *testing.T) {
	if got, want := encodePMPAddrRequest(), unhex(t, "0000"); string(got) != string(want) {
		t.Errorf("address request %x, want %x", got, want)
	}
	if got, want := encodePMPMapRequest(pmpOpUDP, 0x1234, 0x1235, 7200), unhex(t, hexPMPMapRequest); string(got) != string(want) {
		t.Errorf("map request %x, want %x", got, want)
	}
}

func TestPMPDecode(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    pmpResponse
		wantErr error
	}{
		{"address", hexPMPAddrResponse, pmpResponse{op: pmpOpAddr, epoch: 1000, external: testExternal}, nil},
		{"map", hexPMPMapResponse, pmpResponse{op: pmpOpUDP, epoch: 1000, internalPort: 0x1234, externalPort: 0x1235, lifetime: 7200}, nil},
		{"map with trailing bytes", hexPMPMapResponse + "ffff", pmpResponse{op: pmpOpUDP, epoch: 1000, internalPort: 0x1234, externalPort: 0x1235, lifetime: 7200}, nil},
		{"refused, header only", "00 82 0002 000003e8", pmpResponse{op: pmpOpTCP, result: 2, epoch: 1000}, nil},
		{"empty", "", pmpResponse{}, ErrMalformed},
		{"short header", "00 80 0000 0000", pmpResponse{}, ErrMalformed},
		{"short address", "00 80 0000 000003e8 cb00", pmpResponse{}, ErrMalformed},
		{"short map", "00 81 0000 000003e8 1234 1235", pmpResponse{}, ErrMalformed},
		{"version 2", "02 80 0000 000003e8 cb007107", pmpResponse{}, ErrMalformed},
		{"a request", "00 01 0000 1234 1235 00001c20", pmpResponse{}, ErrMalformed},
		{"unknown opcode", "00 83 0000 000003e8 1234 1235 00001c20", pmpResponse{}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodePMPResponse(unhex(t, tt.in))
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestPMPResultError(t *testing.T) {
	r, err := decodePMPResponse(unhex(t, "00 81 0001 000003e8"))
	if err != nil {
		t.Fatal(err)
	}
	err = r.err()
	if resultCode(t, err, NATPMP) != 1 || !errors.Is(err, ErrNotSupported) {
		t.Errorf("%v: want code 1 matching ErrNotSupported", err)
	}
	if got := err.Error(); got != "portmap: nat-pmp result 1 (unsupported version)" {
		t.Errorf("message %q", got)
	}
	if r, _ := decodePMPResponse(unhex(t, "00 81 0002 000003e8")); errors.Is(r.err(), ErrNotSupported) {
		t.Error("not authorized matches ErrNotSupported")
	}
}

func TestPCPEncode(t *testing.T) {
	client := netip.MustParseAddr("192.168.1.2")
	if got, want := encodePCPAnnounce(client), unhex(t, hexPCPAnnounce); string(got) != string(want) {
		t.Errorf("announce %x, want %x", got, want)
	}
	got := encodePCPMap(pcpMapRequest{lifetime: 7200, client: client, nonce: testNonce, protocol: protoUDP, internalPort: 0x1234, suggestedPort: 0x1235})
	if want := unhex(t, hexPCPMapRequest); string(got) != string(want) {
		t.Errorf("map\n got %x\nwant %x", got, want)
	}
}

func TestPCPDecode(t *testing.T) {
	mapResp := pcpResponse{opcode: pcpOpMap, lifetime: 7200, epoch: 1000, hasMap: true, nonce: testNonce,
		protocol: protoUDP, internalPort: 0x1234, externalPort: 0x1235, external: testExternal}
	tests := []struct {
		name    string
		in      string
		want    pcpResponse
		wantErr error
	}{
		{"map", hexPCPMapResponse, mapResp, nil},
		{"map with an option", hexPCPMapResponse + "01 00 0005 0102030405 000000", mapResp, nil},
		{"announce", hexPCPAnnounceResponse, pcpResponse{opcode: pcpOpAnnounce, epoch: 1000}, nil},
		{"error header only", "02 81 00 02 0000001e 000003e8 000000000000000000000000", pcpResponse{opcode: pcpOpMap, result: 2, lifetime: 30, epoch: 1000}, nil},
		{"unsupported version from version 1", "01 81 00 01 00000000 000003e8 000000000000000000000000", pcpResponse{opcode: pcpOpMap, result: 1, epoch: 1000}, nil},
		{"NAT-PMP answer", "00 81 0001 000003e8", pcpResponse{}, ErrNotSupported},
		{"empty", "", pcpResponse{}, ErrMalformed},
		{"short", hexPCPMapResponse[:40], pcpResponse{}, ErrMalformed},
		{"not a multiple of 4", hexPCPMapResponse + "00", pcpResponse{}, ErrMalformed},
		{"success map without body", "02 81 00 00 00001c20 000003e8 000000000000000000000000", pcpResponse{}, ErrMalformed},
		{"request", hexPCPMapRequest, pcpResponse{}, ErrMalformed},
		{"version 3", "03" + hexPCPMapResponse[2:], pcpResponse{}, ErrMalformed},
		{"option overruns", hexPCPMapResponse + "01 00 0010 01020304", pcpResponse{}, ErrMalformed},
		{"unknown opcode", "02 85 00 00 00000000 000003e8 000000000000000000000000", pcpResponse{}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodePCPResponse(unhex(t, tt.in))
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	if _, err := decodePCPResponse(make([]byte, maxDatagram+4)); !errors.Is(err, ErrMalformed) {
		t.Errorf("oversized: %v", err)
	}
}

func TestSSDPEncode(t *testing.T) {
	got := string(encodeSSDPSearch("239.255.255.250:1900", ssdpTargets[0]))
	want := "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\n" +
		"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

const testSSDPAnswer = "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n" +
	"USN: uuid:x::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nEXT:\r\nSERVER: Linux UPnP/1.1 MiniUPnPd/2.3.1\r\n" +
	"LOCATION: http://192.168.1.1:40000/rootDesc.xml\r\n\r\n"

func TestSSDPDecode(t *testing.T) {
	want := ssdpResponse{
		location: "http://192.168.1.1:40000/rootDesc.xml",
		st:       "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
		usn:      "uuid:x::urn:schemas-upnp-org:device:InternetGatewayDevice:1",
	}
	for name, in := range map[string]string{
		"crlf":              testSSDPAnswer,
		"lf and lower case": strings.ReplaceAll(strings.ReplaceAll(testSSDPAnswer, "\r\n", "\n"), "LOCATION", "Location"),
		"http/1.0":          strings.Replace(testSSDPAnswer, "HTTP/1.1", "HTTP/1.0", 1),
	} {
		got, err := decodeSSDPResponse([]byte(in))
		if err != nil || got != want {
			t.Errorf("%s: got %+v, %v", name, got, err)
		}
	}
	for name, in := range map[string]string{
		"empty":       "",
		"notify":      "NOTIFY * HTTP/1.1\r\nLOCATION: http://x/\r\n\r\n",
		"status 404":  "HTTP/1.1 404 Not Found\r\nLOCATION: http://x/\r\n\r\n",
		"no location": "HTTP/1.1 200 OK\r\nST: x\r\n\r\n",
		"bad header":  "HTTP/1.1 200 OK\r\nLOCATION http://x/\r\n\r\n",
		"oversized":   testSSDPAnswer + strings.Repeat("X-PAD: 0\r\n", 300),
	} {
		if _, err := decodeSSDPResponse([]byte(in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func TestDescriptionDecode(t *testing.T) {
	gw := netip.MustParseAddr("192.168.1.1")
	loc, _ := url.Parse("http://192.168.1.1:40000/rootDesc.xml")
	for _, svc := range wanServices {
		st, ctrl, err := decodeDescription([]byte(testDescription(svc)), loc, gw)
		if err != nil || st != svc || ctrl != "http://192.168.1.1:40000/ctl/IPConn" {
			t.Errorf("%s: %q %q %v", svc, st, ctrl, err)
		}
	}
	// URLBase wins over the location.
	desc := strings.Replace(testDescription(wanServices[1]), "<specVersion>", "<URLBase>http://192.168.1.1:5000/</URLBase><specVersion>", 1)
	if _, ctrl, err := decodeDescription([]byte(desc), loc, gw); err != nil || ctrl != "http://192.168.1.1:5000/ctl/IPConn" {
		t.Errorf("URLBase: %q %v", ctrl, err)
	}
	// A control URL elsewhere than the gateway is refused.
	desc = strings.Replace(testDescription(wanServices[1]), "/ctl/IPConn", "http://10.0.0.9/ctl", 1)
	if _, _, err := decodeDescription([]byte(desc), loc, gw); !errors.Is(err, ErrMalformed) {
		t.Errorf("foreign control URL: %v", err)
	}
	if _, _, err := decodeDescription([]byte(testDescription("urn:schemas-upnp-org:service:Other:1")), loc, gw); !errors.Is(err, ErrNotSupported) {
		t.Errorf("no WAN service: %v", err)
	}
	if _, _, err := decodeDescription([]byte("<root><device>"), loc, gw); !errors.Is(err, ErrMalformed) {
		t.Errorf("truncated: %v", err)
	}
}

func TestSOAPEncode(t *testing.T) {
	got := string(encodeSOAPRequest(wanServices[1], "DeletePortMapping", []soapArg{{"NewRemoteHost", ""}, {"NewExternalPort", "4660"}, {"NewProtocol", "<&>"}}))
	want := `<?xml version="1.0"?>` + "\r\n" + `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">` +
		`<s:Body><u:DeletePortMapping xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1"><NewRemoteHost></NewRemoteHost>` +
		`<NewExternalPort>4660</NewExternalPort><NewProtocol>&lt;&amp;&gt;</NewProtocol></u:DeletePortMapping></s:Body></s:Envelope>`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

const (
	testSOAPOK = `<?xml version="1.0"?>` + "\r\n" + `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">` +
		`<s:Body><u:GetExternalIPAddressResponse xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1">` +
		`<NewExternalIPAddress>203.0.113.7</NewExternalIPAddress></u:GetExternalIPAddressResponse></s:Body></s:Envelope>`
	testSOAPFault = `<?xml version="1.0"?>` + "\r\n" + `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">` +
		`<s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>` +
		`<UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>718</errorCode><errorDescription>ConflictInMappingEntry</errorDescription></UPnPError>` +
		`</detail></s:Fault></s:Body></s:Envelope>`
)

func TestSOAPDecode(t *testing.T) {
	out, err := decodeSOAPResponse(200, []byte(testSOAPOK), "GetExternalIPAddress")
	if err != nil || len(out) != 1 || out["NewExternalIPAddress"] != "203.0.113.7" {
		t.Errorf("ok: %v %v", out, err)
	}
	_, err = decodeSOAPResponse(500, []byte(testSOAPFault), "AddPortMapping")
	var re *ResultError
	if !errors.As(err, &re) || *re != (ResultError{Protocol: UPnP, Code: 718, Description: "ConflictInMappingEntry"}) {
		t.Errorf("fault: %v", err)
	}
	for name, in := range map[string]struct {
		status int
		body   string
	}{
		"empty":            {200, ""},
		"not xml":          {200, "<html>hello"},
		"other action":     {200, testSOAPOK},
		"no body":          {200, `<s:Envelope xmlns:s="x"></s:Envelope>`},
		"status 500, ok":   {500, testSOAPOK},
		"fault, bad code":  {500, strings.Replace(testSOAPFault, "718", "x", 1)},
		"unexpected child": {200, `<s:Envelope xmlns:s="x"><s:Body><Other/></s:Body></s:Envelope>`},
	} {
		action := "GetExternalIPAddress"
		if name == "other action" {
			action = "AddPortMapping"
		}
		if _, err := decodeSOAPResponse(in.status, []byte(in.body), action); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func TestParseRoutes(t *testing.T) {
	const table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"eth1\t00000000\t0101A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0\n" +
		"eth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n" +
		"eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n" +
		"eth2\t00000000\t0103A8C0\t0002\t0\t0\t0\t00000000\t0\t0\t0\n" // down
	gw, err := parseRoutes(strings.NewReader(table))
	if err != nil || gw != netip.MustParseAddr("192.168.2.1") {
		t.Errorf("got %v, %v; want 192.168.2.1", gw, err)
	}
	if _, err := parseRoutes(strings.NewReader(table[:strings.Index(table, "\n")+1])); !errors.Is(err, ErrNoGateway) {
		t.Errorf("no default route: %v", err)
	}
	if _, err := defaultGateway("/nonexistent/route"); !errors.Is(err, ErrNoGateway) {
		t.Errorf("no file: %v", err)
	}
}
