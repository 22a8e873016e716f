package probe

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

func loopbackSockets(t *testing.T) func() (net.PacketConn, error) {
	return func() (net.PacketConn, error) {
		return net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	}
}

// TestClassifyNoNAT classifies loopback, where nothing translates or
// filters.
func TestClassifyNoNAT(t *testing.T) {
	a, b := startSiblings(t)
	ctx := context.Background()
	res, err := Classify(ctx, []netip.AddrPort{a.primary, b.primary}, loopbackSockets(t), WithWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if res.Mapping != EndpointIndependent || res.Filtering != EndpointIndependent || res.PortPattern != PortPreserving ||
		res.Hairpin == nil || !*res.Hairpin || res.Confidence != 1 || res.Servers != 2 || !res.Siblings ||
		!res.SiblingChecked || !res.Determined() {
		t.Errorf("got %+v", res)
	}

	// One server: address dependence is not measured.
	res, err = Classify(ctx, []netip.AddrPort{a.primary}, loopbackSockets(t), WithWait(100*time.Millisecond), WithHairpin(false))
	if err != nil {
		t.Fatal(err)
	}
	if res.Mapping != EndpointIndependent || res.MappingConfidence != 0.5 || res.MappingAmbiguousWith != AddressDependent ||
		res.Filtering != AddressDependent || res.FilteringConfidence != 0.5 || res.FilteringAmbiguousWith != EndpointIndependent ||
		res.Hairpin != nil || res.Determined() {
		t.Errorf("one server: got %+v", res)
	}
}

func TestClassifyNoServer(t *testing.T) {
	c := listen(t, "127.0.0.1:0")
	dead := localAddr(c) // bound, never read
	_, err := Classify(context.Background(), []netip.AddrPort{dead}, loopbackSockets(t), WithWait(20*time.Millisecond))
	if !errors.Is(err, ErrUDPBlocked) {
		t.Errorf("err = %v, want ErrUDPBlocked", err)
	}
	// Cancellation ends a Classify at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Classify(ctx, []netip.AddrPort{dead}, loopbackSockets(t)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err = %v", err)
	}
}

// idleNAT wraps a socket and drops what arrives after it has been idle
// (no packet either way) for longer than timeout, as a NAT whose mapping
// expired would.
type idleNAT struct {
	net.PacketConn
	timeout time.Duration
	mu      sync.Mutex
	last    time.Time
}

func (c *idleNAT) touch(now time.Time) (expired bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	expired = !c.last.IsZero() && now.Sub(c.last) > c.timeout
	if !expired {
		c.last = now
	}
	return expired
}

func (c *idleNAT) WriteTo(b []byte, a net.Addr) (int, error) {
	c.touch(time.Now())
	return c.PacketConn.WriteTo(b, a)
}

func (c *idleNAT) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, a, err := c.PacketConn.ReadFrom(b)
		if err != nil || !c.touch(time.Now()) {
			return n, a, err
		}
	}
}

