// Package scope decides which network addresses count as "public": reachable by
// any peer of the network a node belongs to.
//
// On the internet that is every global unicast address, as go-multiaddr's
// manet.IsPublicAddr says. A private deployment (a corporate network, a cloud
// VPC, a carrier NAT) or a test lab uses private ranges as its internet; there a
// Scope built with additional ranges says which of them count. Every package of
// this module that filters addresses (the DHT, signed records, relays) asks the
// same Scope, so a node never publishes, stores or dials an address that is out
// of its network's scope.
//
// A Scope belongs to the node it is given to: nothing process-wide is changed
// (go-multiaddr's own notion of public addresses stays as it is), so other
// libp2p hosts in the same process are not affected. A Scope is immutable and
// safe for concurrent use. The zero value is the internet scope.
package scope

import (
	"fmt"
	"net/netip"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Scope says which addresses are public. The zero value is the internet scope.
type Scope struct {
	extra []netip.Prefix
	only  bool
}

// Internet is the scope of the public internet: global unicast addresses only.
func Internet() Scope { return Scope{} }

// With returns the internet scope plus the given ranges: an address in one of
// them counts as public too (for example 10.0.0.0/8 in a private deployment, or
// 127.0.0.0/8 for a network on loopback).
func With(prefixes ...netip.Prefix) Scope {
	return Scope{extra: masked(prefixes)}
}

// Only returns a scope in which exactly the given ranges are public, and the
// internet's global addresses are not.
func Only(prefixes ...netip.Prefix) Scope {
	return Scope{extra: masked(prefixes), only: true}
}

// Parse parses CIDR ranges ("10.0.0.0/8", "fd00::/8") for With.
func Parse(cidrs ...string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(cidrs))
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("scope: bad range %q: %w", c, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func masked(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		if p.IsValid() {
			out = append(out, p.Masked())
		}
	}
	return out
}

// Ranges returns the extra ranges of the scope.
func (s Scope) Ranges() []netip.Prefix { return append([]netip.Prefix(nil), s.extra...) }

// IsPublic reports whether addr (a multiaddr starting with an IP, possibly
// through a relay: only the first hop counts) is public in this scope. DNS
// addresses are public in the internet scope and never in an Only scope.
// Unspecified addresses (0.0.0.0, ::) are never public.
func (s Scope) IsPublic(addr ma.Multiaddr) bool {
	if len(addr) == 0 {
		return false
	}
	ip, ok := firstIP(addr)
	if !ok {
		if s.only {
			return false
		}
		return manet.IsPublicAddr(addr)
	}
	if ip.IsUnspecified() {
		return false
	}
	for _, p := range s.extra {
		if p.Contains(ip) {
			return true
		}
	}
	if s.only {
		return false
	}
	return manet.IsPublicAddr(addr)
}

// Filter returns the addresses of addrs that are public in this scope, in their
// order. It never modifies addrs.
func (s Scope) Filter(addrs []ma.Multiaddr) []ma.Multiaddr {
	out := make([]ma.Multiaddr, 0, len(addrs))
	for _, a := range addrs {
		if s.IsPublic(a) {
			out = append(out, a)
		}
	}
	return out
}

// String describes the scope for logs and status output.
func (s Scope) String() string {
	base := "internet"
	if s.only {
		base = "only"
	}
	if len(s.extra) == 0 {
		return base
	}
	out := base
	for i, p := range s.extra {
		if i == 0 {
			out += " + "
		} else {
			out += ","
		}
		out += p.String()
	}
	return out
}

// IPOf returns the IP address addr starts with, unmapped; false when it
// does not start with one.
func IPOf(addr ma.Multiaddr) (netip.Addr, bool) {
	if len(addr) == 0 {
		return netip.Addr{}, false
	}
	return firstIP(addr)
}

func firstIP(addr ma.Multiaddr) (netip.Addr, bool) {
	c := addr[0]
	switch c.Code() {
	case ma.P_IP4, ma.P_IP6:
		ip, ok := netip.AddrFromSlice(c.RawValue())
		if !ok {
			return netip.Addr{}, false
		}
		return ip.Unmap(), true
	case ma.P_IP6ZONE:
		if len(addr) > 1 && addr[1].Code() == ma.P_IP6 {
			ip, ok := netip.AddrFromSlice(addr[1].RawValue())
			return ip, ok
		}
	}
	return netip.Addr{}, false
}
