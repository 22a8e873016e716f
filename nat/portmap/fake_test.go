package portmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

var testExternal = netip.MustParseAddr("203.0.113.7")

// fakeGW is a NAT-PMP and PCP server on loopback.
type fakeGW struct {
	conn *net.UDPConn
	wg   sync.WaitGroup

	mu          sync.Mutex
	pmpResult   uint16            // result of NAT-PMP map requests
	pcpResult   byte              // result of PCP MAP requests
	pmpOnly     bool              // answer PCP in NAT-PMP's format, result 1
	garbage     [][]byte          // sent before every answer
	onlyGarbage bool              // and no answer
	lifetimeCap uint32            // 0: grant what is asked
	mappings    map[string]uint16 // "udp/internal" -> external port
	requests    int
}

func startFakeGW(t *testing.T) *fakeGW {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	g := &fakeGW{conn: c, mappings: map[string]uint16{}}
	g.wg.Go(g.serve)
	t.Cleanup(func() { c.Close(); g.wg.Wait() })
	return g
}

func (g *fakeGW) port() uint16 { return uint16(g.conn.LocalAddr().(*net.UDPAddr).Port) }

func (g *fakeGW) mapped(key string) (uint16, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	p, ok := g.mappings[key]
	return p, ok
}

func (g *fakeGW) serve() {
	buf := make([]byte, 2048)
	for {
		n, from, err := g.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		g.mu.Lock()
		g.requests++
		out := append([][]byte(nil), g.garbage...)
		if !g.onlyGarbage {
			if a := g.answer(buf[:n]); a != nil {
				out = append(out, a)
			}
		}
		g.mu.Unlock()
		for _, b := range out {
			g.conn.WriteToUDPAddrPort(b, from) //nolint:errcheck
		}
	}
}

func (g *fakeGW) grant(asked uint32) uint32 {
	if g.lifetimeCap != 0 && asked > g.lifetimeCap {
		return g.lifetimeCap
	}
	return asked
}

// answer returns the answer to req; g.mu is held.
func (g *fakeGW) answer(req []byte) []byte {
	switch {
	case len(req) >= 2 && req[0] == 0 && req[1] == pmpOpAddr:
		b := make([]byte, 12)
		b[1] = 128
		binary.BigEndian.PutUint32(b[4:], 1000)
		copy(b[8:], testExternal.AsSlice())
		return b
	case len(req) == 12 && req[0] == 0 && (req[1] == pmpOpUDP || req[1] == pmpOpTCP):
		internal := binary.BigEndian.Uint16(req[4:])
		suggested := binary.BigEndian.Uint16(req[6:])
		life := binary.BigEndian.Uint32(req[8:])
		key := fmt.Sprintf("%s/%d", map[byte]string{1: "udp", 2: "tcp"}[req[1]], internal)
		b := make([]byte, 16)
		b[1] = 128 + req[1]
		binary.BigEndian.PutUint16(b[2:], g.pmpResult)
		binary.BigEndian.PutUint32(b[4:], 1000)
		binary.BigEndian.PutUint16(b[8:], internal)
		if g.pmpResult == 0 {
			if life == 0 {
				delete(g.mappings, key)
			} else {
				if suggested == 0 {
					suggested = internal
				}
				g.mappings[key] = suggested
				binary.BigEndian.PutUint16(b[10:], suggested)
				binary.BigEndian.PutUint32(b[12:], g.grant(life))
			}
		}
		return b
	case len(req) >= 24 && req[0] == pcpVersion && g.pmpOnly:
		return []byte{0, 128 + req[1], 0, pmpUnsupportedVersion, 0, 0, 3, 232}
	case len(req) == 24 && req[0] == pcpVersion && req[1] == pcpOpAnnounce:
		b := make([]byte, 24)
		b[0], b[1] = pcpVersion, pcpResponseBit|pcpOpAnnounce
		return b
	case len(req) == 60 && req[0] == pcpVersion && req[1] == pcpOpMap:
		life := binary.BigEndian.Uint32(req[4:])
		internal := binary.BigEndian.Uint16(req[40:])
		suggested := binary.BigEndian.Uint16(req[42:])
		key := fmt.Sprintf("%s/%d", map[byte]string{protoUDP: "udp", protoTCP: "tcp"}[req[36]], internal)
		b := make([]byte, 60)
		copy(b, req)
		b[1] = pcpResponseBit | pcpOpMap
		b[2], b[3] = 0, g.pcpResult
		clear(b[8:24])
		binary.BigEndian.PutUint32(b[8:], 1000)
		if g.pcpResult == 0 {
			if life == 0 {
				delete(g.mappings, key)
			} else {
				if suggested == 0 {
					suggested = internal
				}
				g.mappings[key] = suggested
				binary.BigEndian.PutUint16(b[42:], suggested)
				putAddr16(b[44:], testExternal)
			}
			binary.BigEndian.PutUint32(b[4:], g.grant(life))
		}
		return b
	}
	return nil
}

