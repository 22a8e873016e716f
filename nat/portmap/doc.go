// Package portmap obtains and keeps external port mappings from the local
// gateway, so that a peer behind a home router can become publicly
// reachable. It speaks the three protocols home routers offer:
//
//   - PCP, the Port Control Protocol (RFC 6887), MAP and ANNOUNCE opcodes,
//     IPv4 only;
//   - NAT-PMP (RFC 6886), its predecessor, on the same gateway port 5351;
//   - UPnP IGD, versions 1 and 2: SSDP discovery (an M-SEARCH sent to
//     239.255.255.250:1900 and to the gateway), the gateway's device
//     description, then the WANIPConnection (or WANPPPConnection) SOAP
//     actions GetExternalIPAddress, AddPortMapping and DeletePortMapping.
//
// A Client talks to one gateway: Probe says which protocols answer, Map
// obtains a mapping (trying PCP, then NAT-PMP, then UPnP), Delete removes
// one. A Keeper keeps a mapping alive: it renews at half the lifetime,
// retries with backoff, reports each outcome and deletes the mapping when
// closed.
//
// The package does not decide whether a mapping makes the peer reachable
// (the gateway may itself sit behind another NAT), does not publish
// addresses, and does not speak IPv6 or PCP's PEER opcode.
//
// Sockets and time are dependencies: WithDialer and WithListenPacket
// supply every socket the Client opens (connected UDP sockets for PCP and
// NAT-PMP, which also tell the Client its own address; an unconnected UDP
// socket for SSDP; TCP connections for UPnP's HTTP), WithClock the clock
// that stamps mappings.
//
// Every answer read is bounded: gateway datagrams by PCP's maximum message
// size (1100 bytes), SSDP datagrams by 2048 bytes, HTTP headers by 16 KiB,
// device descriptions and SOAP bodies by 64 KiB, and every exchange by the
// Client's timeout. A decoder given bad bytes returns an error wrapping
// ErrMalformed; a gateway that refuses returns a *ResultError.
//
// # NAT-PMP wire format
//
// All integers are big endian. The Client uses opcode 0 (external address)
// and opcodes 1 and 2 (map UDP, map TCP).
//
//	external address request (2 bytes)
//	  0  version = 0
//	  1  opcode  = 0
//
//	external address response (12 bytes)
//	  0  version = 0
//	  1  opcode  = 128
//	  2  result code (2)
//	  4  seconds since start of epoch (4)
//	  8  external IPv4 address (4)
//
//	map request (12 bytes)
//	  0  version = 0
//	  1  opcode  = 1 (UDP) or 2 (TCP)
//	  2  reserved = 0 (2)
//	  4  internal port (2)
//	  6  suggested external port (2)
//	  8  requested lifetime in seconds (4); 0 with external port 0 deletes
//
//	map response (16 bytes)
//	  0  version = 0
//	  1  opcode  = 128 + request opcode
//	  2  result code (2)
//	  4  seconds since start of epoch (4)
//	  8  internal port (2)
//	 10  mapped external port (2)
//	 12  granted lifetime in seconds (4)
//
// Result codes: 0 success, 1 unsupported version, 2 not authorized, 3
// network failure, 4 out of resources, 5 unsupported opcode. Shorter
// responses are malformed; bytes past the expected length are ignored.
//
// # PCP wire format
//
// All integers are big endian; addresses are 16 bytes, IPv4 addresses in
// their IPv4-mapped IPv6 form (::ffff:a.b.c.d). The Client uses opcode 0
// (ANNOUNCE, a bare header, to probe) and opcode 1 (MAP).
//
//	request header (24 bytes)
//	  0  version = 2
//	  1  R = 0 (top bit) | opcode (7 bits)
//	  2  reserved = 0 (2)
//	  4  requested lifetime in seconds (4); 0 deletes
//	  8  client's own IP address (16)
//
//	MAP request body (36 bytes, after the header)
//	 24  mapping nonce (12), random, repeated to renew or delete
//	 36  protocol: 17 UDP, 6 TCP
//	 37  reserved = 0 (3)
//	 40  internal port (2)
//	 42  suggested external port (2)
//	 44  suggested external IP address (16), ::ffff:0.0.0.0 for any
//
//	response header (24 bytes)
//	  0  version = 2
//	  1  R = 1 (top bit) | opcode (7 bits)
//	  2  reserved (1)
//	  3  result code (1)
//	  4  granted lifetime in seconds (4)
//	  8  epoch time (4)
//	 12  reserved (12)
//
//	MAP response body (36 bytes, after the header)
//	 24  mapping nonce (12), as in the request
//	 36  protocol
//	 37  reserved (3)
//	 40  internal port (2)
//	 42  assigned external port (2)
//	 44  assigned external IP address (16)
//
// Options may follow a body; the Client sends none and skips those it
// receives. A message is a multiple of 4 bytes, at most 1100. Result codes:
// 0 success, 1 unsupported version, 2 not authorized, 3 malformed request,
// 4 unsupported opcode, 5 unsupported option, 6 malformed option, 7
// network failure, 8 no resources, 9 unsupported protocol, 10 user
// exceeded quota, 11 cannot provide external, 12 address mismatch, 13
// excessive remote peers. A NAT-PMP-only gateway answers a PCP request
// with a NAT-PMP header (version 0) and result 1; the Client then falls
// back to NAT-PMP.
//
// # UPnP IGD
//
// SSDP search (UDP, to 239.255.255.250:1900 and to the gateway's port
// 1900), one per device type (InternetGatewayDevice:1 and :2):
//
//	M-SEARCH * HTTP/1.1
//	HOST: 239.255.255.250:1900
//	MAN: "ssdp:discover"
//	MX: 1
//	ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1
//
// Only answers from the gateway's address whose status is 200 and whose
// LOCATION is an http URL on the gateway's address are used. The device
// description found there names the WANIPConnection:2, WANIPConnection:1
// or WANPPPConnection:1 service (preferred in that order) and its control
// URL, which must be on the gateway's address too. Actions are SOAP 1.1
// POSTs; a failing action answers HTTP 500 with a SOAP fault whose
// UPnPError carries an errorCode, returned as a *ResultError.
package portmap
