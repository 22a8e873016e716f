// Package relay lets public peers carry the connections of NATed ones, and
// NATed peers be reached through them. It uses libp2p's circuit relay v2, so
// any libp2p implementation can take part.
//
//   - Service runs the relay (hop) side on a publicly reachable node, with
//     limits sized for connection setup rather than bulk data, and only while
//     the node is public; WithDataRelay makes it a volunteer data relay with
//     the owner's caps, which identify announces (DataRelayProtocol).
//   - Reserver keeps reservations on a few public peers (two by default),
//     chosen among candidates the caller supplies (the node's DHT servers), a
//     data relay first, so no static relay list is needed. It replaces a relay as soon as its
//     connection drops, renews reservations before they expire, and reports
//     the resulting /p2p-circuit addresses.
//   - Dial connects to a peer over its direct and relay addresses at once and
//     reports the path the connection took (direct or relayed, via which
//     relay), its remote address and round-trip time.
//   - PunchService coordinates hole punches without a relayed connection
//     first (PunchProtocol): a relay forwards the initiator's request, with
//     the initiator's address as the relay sees it, to the target over the
//     connection the target holds to it; the target answers with its
//     addresses and dials back, while the initiator dials the addresses of
//     the target's record and of the answer. With endpoint-independent
//     mappings on one side at least, the two NATs open within about two
//     round trips through the relay. When one side maps endpoint-dependently
//     and the other filters strictly, the two spray-punch (spray.go): many
//     sockets on one side, probes to random ports from the other, the
//     birthday paradox, bounded to 256 sockets, 1536 probes and 4 s, over
//     QUIC or over TCP (spraytcp.go).
//   - HolePunch runs libp2p's DCUtR on relayed connections, for other libp2p
//     implementations, announcing the addresses peers observe and the LAN's.
//
// This package does not find peers or publish addresses: the caller gives it
// candidates and addresses, and publishes what it reports.
package relay
