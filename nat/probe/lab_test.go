package probe

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/p2pos/rendezvous/internal/natlab"
)

// Ports of the lab's probe servers.
const (
	labPort    uint16 = 3478
	labAltPort uint16 = 3479
)

// startLabServers runs sibling probe servers on public hosts s1 and s2,
// their sockets made inside the hosts' namespaces.
func startLabServers(t *testing.T, s1, s2 *natlab.Host) (a, b netip.AddrPort) {
	t.Helper()
	a, b = netip.AddrPortFrom(s1.Addr(), labPort), netip.AddrPortFrom(s2.Addr(), labPort)
	for _, tc := range []struct {
		h       *natlab.Host
		sibling netip.AddrPort
	}{{s1, b}, {s2, a}} {
		pc, err := tc.h.ListenUDP(netip.AddrPortFrom(tc.h.Addr(), labPort))
		if err != nil {
			t.Fatal(err)
		}
		ac, err := tc.h.ListenUDP(netip.AddrPortFrom(tc.h.Addr(), labAltPort))
		if err != nil {
			pc.Close()
			t.Fatal(err)
		}
		srv, err := NewServer(pc, WithAltConn(ac), WithSiblings(tc.sibling), WithLogf(t.Logf))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
	}
	return a, b
}

// hostSockets makes the sockets of Classify and MeasureTimeout inside h's
// namespace.
func hostSockets(h *natlab.Host) func() (net.PacketConn, error) {
	return func() (net.PacketConn, error) { return h.ListenUDP(netip.AddrPort{}) }
}

// labKind is what Classify must report behind a router kind.
type labKind struct {
	kind                 natlab.Kind
	mapping, filtering   Behavior
	pattern              PortPattern
	single1, single2     Behavior // mapping and filtering with one server
	singleMapConfidence  float64
	singleFiltConfidence float64
}

var labKinds = []labKind{
	{natlab.FullCone, EndpointIndependent, EndpointIndependent, PortPreserving, EndpointIndependent, AddressDependent, 0.5, 0.5},
	{natlab.Restricted, EndpointIndependent, AddressDependent, PortPreserving, EndpointIndependent, AddressDependent, 0.5, 0.5},
	{natlab.PortRestricted, EndpointIndependent, AddressAndPortDependent, PortPreserving, EndpointIndependent, AddressAndPortDependent, 0.5, 1},
	{natlab.UPnP, EndpointIndependent, AddressAndPortDependent, PortPreserving, EndpointIndependent, AddressAndPortDependent, 0.5, 1},
	{natlab.CGNAT, EndpointIndependent, AddressAndPortDependent, PortPreserving, EndpointIndependent, AddressAndPortDependent, 0.5, 1},
	{natlab.Symmetric, AddressAndPortDependent, AddressAndPortDependent, PortRandom, AddressAndPortDependent, AddressAndPortDependent, 1, 1},
}

// Idle UDP timeouts of the lab's timeout routers.
var labTimeouts = []time.Duration{6 * time.Second, 12 * time.Second}

// TestLab builds one lab with a host behind every router kind, two more
// behind port-restricted routers with short UDP timeouts, and two public
// probe servers that are siblings, then classifies every kind (three times
// with both servers, once with one) and measures the timeouts, all in
// parallel.
func TestLab(t *testing.T) {
	natlab.Require(t)
	spec := natlab.Spec{Hosts: []natlab.HostSpec{{Name: "s1"}, {Name: "s2"}}}
	addHost := func(name string, rs natlab.RouterSpec) {
		rs.Name = "r-" + name
		spec.Routers = append(spec.Routers, rs)
		spec.Hosts = append(spec.Hosts, natlab.HostSpec{Name: "h-" + name, Router: rs.Name})
	}
	for _, k := range labKinds {
		addHost(string(k.kind), natlab.RouterSpec{Kind: k.kind})
	}
	addHost(string(natlab.UDPBlocked), natlab.RouterSpec{Kind: natlab.UDPBlocked})
	for _, d := range labTimeouts {
		addHost("t"+d.String(), natlab.RouterSpec{Kind: natlab.PortRestricted, UDPTimeout: d})
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	l, err := natlab.New(ctx, spec, natlab.WithLogf(t.Logf))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		start := time.Now()
		if err := l.Close(); err != nil {
			t.Error(err)
		}
		t.Logf("lab closed in %v", time.Since(start).Round(time.Millisecond))
	})
	t.Logf("lab %s built in %v", l.Prefix(), time.Since(start).Round(time.Millisecond))
	a, b := startLabServers(t, l.Host("s1"), l.Host("s2"))

	// The subtests run at once from goroutines rather than with
	// t.Parallel, which -parallel (GOMAXPROCS) would serialize: they
	// mostly wait on the network and the timeouts.
	var wg sync.WaitGroup
	run := func(name string, f func(t *testing.T)) {
		wg.Go(func() { t.Run(name, f) })
	}
	for _, k := range labKinds {
		run(string(k.kind), func(t *testing.T) { testLabKind(t, l, k, a, b) })
	}
	run(string(natlab.UDPBlocked), func(t *testing.T) {
		h := l.Host("h-" + string(natlab.UDPBlocked))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		res, err := Classify(ctx, []netip.AddrPort{a, b}, hostSockets(h), WithWait(300*time.Millisecond))
		if !errors.Is(err, ErrUDPBlocked) {
			t.Errorf("Classify: %+v, %v; want ErrUDPBlocked", res, err)
		}
		_, err = MeasureTimeout(ctx, a, []time.Duration{time.Second}, hostSockets(h), nil, WithWait(300*time.Millisecond))
		if !errors.Is(err, ErrUDPBlocked) {
			t.Errorf("MeasureTimeout: %v, want ErrUDPBlocked", err)
		}
	})
	for _, want := range labTimeouts {
		run("timeout-"+want.String(), func(t *testing.T) { testLabTimeout(t, l.Host("h-t"+want.String()), a, want) })
	}
	wg.Wait()
	t.Logf("done in %v", time.Since(start).Round(time.Millisecond))
}

