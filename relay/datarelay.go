package relay

import (
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	circuit "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
)

// DataRelayProtocol is served by a relay that volunteers to carry
// application traffic (a data relay), not only the setup of a direct
// connection: its relayed connections last and carry what its caps say,
// where a relay sized for coordination cuts them after circuit relay
// v2's default 2 min and 128 KiB. Identify lists the protocol, so that
// peers tell data relays apart without asking; a stream on it is closed
// at once. The caps themselves travel in the relay's signed record.
const DataRelayProtocol = protocol.ID("/p2pos/data-relay/1.0.0")

// WithDataRelay makes the service a data relay: each relayed connection
// may last limit.Duration and carry limit.Data bytes each way, and a peer
// may have circuits of them at once.
func WithDataRelay(limit circuit.RelayLimit, circuits int) ServiceOption {
	return func(s *serviceSettings) {
		s.dataRelay = true
		l := limit
		s.resources.Limit = &l
		s.resources.MaxCircuits = circuits
	}
}

// IsDataRelay tells whether id announced DataRelayProtocol to h.
func IsDataRelay(h host.Host, id peer.ID) bool {
	ok, _ := h.Peerstore().SupportsProtocols(id, DataRelayProtocol)
	return len(ok) > 0
}

// DataRelayAddrs keeps the relay addresses in addrs (of the form
// .../p2p/<relay>/p2p-circuit) whose relay is a data relay, as far as h
// knows.
func DataRelayAddrs(h host.Host, addrs []ma.Multiaddr) []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, a := range addrs {
		if id := RelayOf(a); id != "" && IsDataRelay(h, id) {
			out = append(out, a)
		}
	}
	return out
}

func closeStream(s network.Stream) { s.Close() }
