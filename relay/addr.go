package relay

import (
	"errors"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

var errNoRelayAddr = errors.New("relay: relay has no usable address")

// circuitAddr returns relayAddr/p2p/relay/p2p-circuit.
func circuitAddr(relayAddr ma.Multiaddr, relay peer.ID) (ma.Multiaddr, error) {
	p2p, err := ma.NewComponent("p2p", relay.String())
	if err != nil {
		return nil, err
	}
	circ, err := ma.NewComponent("p2p-circuit", "")
	if err != nil {
		return nil, err
	}
	out := append(ma.Multiaddr{}, relayAddr...)
	return append(out, *p2p, *circ), nil
}

// IsRelayed reports whether addr goes through a relay (/p2p-circuit).
func IsRelayed(addr ma.Multiaddr) bool {
	for _, c := range addr {
		if c.Code() == ma.P_CIRCUIT {
			return true
		}
	}
	return false
}

// RelayOf returns the relay named in a /p2p-circuit address, or "" if addr
// is not relayed.
func RelayOf(addr ma.Multiaddr) peer.ID {
	var last peer.ID
	for _, c := range addr {
		switch c.Code() {
		case ma.P_P2P:
			id, err := peer.IDFromBytes(c.RawValue())
			if err == nil {
				last = id
			}
		case ma.P_CIRCUIT:
			return last
		}
	}
	return ""
}

// RelayAddrInfo returns the relay of a /p2p-circuit address with the
// address it is reached at (the part before /p2p/RELAY/p2p-circuit); ok is
// false if addr is not a circuit address through a named relay.
func RelayAddrInfo(addr ma.Multiaddr) (ai peer.AddrInfo, ok bool) {
	for i, c := range addr {
		if c.Code() != ma.P_CIRCUIT {
			continue
		}
		if i == 0 || addr[i-1].Code() != ma.P_P2P {
			return peer.AddrInfo{}, false
		}
		id, err := peer.IDFromBytes(addr[i-1].RawValue())
		if err != nil {
			return peer.AddrInfo{}, false
		}
		ai.ID = id
		if i > 1 {
			ai.Addrs = []ma.Multiaddr{addr[:i-1]}
		}
		return ai, true
	}
	return peer.AddrInfo{}, false
}