// fakeIGD is a UPnP IGD on loopback: an SSDP responder and an HTTP server.
type fakeIGD struct {
	ssdp *net.UDPConn
	srv  *httptest.Server
	wg   sync.WaitGroup

	mu       sync.Mutex
	service  string
	ssdpMsg  string         // override of the SSDP answer; %s is the location
	desc     string         // override of the device description
	soapBody string         // override of every SOAP answer (status 200)
	faults   map[string]int // action -> UPnP errorCode
	faultN   map[string]int // how many times to fault; 0 = always
	mappings map[string]string
	leases   map[string]string
	calls    []string
}

func startFakeIGD(t *testing.T) *fakeIGD {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	d := &fakeIGD{
		ssdp:     c,
		service:  "urn:schemas-upnp-org:service:WANIPConnection:1",
		faults:   map[string]int{},
		faultN:   map[string]int{},
		mappings: map[string]string{},
		leases:   map[string]string{},
	}
	d.srv = httptest.NewServer(http.HandlerFunc(d.handle))
	d.wg.Go(d.serveSSDP)
	t.Cleanup(func() { c.Close(); d.wg.Wait(); d.srv.Close() })
	return d
}

func (d *fakeIGD) port() uint16 { return uint16(d.ssdp.LocalAddr().(*net.UDPAddr).Port) }

func (d *fakeIGD) location() string { return d.srv.URL + "/rootDesc.xml" }

func (d *fakeIGD) serveSSDP() {
	buf := make([]byte, 2048)
	for {
		n, from, err := d.ssdp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		msg := string(buf[:n])
		if !strings.HasPrefix(msg, "M-SEARCH * HTTP/1.1\r\n") || !strings.Contains(msg, "InternetGatewayDevice:1") {
			continue
		}
		d.mu.Lock()
		tmpl := d.ssdpMsg
		d.mu.Unlock()
		if tmpl == "" {
			tmpl = "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n" +
				"USN: uuid:fake::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nEXT:\r\nSERVER: fake UPnP/1.1\r\nLOCATION: %s\r\n\r\n"
		}
		d.ssdp.WriteToUDPAddrPort(fmt.Appendf(nil, tmpl, d.location()), from) //nolint:errcheck
	}
}

func testDescription(service string) string {
	return `<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><specVersion><major>1</major><minor>0</minor></specVersion>
<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType><controlURL>/L3F</controlURL></service></serviceList>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>
<serviceList><service><serviceType>` + service + `</serviceType><serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
<controlURL>/ctl/IPConn</controlURL><eventSubURL>/evt/IPConn</eventSubURL><SCPDURL>/WANIPCn.xml</SCPDURL></service></serviceList>
</device></deviceList></device></deviceList></device></root>`
}

var soapArgRE = regexp.MustCompile(`<(New\w+)>([^<]*)</New\w+>`)

