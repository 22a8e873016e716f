// Package tcpprobe measures how long a NAT keeps an idle established TCP
// mapping, so that a peer behind it can keep its few standing TCP
// connections (to its relays) alive with kernel keep-alive probes sent no
// more often than needed: a Server that publicly reachable peers run, and
// Prove, which proves idle durations by holding dedicated, otherwise idle
// connections to it.
//
// The package does not discover servers, keep connections alive or set
// keep-alive timers: it only measures. Lifetime.KeepAliveIdle turns a
// measurement into a keep-alive idle time.
//
// # Wire format
//
// A client opens a TCP connection to the server's hold port and sends one
// HOLD request. The server answers at once with an ACK, then stays silent
// for the hold, then sends a RESPONSE and closes the connection. Every
// message starts with an 18-byte header; integers are big-endian:
//
//	offset size field
//	0      4    magic "rdvh" (0x72 0x64 0x76 0x68)
//	4      1    version, 1
//	5      1    type (below)
//	6      12   nonce: random, chosen by the client, copied into both
//	            answers
//	18     ...  body, by type
//
// Messages:
//
//	0x01 HOLD      client to server, always RequestSize (32) bytes:
//	               18  4   hold in seconds, 1 .. Limits.MaxHold
//	               22  10  zero padding, ignored
//	0x02 ACK       server to client, AckSize (23) bytes:
//	               18  1   status (below)
//	               19  4   the hold granted in seconds: the one asked
//	                       for, or 0 when refused
//	0x03 RESPONSE  server to client, ResponseSize (18) bytes: the header
//	               alone, sent once the hold is over.
//
// Status bytes: 0 granted; 1 malformed (a request of the wrong size, magic
// or type, or not complete within Limits.RequestTimeout); 2 unsupported
// version; 3 hold out of range. A refusal, like the RESPONSE, is followed
// by the server closing the connection. A refusal carries as much of the
// request's nonce as arrived (zeros for the rest).
//
// After its request the client sends nothing, and both ends turn kernel
// TCP keep-alive off, so that nothing crosses the NAT between the ACK (and
// the client's TCP acknowledgement of it) and the RESPONSE: a RESPONSE that
// arrives proves the mapping survived the hold idle. One that does not
// arrive within the hold and a grace, or a connection that ends without
// one, means the mapping expired. Request bytes beyond RequestSize that
// arrive with the request make it malformed; bytes that arrive during the
// hold make the server close the connection without a RESPONSE, as does
// the client closing it.
//
// # Anti-abuse
//
// Every answer goes on the connection that asked for it, so a server can
// neither reflect traffic to third parties nor be used with spoofed
// addresses, and it sends 41 bytes per hold. A server bounds what holds
// cost it:
//
//   - the request has a fixed, small size and must arrive within
//     Limits.RequestTimeout (5 s by default);
//   - holds last at most Limits.MaxHold (DefaultMaxHold, 2 h 10 min, by
//     default);
//   - at most Limits.MaxHoldsPerSource connections (16 by default) from
//     one source IP address, and Limits.MaxHolds (4096) in all, are open at
//     once, counted from accept; connections over either limit are closed
//     at once, unread and unanswered;
//   - a hold ends early, freeing its slot, when its client closes.
//
// # Measuring
//
// Prove opens one connection per hold, all at once, so a measurement takes
// about its longest hold: about two hours for DefaultHolds, which span the
// idle lifetimes seen in practice, from a few minutes on small routers to
// the two hours RFC 5382 REQ-5 asks for. The longest hold that survived is
// the lower bound of the lifetime (Lifetime.Lower), the shortest that
// expired its upper bound (Lifetime.Upper).
package tcpprobe
