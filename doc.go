// Package rendezvous lets any peer on the internet find and connect to any
// other peer, through any NAT, with no central server.
//
// A Node is a libp2p host (QUIC and TCP, Noise or TLS, yamux) that joins a
// Kademlia DHT of its own (protocol prefix /p2pos). Publicly reachable nodes
// serve the DHT and relay connection setup for NATed ones; NATed nodes reserve
// relay slots on public nodes they find in the DHT. Every node publishes a
// signed address record under its peer ID, so any other node can find it by ID
// and connect, directly or through one of its relays:
//
//	n, err := rendezvous.New(ctx,
//		rendezvous.WithKeyFile("node.key"),
//		rendezvous.WithBootstrap(boot...),
//	)
//	if err != nil { ... }
//	defer n.Close()
//	conn, err := n.Connect(ctx, otherID)
//	fmt.Println(conn.Path.Kind, conn.Path.RTT)
//
// Topic rendezvous (Advertise, FindPeers) finds peers by a shared name, each
// returned with its verified record.
//
// The packages below do the work: dht (records, lookups, topics), relay
// (relay service, reservations, dialing) and scope (which addresses count as
// public). This package wires them together.
package rendezvous