func TestMeasureTimeout(t *testing.T) {
	srv := startServer(t, "127.0.0.1")
	const timeout = 250 * time.Millisecond
	socket := func() (net.PacketConn, error) {
		c, err := loopbackSockets(t)()
		if err != nil {
			return nil, err
		}
		return &idleNAT{PacketConn: c, timeout: timeout}, nil
	}
	cands := []time.Duration{400 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond, 100 * time.Millisecond}
	before := srv.Stats()
	res, err := MeasureTimeout(context.Background(), srv.primary, cands, socket, nil, WithGrace(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if res.Lower != 200*time.Millisecond || res.Upper != 300*time.Millisecond || res.Estimate != 250*time.Millisecond || !res.Consistent {
		t.Errorf("got %+v, want bounds [200ms, 300ms]", res)
	}
	if res.Elapsed > time.Second {
		t.Errorf("took %v: probes do not run in parallel", res.Elapsed)
	}
	// Four probes: a request and an acknowledgement each, and two answers.
	if res.Packets != 10 {
		t.Errorf("%d packets, want 10", res.Packets)
	}
	after := srv.Stats()
	if sent, recv := after.BytesSent-before.BytesSent, after.BytesReceived-before.BytesReceived; sent > recv {
		t.Errorf("server sent %d bytes for %d received", sent, recv)
	}

	// Without a NAT every answer arrives.
	res, err = MeasureTimeout(context.Background(), srv.primary, []time.Duration{50 * time.Millisecond}, loopbackSockets(t), nil, WithGrace(100*time.Millisecond))
	if err != nil || res.Lower != 50*time.Millisecond || res.Upper != 0 || res.Estimate != 50*time.Millisecond {
		t.Errorf("no NAT: %+v, %v", res, err)
	}
}

func TestMeasureTimeoutErrors(t *testing.T) {
	srv := startServer(t, "127.0.0.1", WithLimits(Limits{MaxDelay: time.Second}))
	ctx := context.Background()
	if _, err := MeasureTimeout(ctx, srv.primary, []time.Duration{2 * time.Second}, loopbackSockets(t), nil); !errors.Is(err, ErrRefused) {
		t.Errorf("delay over the server's maximum: err = %v, want ErrRefused", err)
	}
	dead := localAddr(listen(t, "127.0.0.1:0"))
	if _, err := MeasureTimeout(ctx, dead, []time.Duration{time.Second}, loopbackSockets(t), nil, WithWait(20*time.Millisecond)); !errors.Is(err, ErrUDPBlocked) {
		t.Errorf("no server: err = %v, want ErrUDPBlocked", err)
	}
	for _, cands := range [][]time.Duration{{}, {0}, {time.Microsecond}, {601 * time.Second}, make([]time.Duration, 0, 40)} {
		if len(cands) == 0 && cap(cands) == 40 {
			for i := range 40 {
				cands = append(cands, time.Duration(i+1)*time.Second)
			}
		}
		if _, err := MeasureTimeout(ctx, srv.primary, cands, loopbackSockets(t), nil); err == nil {
			t.Errorf("candidates %v: no error", cands)
		}
	}
}

func TestBounds(t *testing.T) {
	s := time.Second
	tests := []struct {
		alive, expired    []time.Duration
		lower, upper, est time.Duration
		consistent        bool
	}{
		{[]time.Duration{s, 2 * s}, []time.Duration{4 * s, 8 * s}, 2 * s, 4 * s, 3 * s, true},
		{[]time.Duration{s, 2 * s}, nil, 2 * s, 0, 2 * s, true},
		{nil, []time.Duration{s, 2 * s}, 0, s, s / 2, true},
		// A lost answer below a surviving one.
		{[]time.Duration{s, 4 * s}, []time.Duration{2 * s, 8 * s}, 4 * s, 8 * s, 6 * s, false},
	}
	for _, tt := range tests {
		l, u, e, c := bounds(tt.alive, tt.expired)
		if l != tt.lower || u != tt.upper || e != tt.est || c != tt.consistent {
			t.Errorf("bounds(%v, %v) = %v, %v, %v, %v; want %v, %v, %v, %v",
				tt.alive, tt.expired, l, u, e, c, tt.lower, tt.upper, tt.est, tt.consistent)
		}
	}
}

func TestVerdicts(t *testing.T) {
	e1 := netip.MustParseAddrPort("198.51.100.1:1000")
	e2 := netip.MustParseAddrPort("198.51.100.1:1001")
	none := netip.AddrPort{}
	mapping := []struct {
		e2, e3 netip.AddrPort
		want   verdict
	}{
		{e1, e1, sure(EndpointIndependent)},
		{e1, e2, sure(AddressDependent)},
		{e2, e2, sure(AddressAndPortDependent)},
		{e1, none, either(EndpointIndependent, AddressDependent)},
		{e2, none, sure(AddressAndPortDependent)},
		{none, e1, sure(EndpointIndependent)},
		{none, e2, either(AddressAndPortDependent, AddressDependent)},
		{none, none, verdict{}},
	}
	for _, tt := range mapping {
		if got := mappingVerdict(e1, tt.e2, tt.e3); got != tt.want {
			t.Errorf("mappingVerdict(%v, %v, %v) = %v, want %v", e1, tt.e2, tt.e3, got, tt.want)
		}
	}
	filtering := []struct {
		testAlt, gotAlt, sibling, checked, gotPeer bool
		want                                       verdict
	}{
		{true, true, true, true, true, sure(EndpointIndependent)},
		{true, true, true, false, true, sure(EndpointIndependent)},
		{false, false, true, false, true, sure(EndpointIndependent)},
		{true, true, true, true, false, sure(AddressDependent)},
		// The sibling's packet may never have been sent: undetermined.
		{true, true, true, false, false, either(AddressDependent, EndpointIndependent)},
		{true, true, false, false, false, either(AddressDependent, EndpointIndependent)},
		{true, false, true, true, false, sure(AddressAndPortDependent)},
		{true, false, false, false, false, sure(AddressAndPortDependent)},
		{false, false, true, true, false, either(AddressAndPortDependent, AddressDependent)},
		{false, false, true, false, false, verdict{}},
		{false, false, false, false, false, verdict{}},
	}
	for _, tt := range filtering {
		if got := filteringVerdict(tt.testAlt, tt.gotAlt, tt.sibling, tt.checked, tt.gotPeer); got != tt.want {
			t.Errorf("filteringVerdict(%v, %v, %v, %v, %v) = %v, want %v",
				tt.testAlt, tt.gotAlt, tt.sibling, tt.checked, tt.gotPeer, got, tt.want)
		}
	}
	votes := []struct {
		vs   []verdict
		b, o Behavior
		c    float64
	}{
		{[]verdict{sure(EndpointIndependent), sure(EndpointIndependent), sure(AddressDependent)}, EndpointIndependent, BehaviorUnknown, 2.0 / 3},
		{[]verdict{either(AddressDependent, EndpointIndependent), either(AddressDependent, EndpointIndependent), sure(EndpointIndependent)},
			AddressDependent, EndpointIndependent, 1.0 / 3},
		// A sample that could not tell agrees with one that could.
		{[]verdict{either(AddressDependent, EndpointIndependent), sure(AddressDependent)}, AddressDependent, BehaviorUnknown, 1},
		{[]verdict{{}, {}}, BehaviorUnknown, BehaviorUnknown, 0},
		{nil, BehaviorUnknown, BehaviorUnknown, 0},
	}
	for _, tt := range votes {
		if b, o, c := vote(tt.vs); b != tt.b || o != tt.o || c != tt.c {
			t.Errorf("vote(%v) = %v, %v, %v; want %v, %v, %v", tt.vs, b, o, c, tt.b, tt.o, tt.c)
		}
	}
}

func TestPortPattern(t *testing.T) {
	tests := []struct {
		obs  []portObs
		want PortPattern
	}{
		{[]portObs{{1000, 1000}, {2000, 2000}}, PortPreserving},
		{[]portObs{{1000, 5000}, {2000, 5001}, {1500, 5003}}, PortSequential},
		{[]portObs{{1000, 65535}, {2000, 0}, {1500, 2}}, PortSequential}, // wraps
		{[]portObs{{1000, 5000}, {2000, 31000}, {1500, 12}}, PortRandom},
		{[]portObs{{1000, 1000}}, PortUnknown},
	}
	for _, tt := range tests {
		if got, _ := portPattern(tt.obs); got != tt.want {
			t.Errorf("portPattern(%v) = %v, want %v", tt.obs, got, tt.want)
		}
	}
}
