package scope_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2pos/rendezvous/scope"
)

const relayID = "12D3KooWPBg3oawZMgmyzVY189k78AbwBDpwf7YPa7BY7UmwUDpQ"

func prefixes(t *testing.T, cidrs ...string) []netip.Prefix {
	t.Helper()
	ps, err := scope.Parse(cidrs...)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func TestIsPublic(t *testing.T) {
	loopback := scope.With(prefixes(t, "127.0.0.0/8")...)
	lab := scope.With(prefixes(t, "10.0.0.0/8", "fd00::/8")...)
	only := scope.Only(prefixes(t, "10.0.0.0/8", "fd00::/8")...)
	linkLocal := scope.With(prefixes(t, "fe80::/10")...)

	scopes := []struct {
		name string
		s    scope.Scope
	}{
		{"zero", scope.Scope{}},
		{"internet", scope.Internet()},
		{"with loopback", loopback},
		{"with lab", lab},
		{"only lab", only},
		{"only nothing", scope.Only()},
		{"with link-local", linkLocal},
	}
	// want holds, per address, the answer of each scope above, in order.
	tests := []struct {
		addr string
		want []bool
	}{
		// zero, internet, with loopback, with lab, only lab, only nothing, with link-local
		{"/ip4/8.8.8.8/tcp/4001", []bool{true, true, true, true, false, false, true}},
		{"/ip4/1.1.1.1/udp/4001/quic-v1", []bool{true, true, true, true, false, false, true}},
		{"/ip4/127.0.0.1/tcp/4001", []bool{false, false, true, false, false, false, false}},
		{"/ip4/127.200.3.4/udp/1/quic-v1", []bool{false, false, true, false, false, false, false}},
		{"/ip4/10.1.2.3/udp/4001/quic-v1", []bool{false, false, false, true, true, false, false}},
		{"/ip4/192.168.1.1/tcp/4001", []bool{false, false, false, false, false, false, false}},
		{"/ip4/172.16.0.1/tcp/4001", []bool{false, false, false, false, false, false, false}},
		{"/ip4/100.64.0.1/tcp/4001", []bool{false, false, false, false, false, false, false}},
		{"/ip4/0.0.0.0/tcp/4001", []bool{false, false, false, false, false, false, false}},
		{"/ip6/2001:4860:4860::8888/tcp/4001", []bool{true, true, true, true, false, false, true}},
		{"/ip6/::1/tcp/4001", []bool{false, false, false, false, false, false, false}},
		{"/ip6/::/udp/4001/quic-v1", []bool{false, false, false, false, false, false, false}},
		{"/ip6/fd12:3456::1/tcp/4001", []bool{false, false, false, true, true, false, false}},
		{"/ip6/fe80::1/tcp/4001", []bool{false, false, false, false, false, false, true}},
		{"/ip6zone/eth0/ip6/fe80::1/tcp/4001", []bool{false, false, false, false, false, false, true}},
		// IPv4-mapped IPv6 addresses count as their IPv4 address in ranges.
		{"/ip6/::ffff:127.0.0.1/tcp/4001", []bool{false, false, true, false, false, false, false}},
		{"/ip6/::ffff:10.1.2.3/tcp/4001", []bool{false, false, false, true, true, false, false}},
		// DNS names are public on the internet, except local ones, and
		// never in an Only scope.
		{"/dns4/example.com/tcp/4001", []bool{true, true, true, true, false, false, true}},
		{"/dns/example.com/udp/4001/quic-v1", []bool{true, true, true, true, false, false, true}},
		{"/dnsaddr/bootstrap.example.com", []bool{true, true, true, true, false, false, true}},
		{"/dns/localhost/tcp/4001", []bool{false, false, false, false, false, false, false}},
		{"/dns4/printer.local/tcp/4001", []bool{false, false, false, false, false, false, false}},
		// Relay addresses count by their first hop.
		{"/ip4/8.8.8.8/tcp/4001/p2p/" + relayID + "/p2p-circuit", []bool{true, true, true, true, false, false, true}},
		{"/ip4/127.0.0.1/udp/4001/quic-v1/p2p/" + relayID + "/p2p-circuit", []bool{false, false, true, false, false, false, false}},
		{"/ip4/10.0.0.7/tcp/4001/p2p/" + relayID + "/p2p-circuit", []bool{false, false, false, true, true, false, false}},
		{"/dns4/relay.example.com/tcp/4001/p2p/" + relayID + "/p2p-circuit", []bool{true, true, true, true, false, false, true}},
		// An address without a first hop is not public anywhere.
		{"/p2p/" + relayID + "/p2p-circuit", []bool{false, false, false, false, false, false, false}},
		{"/p2p/" + relayID, []bool{false, false, false, false, false, false, false}},
	}
	for _, tc := range tests {
		if len(tc.want) != len(scopes) {
			t.Fatalf("%s: %d answers for %d scopes", tc.addr, len(tc.want), len(scopes))
		}
		addr := ma.StringCast(tc.addr)
		for i, sc := range scopes {
			if got := sc.s.IsPublic(addr); got != tc.want[i] {
				t.Errorf("%s (%s).IsPublic(%s) = %v, want %v", sc.name, sc.s, tc.addr, got, tc.want[i])
			}
		}
	}
	for _, sc := range scopes {
		if sc.s.IsPublic(nil) || sc.s.IsPublic(ma.Multiaddr{}) {
			t.Errorf("%s: empty address counts as public", sc.name)
		}
	}
}

func TestFilter(t *testing.T) {
	in := []ma.Multiaddr{
		ma.StringCast("/ip4/8.8.8.8/tcp/1"),
		ma.StringCast("/ip4/127.0.0.1/tcp/2"),
		ma.StringCast("/ip4/10.0.0.1/tcp/3"),
		ma.StringCast("/ip6/2001:4860:4860::8888/udp/4/quic-v1"),
		ma.StringCast("/ip4/0.0.0.0/tcp/5"),
		ma.StringCast("/ip4/127.0.0.1/tcp/6/p2p/" + relayID + "/p2p-circuit"),
	}
	orig := slices.Clone(in)
	tests := []struct {
		name string
		s    scope.Scope
		want []int // indexes into in, in order
	}{
		{"internet", scope.Internet(), []int{0, 3}},
		{"with loopback", scope.With(prefixes(t, "127.0.0.0/8")...), []int{0, 1, 3, 5}},
		{"only 10/8", scope.Only(prefixes(t, "10.0.0.0/8")...), []int{2}},
		{"only nothing", scope.Only(), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.s.Filter(in)
			var want []ma.Multiaddr
			for _, i := range tc.want {
				want = append(want, in[i])
			}
			if !slices.EqualFunc(got, want, func(a, b ma.Multiaddr) bool { return a.Equal(b) }) {
				t.Errorf("Filter = %v, want %v", got, want)
			}
			if !slices.EqualFunc(in, orig, func(a, b ma.Multiaddr) bool { return a.Equal(b) }) {
				t.Fatalf("Filter modified its input: %v", in)
			}
		})
	}
	if got := scope.Internet().Filter(nil); len(got) != 0 {
		t.Errorf("Filter(nil) = %v", got)
	}
}

