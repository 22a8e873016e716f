package portmap

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestMapEachProtocol(t *testing.T) {
	for _, p := range []Protocol{PCP, NATPMP, UPnP} {
		t.Run(string(p), func(t *testing.T) {
			t.Parallel()
			g, d := startFakeGW(t), startFakeIGD(t)
			now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
			c := newTestClient(t, g, d, WithProtocols(p), WithClock(func() time.Time { return now }))
			for _, transport := range []string{"udp", "tcp"} {
				m, err := c.Map(ctxT(t), transport, 4000, time.Hour)
				if err != nil {
					t.Fatal(err)
				}
				if m.Protocol != p || m.Transport != transport || m.InternalPort != 4000 ||
					m.External != netip.AddrPortFrom(testExternal, 4000) || m.Lifetime != time.Hour || !m.Obtained.Equal(now) {
					t.Errorf("mapping %+v", m)
				}
				if m.Expires() != now.Add(time.Hour) {
					t.Errorf("expires %v", m.Expires())
				}
				key, ukey := transport+"/4000", map[string]string{"udp": "UDP/4000", "tcp": "TCP/4000"}[transport]
				if p == UPnP {
					if v, ok := d.mapping(ukey); !ok || v != "127.0.0.1:4000" {
						t.Errorf("IGD mapping %q %v", v, ok)
					}
				} else if _, ok := g.mapped(key); !ok {
					t.Errorf("gateway has no mapping %s", key)
				}
				if err := c.Delete(ctxT(t), m); err != nil {
					t.Fatal(err)
				}
				if _, ok := g.mapped(key); ok {
					t.Error("mapping not deleted")
				}
				if _, ok := d.mapping(ukey); ok {
					t.Error("IGD mapping not deleted")
				}
			}
		})
	}
}

func TestMapOrder(t *testing.T) {
	t.Parallel()
	g, d := startFakeGW(t), startFakeIGD(t)
	c := newTestClient(t, g, d)
	m, err := c.Map(ctxT(t), "udp", 4000, time.Hour)
	if err != nil || m.Protocol != PCP {
		t.Fatalf("%v %v, want PCP first", m, err)
	}

	// A NAT-PMP-only gateway answers PCP in NAT-PMP's format: fall back.
	g.set(func(g *fakeGW) { g.pmpOnly = true })
	start := time.Now()
	m, err = c.Map(ctxT(t), "udp", 4001, time.Hour)
	if err != nil || m.Protocol != NATPMP {
		t.Fatalf("%v %v, want NAT-PMP", m, err)
	}
	if time.Since(start) > 500*time.Millisecond {
		t.Errorf("fallback took %v", time.Since(start))
	}

	// Nothing on port 5351: UPnP, quickly (the port is refused).
	c = newTestClient(t, nil, d)
	start = time.Now()
	m, err = c.Map(ctxT(t), "udp", 4002, time.Hour)
	if err != nil || m.Protocol != UPnP {
		t.Fatalf("%v %v, want UPnP", m, err)
	}
	if time.Since(start) > 500*time.Millisecond {
		t.Errorf("refused ports took %v", time.Since(start))
	}
}

