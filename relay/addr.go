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
