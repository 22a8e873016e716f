package relay

import (
	"net/netip"
	"slices"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/p2pos/rendezvous/scope"
)

// withGuessedAddrs returns addrs with, for each transport a peer listens
// on at a LAN address but was not seen on at its public IP, an address at
// that IP with the LAN address's port: most NATs (Linux's masquerade among
// them) keep the port of a mapping when it is free, and a punch sends from
// the listening port. A peer that reached everyone over QUIC has no
// observed TCP address, yet a peer behind a router that blocks UDP can be
// punched to only over TCP. A wrong guess costs one failed dial. The
// addresses at ip come first, guesses after them, then the rest.
func withGuessedAddrs(ip netip.Addr, addrs []ma.Multiaddr) []ma.Multiaddr {
	if !ip.IsValid() {
		return addrs
	}
	var at, rest, guesses []ma.Multiaddr
	for _, a := range addrs {
		if aip, ok := scope.IPOf(a); ok && aip == ip {
			at = append(at, a)
		} else {
			rest = append(rest, a)
		}
	}
	have := func(shape string) bool {
		return slices.ContainsFunc(at, func(a ma.Multiaddr) bool { return shapeOf(a) == shape }) ||
			slices.ContainsFunc(guesses, func(a ma.Multiaddr) bool { return shapeOf(a) == shape })
	}
	for _, a := range rest {
		aip, ok := scope.IPOf(a)
		if !ok || aip.Is4() != ip.Is4() || !manet.IsPrivateAddr(a) || manet.IsIPLoopback(a) || len(a) < 2 || have(shapeOf(a)) {
			continue
		}
		head, err := manet.FromIP(ip.AsSlice())
		if err != nil {
			continue
		}
		guesses = append(guesses, append(head, a[1:]...))
	}
	return append(append(at, guesses...), rest...)
}

// shapeOf names the protocols of a after its IP, ports left out: "tcp",
// "udp/quic-v1".
func shapeOf(a ma.Multiaddr) string {
	var s string
	for i, c := range a {
		if i == 0 {
			continue
		}
		if s != "" {
			s += "/"
		}
		s += c.Protocol().Name
	}
	return s
}