func TestMapRenewKeepsPortAndNonce(t *testing.T) {
	t.Parallel()
	g := startFakeGW(t)
	c := newTestClient(t, g, nil)
	m, err := c.Map(ctxT(t), "udp", 4000, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// The gateway moved the mapping; a renewal asks for the port it has.
	m.External = netip.AddrPortFrom(testExternal, 5000)
	req, _ := checkRequest("udp", 4000, time.Hour)
	m2, err := c.mapPort(ctxT(t), req, m)
	if err != nil {
		t.Fatal(err)
	}
	if m2.External.Port() != 5000 || m2.nonce != m.nonce {
		t.Errorf("renewal %v nonce %x, want port 5000 nonce %x", m2, m2.nonce, m.nonce)
	}
}

func TestNoGateway(t *testing.T) {
	t.Parallel()
	routes := filepath.Join(t.TempDir(), "route")
	if err := os.WriteFile(routes, []byte("Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(withRouteFile(routes))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Map(ctxT(t), "udp", 4000, time.Hour); !errors.Is(err, ErrNoGateway) {
		t.Errorf("Map: %v", err)
	}
	if _, err := c.Probe(ctxT(t)); !errors.Is(err, ErrNoGateway) {
		t.Errorf("Probe: %v", err)
	}
}

func TestNothingAnswers(t *testing.T) {
	t.Parallel()
	c := newTestClient(t, nil, nil, WithTimeout(300*time.Millisecond))
	start := time.Now()
	_, err := c.Map(ctxT(t), "udp", 4000, time.Hour)
	if !errors.Is(err, ErrNotSupported) {
		t.Fatalf("%v, want ErrNotSupported", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v", d)
	}
	a, err := c.Probe(ctxT(t))
	if err != nil || a.Any() || !errors.Is(a.PCP.Err, ErrNotSupported) || !errors.Is(a.UPnP.Err, ErrNotSupported) {
		t.Errorf("probe %+v %v", a, err)
	}
}

func TestProbe(t *testing.T) {
	t.Parallel()
	g, d := startFakeGW(t), startFakeIGD(t)
	c := newTestClient(t, g, d)
	a, err := c.Probe(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	want := Availability{
		Gateway: netip.MustParseAddr("127.0.0.1"),
		PCP:     Service{OK: true},
		NATPMP:  Service{OK: true, External: testExternal},
		UPnP:    Service{OK: true, External: testExternal},
	}
	if a != want {
		t.Errorf("got %+v\nwant %+v", a, want)
	}
}

func TestResultCodes(t *testing.T) {
	t.Parallel()
	g, d := startFakeGW(t), startFakeIGD(t)
	g.set(func(g *fakeGW) { g.pcpResult, g.pmpResult = 2, 4 })   // NOT_AUTHORIZED, out of resources
	d.set(func(d *fakeIGD) { d.faults["AddPortMapping"] = 606 }) // not authorized
	c := newTestClient(t, g, d)
	_, err := c.Map(ctxT(t), "udp", 4000, time.Hour)
	if err == nil {
		t.Fatal("mapped")
	}
	if errors.Is(err, ErrNotSupported) {
		t.Errorf("%v matches ErrNotSupported", err)
	}
	codes := map[Protocol]int{}
	for _, e := range err.(interface{ Unwrap() error }).Unwrap().(interface{ Unwrap() []error }).Unwrap() {
		var re *ResultError
		if errors.As(e, &re) {
			codes[re.Protocol] = re.Code
		}
	}
	if want := map[Protocol]int{PCP: 2, NATPMP: 4, UPnP: 606}; len(codes) != 3 || codes[PCP] != 2 || codes[NATPMP] != 4 || codes[UPnP] != 606 {
		t.Errorf("codes %v, want %v (error %v)", codes, want, err)
	}
}

func TestUPnPRetries(t *testing.T) {
	t.Parallel()
	d := startFakeIGD(t)
	c := newTestClient(t, nil, d, WithProtocols(UPnP))

	// A conflict moves to another port.
	d.set(func(d *fakeIGD) { d.faults["AddPortMapping"], d.faultN["AddPortMapping"] = upnpConflict, 1 })
	m, err := c.Map(ctxT(t), "udp", 4000, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if m.External.Port() == 4000 || m.External.Port() < 1024 {
		t.Errorf("after a conflict, port %d", m.External.Port())
	}

	// Only permanent leases: lease 0, Lifetime 0.
	d.set(func(d *fakeIGD) { d.faults["AddPortMapping"], d.faultN["AddPortMapping"] = upnpOnlyPermanentLeases, 1 })
	m, err = c.Map(ctxT(t), "tcp", 4001, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if m.Lifetime != 0 || !m.Expires().IsZero() || d.lease("TCP/4001") != "0" {
		t.Errorf("permanent lease: %v, lease %q", m, d.lease("TCP/4001"))
	}

	// Deleting what the gateway no longer has is fine.
	if err := c.Delete(ctxT(t), m); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctxT(t), m); err != nil {
		t.Errorf("second delete: %v", err)
	}
}

func TestMalformedAnswers(t *testing.T) {
	t.Parallel()
	t.Run("gateway", func(t *testing.T) {
		t.Parallel()
		g := startFakeGW(t)
		g.set(func(g *fakeGW) { g.garbage = [][]byte{{0}, {2, 0x81, 0, 0}, make([]byte, 1200)} })
		c := newTestClient(t, g, nil, WithProtocols(PCP), WithTimeout(300*time.Millisecond))
		// Garbage before a good answer is skipped.
		if _, err := c.Map(ctxT(t), "udp", 4000, time.Hour); err != nil {
			t.Fatal(err)
		}
		g.set(func(g *fakeGW) { g.onlyGarbage = true })
		for _, p := range []Protocol{PCP, NATPMP} {
			c := newTestClient(t, g, nil, WithProtocols(p), WithTimeout(300*time.Millisecond))
			if _, err := c.Map(ctxT(t), "udp", 4000, time.Hour); !errors.Is(err, ErrMalformed) {
				t.Errorf("%s: %v, want ErrMalformed", p, err)
			}
		}
	})
	t.Run("upnp", func(t *testing.T) {
		t.Parallel()
		for name, set := range map[string]func(d *fakeIGD){
			"ssdp": func(d *fakeIGD) {
				d.ssdpMsg = "HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n%.0s"
			},
			"location": func(d *fakeIGD) {
				d.ssdpMsg = "HTTP/1.1 200 OK\r\nST: InternetGatewayDevice\r\nLOCATION: http://10.1.1.1/%.0s\r\n\r\n"
			},
			"description": func(d *fakeIGD) { d.desc = "<root><device><serviceList>" },
			"soap":        func(d *fakeIGD) { d.soapBody = "<s:Envelope><s:Body><u:Nope/></s:Body></s:Envelope>" },
			"external": func(d *fakeIGD) {
				d.soapBody = `<s:Envelope xmlns:s="x"><s:Body><u:GetExternalIPAddressResponse>` +
					`<NewExternalIPAddress>0.0.0.0</NewExternalIPAddress></u:GetExternalIPAddressResponse></s:Body></s:Envelope>`
			},
		} {
			d := startFakeIGD(t)
			d.set(set)
			c := newTestClient(t, nil, d, WithTimeout(300*time.Millisecond))
			_, err := c.Map(ctxT(t), "udp", 4000, time.Hour)
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("%s: %v, want ErrMalformed", name, err)
			}
		}
	})
}

func TestOptions(t *testing.T) {
	for name, o := range map[string]Option{
		"ipv6 gateway": WithGateway(netip.MustParseAddr("::1")),
		"timeout":      WithTimeout(0),
		"lifetime":     WithLifetime(time.Millisecond),
		"no protocol":  WithProtocols(),
		"unknown":      WithProtocols("smtp"),
		"twice":        WithProtocols(PCP, PCP),
		"nil dialer":   WithDialer(nil),
		"nil listener": WithListenPacket(nil),
		"nil clock":    WithClock(nil),
		"nil logger":   WithLogger(nil),
	} {
		if _, err := NewClient(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	c, err := NewClient()
	if err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]func() error{
		"transport": func() error { _, err := c.Map(context.Background(), "sctp", 1, time.Hour); return err },
		"port 0":    func() error { _, err := c.Map(context.Background(), "udp", 0, time.Hour); return err },
		"lifetime":  func() error { _, err := c.Map(context.Background(), "udp", 1, time.Millisecond); return err },
		"keep":      func() error { _, err := c.Keep("udp", 0, nil); return err },
		"delete":    func() error { return c.Delete(context.Background(), Mapping{}) },
	} {
		if f() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