func TestParse(t *testing.T) {
	got, err := scope.Parse("10.0.0.0/8", "fd00::/8", "192.168.1.0/24")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("fd00::/8"),
		netip.MustParsePrefix("192.168.1.0/24"),
	}
	if !slices.Equal(got, want) {
		t.Errorf("Parse = %v, want %v", got, want)
	}
	if got, err := scope.Parse(); err != nil || len(got) != 0 {
		t.Errorf("Parse() = %v, %v; want empty", got, err)
	}

	for _, bad := range []string{"", "10.0.0.0", "10.0.0.0/33", "fd00::/129", "not-a-range", "10.0.0.0/8 ", "/ip4/10.0.0.0"} {
		_, err := scope.Parse("127.0.0.0/8", bad)
		if err == nil {
			t.Errorf("Parse(%q) succeeded", bad)
			continue
		}
		if !strings.Contains(err.Error(), strings.TrimSpace(bad)) {
			t.Errorf("Parse(%q): error %q does not name the range", bad, err)
		}
	}
}

func TestRangesAndString(t *testing.T) {
	// Ranges are stored masked; invalid prefixes are dropped.
	s := scope.With(netip.MustParsePrefix("10.1.2.3/8"), netip.Prefix{}, netip.MustParsePrefix("fd00::1/8"))
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	if got := s.Ranges(); !slices.Equal(got, want) {
		t.Errorf("Ranges = %v, want %v", got, want)
	}
	if !s.IsPublic(ma.StringCast("/ip4/10.200.0.1/tcp/1")) {
		t.Error("an address in the masked range is not public")
	}

	// A scope does not change when the caller's slices do.
	in := prefixes(t, "127.0.0.0/8")
	loop := scope.With(in...)
	in[0] = netip.MustParsePrefix("8.0.0.0/8")
	loop.Ranges()[0] = netip.MustParsePrefix("9.0.0.0/8")
	if !loop.IsPublic(ma.StringCast("/ip4/127.0.0.1/tcp/1")) || loop.Ranges()[0] != netip.MustParsePrefix("127.0.0.0/8") {
		t.Errorf("scope changed with its caller's slices: %v", loop)
	}

	for _, tc := range []struct {
		s    scope.Scope
		want string
	}{
		{scope.Scope{}, "internet"},
		{scope.Internet(), "internet"},
		{scope.With(prefixes(t, "127.0.0.0/8")...), "internet + 127.0.0.0/8"},
		{scope.Only(prefixes(t, "10.0.0.0/8", "fd00::/8")...), "only + 10.0.0.0/8,fd00::/8"},
		{scope.Only(), "only"},
	} {
		if got := tc.s.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
	if len(scope.Internet().Ranges()) != 0 {
		t.Errorf("internet scope has ranges %v", scope.Internet().Ranges())
	}
}
