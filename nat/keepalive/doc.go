// Package keepalive keeps a NATed peer's standing connections alive as
// cheaply as its router allows.
//
// A peer behind a NAT must keep a few connections open (to its relays) so
// that others can reach it, and the router forgets an idle mapping after a
// while. libp2p keeps every connection alive at a fixed rate: QUIC sends a
// PING every 15 s (fixed inside quicreuse), yamux pings every 30 s, and the
// TCP transport turns on kernel keep-alive probes every 30 s. An idle peer
// holding two relay connections pays for all of them.
//
// This package takes a different route, chosen because it is the cheapest
// that stays compatible with every libp2p peer:
//
//   - The standing connections are TCP. Routers keep established TCP
//     mappings far longer than UDP ones (RFC 5382 asks for at least two
//     hours, RFC 4787 for UDP only two minutes, and many routers use 30 s
//     for UDP), so the keep-alive can be rare.
//   - Transport is a TCP transport for libp2p (the same wire protocol as
//     libp2p's own) that owns its sockets' kernel keep-alive settings: by
//     default a long idle time (DefaultIdle), and for a standing connection
//     whatever SetIdle asks. A kernel keep-alive probe and its answer are
//     two bare TCP segments (about 104 bytes on the wire), cheaper than any
//     message a muxer or protocol could send.
//   - The yamux muxer runs without its own keep-alive and measures the
//     round-trip time only when a session starts (Muxer; libp2p's pings
//     every 30 s for both), so nothing else wakes an idle TCP connection. A dead peer is noticed by the
//     kernel's probes, or when the next write fails.
//   - The kernel looks at an idle socket again only an interval after each
//     probe, so the interval between probes is kept within the idle time:
//     with a 5 s idle time and the usual 15 s interval, probes would come
//     every 15 s and outlast a 10 s mapping.
//   - Transport.KeepAlives counts the probes the kernel sent on a socket,
//     from its TCP state (Linux's TCP_INFO): the acknowledgements received
//     without data since the socket went idle, and the probes not yet
//     answered. The node exports the count.
//   - The idle time is a safe fraction of the router's TCP mapping
//     lifetime, proven by holding idle TCP connections to a public peer
//     (package nat/tcpprobe) and, before that proof, of the UDP lifetime
//     (UDP mappings never outlive TCP ones on the routers we know).
//
// QUIC connections still keep themselves alive every 15 s; a NATed peer
// therefore closes idle QUIC connections (see the root package) and keeps
// only its standing TCP connections. A relay that offers no TCP address is
// kept over QUIC at libp2p's fixed rate.
package keepalive
