// Package probe is a small UDP protocol for learning what a NAT does: a
// Server that publicly reachable peers run, Classify, which names a NAT's
// mapping and filtering behaviour as RFC 4787 does and measures them as
// RFC 5780 §4.3 and §4.4 describe, and MeasureTimeout, which finds how long
// the NAT keeps an idle UDP mapping, so that keep-alives are sent only as
// often as needed.
//
// The package does not discover probe servers, punch holes, map ports
// (UPnP, NAT-PMP, PCP) or keep mappings alive: it only measures. It speaks
// neither STUN nor anything else but its own protocol, below.
//
// # Wire format
//
// Every message is one UDP datagram, at most 128 bytes (MaxMessageSize),
// starting with an 18-byte header; integers are big-endian:
//
//	offset size field
//	0      4    magic "rdvp" (0x72 0x64 0x76 0x70)
//	4      1    version, 1
//	5      1    type (below)
//	6      12   transaction ID: random, chosen by the client, copied into
//	            every message the request causes
//	18     ...  body, by type
//
// Addresses in bodies are encoded as
//
//	0      1    family: 4 or 6
//	1      2    port
//	3      4|16 IP address (4 bytes for family 4, 16 for family 6)
//
// Requests (client to server):
//
//	0x01 BINDING      no body. Answered by BINDING-RESPONSE from the socket
//	                  the request arrived on.
//	0x03 ALT-PORT     no body. Answered by ALT-PORT-RESPONSE from the
//	                  server's other socket (primary <-> alternate), to the
//	                  request's source. Dropped when the server has one socket.
//	0x05 DELAYED      4 bytes: delay in milliseconds (1 ms .. Limits.MaxDelay).
//	                  Answered at once by DELAYED-ACK, and after the delay by
//	                  DELAYED-RESPONSE, both from the socket the request
//	                  arrived on, to the request's source. A repeated request
//	                  (same source and transaction ID) is acknowledged again
//	                  but scheduled once.
//	0x08 PEER-SEND    address: a sibling server (its primary socket). The
//	                  server answers PEER-SEND-ACK; when the address is one
//	                  of its configured siblings, it also sends PEER-FORWARD
//	                  to that sibling, which then sends PEER-SEND-RESPONSE to
//	                  the request's source.
//
// Every request is padded with zero bytes to RequestSize (80) bytes; a
// server drops shorter ones. The padding pays for the answers: the bytes a
// server (and its sibling) send towards a request's source are never more
// than the request's size.
//
// Answers (server to client):
//
//	0x02 BINDING-RESPONSE   2 bytes: the server's alternate port (0: none),
//	                        then the address the request came from.
//	0x04 ALT-PORT-RESPONSE  the address the request came from.
//	0x06 DELAYED-ACK        1 byte status, 4 bytes the delay in milliseconds.
//	0x07 DELAYED-RESPONSE   4 bytes the delay in milliseconds, then the
//	                        address the request came from.
//	0x09 PEER-SEND-ACK      1 byte status.
//	0x0b PEER-SEND-RESPONSE the address the first server saw the request
//	                        come from (which is where it is sent).
//
// Server to server:
//
//	0x0a PEER-FORWARD  2 bytes: byte budget (what the requester's request
//	                   still pays for), then the address to send
//	                   PEER-SEND-RESPONSE to.
//
// Status bytes: 0 accepted, 1 refused by a limit, 2 unknown sibling, 3 bad
// delay.
//
// # Anti-abuse
//
// A probe server must not be usable to flood third parties. It therefore
//
//   - answers only to the source address of the packet that asked, from
//     the socket it arrived on (ALT-PORT: from the other socket of the same
//     server). The one exception is PEER-FORWARD, which makes a sibling
//     send one packet to the address the first server saw; a server accepts
//     PEER-FORWARD only from the primary address of a configured sibling,
//     and sends PEER-FORWARD only to configured siblings. Siblings are
//     configured by whoever runs the server (WithSiblings, and AddSibling
//     and RemoveSibling at run time), never by a message on the wire;
//   - never sends towards a source more bytes than the request that caused
//     them: requests are padded (above), each answer is checked against the
//     remaining budget, and PEER-FORWARD carries that budget to the sibling;
//   - rate-limits requests per source IP address with a token bucket
//     (Limits.Rate, Limits.Burst), tracking a bounded number of sources;
//     PEER-FORWARD is limited per destination IP the same way, and per
//     sibling (Limits.ForwardRate, Limits.ForwardBurst), so that a sibling
//     that misbehaves cannot make a server send much;
//   - bounds DELAYED: the delay (Limits.MaxDelay, 600 s by default), the
//     pending answers per source IP (Limits.MaxDelayedPerSource) and in all
//     (Limits.MaxDelayed); beyond them requests are refused;
//   - drops packets that are too short or too long, of another magic or
//     version, of an unknown type, and every answer type (a server never
//     answers an answer, so two servers cannot loop).
//
// Like any UDP service, a server can be made to send its small answers to a
// spoofed source address, but never more bytes than the spoofer sent.
//
// # Classification
//
// Classify sends BINDING from one socket to the first server's primary and
// alternate ports and to a second server, and compares the addresses they
// saw (RFC 5780 §4.3): one address everywhere is endpoint-independent
// mapping, one address per server address-dependent, one per port
// address-and-port-dependent. The first server that answers is A; B is the
// first server at another IP address that answers.
//
// For filtering (RFC 5780 §4.4) a fresh socket sends ALT-PORT and PEER-SEND
// to A only: a PEER-SEND-RESPONSE (from an address the socket never sent
// to) means endpoint-independent filtering, an ALT-PORT-RESPONSE alone
// address-dependent, neither address-and-port-dependent. PEER-SEND names a
// sibling of A: the first of the other servers (B first) that A accepts.
// A silent sibling only means filtering once the path through it is known
// to work, so before the samples Classify checks it: a socket that sent
// BINDING to the sibling, and so lets it in whatever the filtering, sends
// PEER-SEND to A, and the sibling's packet must arrive (when the mapping is
// endpoint-independent, which is when the check matters).
//
// Where the servers available cannot tell two behaviours apart, Classify
// says so: Result.MappingAmbiguousWith and FilteringAmbiguousWith name the
// behaviour that could not be ruled out, the likelier one is reported, and
// its confidence is halved:
//
//   - mapping with one server address (two ports): one address for both
//     ports is endpoint-independent or address-dependent; reported as
//     endpoint-independent. Different addresses per port are
//     address-and-port-dependent for sure.
//   - filtering without a sibling whose path was checked: an
//     ALT-PORT-RESPONSE means endpoint-independent or address-dependent
//     filtering; reported as address-dependent. No answer is
//     address-and-port-dependent for sure.
//
// RFC 5780 needs a second IP address for both tests. A single public host
// has one when two of its interface addresses are public: it then runs a
// server on each, siblings of each other (see nat.ProbeService).
//
// # Binding timeouts
//
// MeasureTimeout opens one socket per candidate idle duration; each sends a
// DELAYED request for its duration and then stays silent. An answer that
// arrives proves the mapping survived that long idle; the shortest duration
// whose answer does not arrive bounds the timeout from above. The probes run
// in parallel, so a measurement takes about the longest candidate.
package probe
