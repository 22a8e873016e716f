// Package nat tells a node about its network: whether it is publicly
// reachable, what kind of NAT it sits behind, and how to keep its port
// mappings alive.
//
// Reachability (this package) is decided by dial-back: a node is public when
// another peer, asked with libp2p's AutoNAT v2 protocol, managed to dial one
// of its in-scope addresses (an interface address or a port mapping) and
// private when every such attempt failed or the node has no such address.
// Addresses peers merely observed through a NAT are not candidates: a NAT
// that filters by address alone would let the dial-back in from the server
// the node just talked to. One confirming peer is enough, so it
// works in networks with a single public peer. The verdict is rechecked when
// the node's addresses change and periodically.
//
// Subpackages: portmap obtains port mappings from the gateway (UPnP IGD,
// NAT-PMP, PCP); probe classifies the NAT after RFC 4787 / RFC 5780 and
// measures how long it keeps an idle UDP mapping.
//
// This package decides and reports; it does not switch DHT modes or relays
// itself: the caller does, from the reported changes.
package nat