func testLabKind(t *testing.T, l *natlab.Lab, k labKind, a, b netip.AddrPort) {
	h, r := l.Host("h-"+string(k.kind)), l.Router("r-"+string(k.kind))
	classify := func(servers []netip.AddrPort) Result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res, err := Classify(ctx, servers, hostSockets(h), WithWait(300*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%d servers: mapping %v (%.2f), filtering %v (%.2f), ports %v, hairpin %v, external %v, %d packets, %d bytes, %v",
			len(servers), res.Mapping, res.MappingConfidence, res.Filtering, res.FilteringConfidence,
			res.PortPattern, *res.Hairpin, res.External, res.Packets, res.Bytes, res.Elapsed.Round(time.Millisecond))
		if res.External.Addr() != r.WANAddr() {
			t.Errorf("external address %v, want the router's %v", res.External.Addr(), r.WANAddr())
		}
		if *res.Hairpin {
			t.Error("hairpinning reported; the lab's routers do not hairpin")
		}
		return res
	}
	for range 3 {
		res := classify([]netip.AddrPort{a, b})
		if res.Mapping != k.mapping || res.Filtering != k.filtering || res.PortPattern != k.pattern {
			t.Errorf("got mapping %v, filtering %v, ports %v; want %v, %v, %v",
				res.Mapping, res.Filtering, res.PortPattern, k.mapping, k.filtering, k.pattern)
		}
		if res.Confidence != 1 || res.Servers != 2 || !res.Siblings || !res.Determined() {
			t.Errorf("confidence %v with %d servers (siblings %v, determined %v), want 1 with 2 siblings",
				res.Confidence, res.Servers, res.Siblings, res.Determined())
		}
	}
	// One server: address dependence cannot be measured.
	res := classify([]netip.AddrPort{a})
	if res.Mapping != k.single1 || res.Filtering != k.single2 || res.Servers != 1 {
		t.Errorf("one server: got mapping %v, filtering %v; want %v, %v", res.Mapping, res.Filtering, k.single1, k.single2)
	}
	// What one server cannot tell is said to be undetermined.
	if (res.MappingAmbiguousWith != BehaviorUnknown) != (k.singleMapConfidence < 1) ||
		(res.FilteringAmbiguousWith != BehaviorUnknown) != (k.singleFiltConfidence < 1) {
		t.Errorf("one server: ambiguous with %v, %v", res.MappingAmbiguousWith, res.FilteringAmbiguousWith)
	}
	if res.MappingConfidence != k.singleMapConfidence || res.FilteringConfidence != k.singleFiltConfidence {
		t.Errorf("one server: confidences %v, %v; want %v, %v",
			res.MappingConfidence, res.FilteringConfidence, k.singleMapConfidence, k.singleFiltConfidence)
	}
}

func testLabTimeout(t *testing.T, h *natlab.Host, server netip.AddrPort, want time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cands := []time.Duration{2, 4, 6, 8, 10, 14, 18}
	for i := range cands {
		cands[i] *= time.Second
	}
	var calls int
	res, err := MeasureTimeout(ctx, server, cands, hostSockets(h), func(done, total int) {
		calls++
		if done != calls || total != len(cands) {
			t.Errorf("progress(%d, %d) at call %d", done, total, calls)
		}
	}, WithGrace(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("timeout %v: lower %v, upper %v, estimate %v, alive %v, expired %v, %d packets, %d bytes, %v",
		want, res.Lower, res.Upper, res.Estimate, res.Alive, res.Expired, res.Packets, res.Bytes, res.Elapsed.Round(time.Millisecond))
	if calls != len(cands) {
		t.Errorf("progress called %d times, want %d", calls, len(cands))
	}
	if !res.Consistent || len(res.Unacknowledged) > 0 {
		t.Errorf("inconsistent or lost probes: %+v", res)
	}
	if res.Lower > want || (res.Upper != 0 && res.Upper < want) || res.Upper == 0 {
		t.Errorf("bounds [%v, %v] do not hold the timeout %v", res.Lower, res.Upper, want)
	}
	if d := res.Estimate - want; d < -2*time.Second || d > 2*time.Second {
		t.Errorf("estimate %v, want %v ± 2s", res.Estimate, want)
	}
	if max := cands[len(cands)-1] + 3*time.Second; res.Elapsed > max {
		t.Errorf("took %v, want the longest candidate plus the grace (%v)", res.Elapsed, max)
	}
}