func (d *fakeIGD) handle(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch r.URL.Path {
	case "/rootDesc.xml":
		desc := d.desc
		if desc == "" {
			desc = testDescription(d.service)
		}
		io.WriteString(w, desc) //nolint:errcheck
		return
	case "/ctl/IPConn":
	default:
		http.NotFound(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	svc, action, _ := strings.Cut(strings.Trim(r.Header.Get("SOAPAction"), `"`), "#")
	d.calls = append(d.calls, action)
	if svc != d.service || !strings.Contains(string(body), "<u:"+action+" xmlns:u=\""+svc+"\">") {
		http.Error(w, "bad SOAPAction", http.StatusBadRequest)
		return
	}
	if d.soapBody != "" {
		io.WriteString(w, d.soapBody) //nolint:errcheck
		return
	}
	if code, ok := d.faults[action]; ok {
		if d.faultN[action] > 0 {
			d.faultN[action]--
			if d.faultN[action] == 0 {
				delete(d.faults, action)
			}
		}
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>`+
			`<faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0">`+
			`<errorCode>%d</errorCode><errorDescription>fake error</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>`, code)
		return
	}
	args := map[string]string{}
	for _, m := range soapArgRE.FindAllStringSubmatch(string(body), -1) {
		args[m[1]] = m[2]
	}
	out := ""
	switch action {
	case "GetExternalIPAddress":
		out = "<NewExternalIPAddress>" + testExternal.String() + "</NewExternalIPAddress>"
	case "AddPortMapping":
		key := args["NewProtocol"] + "/" + args["NewExternalPort"]
		d.mappings[key] = args["NewInternalClient"] + ":" + args["NewInternalPort"]
		d.leases[key] = args["NewLeaseDuration"]
	case "DeletePortMapping":
		key := args["NewProtocol"] + "/" + args["NewExternalPort"]
		if _, ok := d.mappings[key]; !ok {
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><detail><UPnPError><errorCode>714</errorCode></UPnPError></detail></s:Fault></s:Body></s:Envelope>`) //nolint:errcheck
			return
		}
		delete(d.mappings, key)
	}
	fmt.Fprintf(w, `<?xml version="1.0"?>`+"\r\n"+`<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">`+
		`<s:Body><u:%sResponse xmlns:u="%s">%s</u:%sResponse></s:Body></s:Envelope>`, action, svc, out, action)
}

func (d *fakeIGD) lease(key string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.leases[key]
}

func (d *fakeIGD) mapping(key string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.mappings[key]
	return v, ok
}

// closedPort returns a loopback UDP port nothing listens on.
func closedPort(t *testing.T) uint16 {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return uint16(c.LocalAddr().(*net.UDPAddr).Port)
}

// newTestClient returns a Client for the fake servers on loopback; a nil
// server is replaced by a closed port.
func newTestClient(t *testing.T, g *fakeGW, d *fakeIGD, opts ...Option) *Client {
	t.Helper()
	gwPort, ssdpPort := closedPort(t), closedPort(t)
	if g != nil {
		gwPort = g.port()
	}
	if d != nil {
		ssdpPort = d.port()
	}
	base := []Option{
		WithGateway(netip.MustParseAddr("127.0.0.1")),
		WithTimeout(time.Second),
		withPorts(gwPort, ssdpPort),
		withSSDPGroup(netip.AddrPort{}), // never multicast from a test
	}
	c, err := NewClient(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func resultCode(t *testing.T, err error, p Protocol) int {
	t.Helper()
	var re *ResultError
	if !errors.As(err, &re) {
		t.Fatalf("error %v is not a *ResultError", err)
	}
	if re.Protocol != p {
		t.Fatalf("ResultError for %s, want %s", re.Protocol, p)
	}
	return re.Code
}

// set changes the gateway's behaviour under its lock.
func (g *fakeGW) set(f func(g *fakeGW)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f(g)
}

// set changes the IGD's behaviour under its lock.
func (d *fakeIGD) set(f func(d *fakeIGD)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f(d)
}
