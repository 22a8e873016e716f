// Package natlab builds NAT topologies out of Linux network namespaces, for
// tests that must meet real NAT behaviour: the NAT and firewall of every
// router are the kernel's own (nftables and conntrack), and UPnP routers run
// the real miniupnpd. It needs root; Check says what a machine lacks.
//
// A lab is declared by a Spec and built by New:
//
//	l, err := natlab.New(ctx, natlab.Spec{
//		Routers: []natlab.RouterSpec{{Name: "home", Kind: natlab.PortRestricted}},
//		Hosts:   []natlab.HostSpec{{Name: "alice", Router: "home"}, {Name: "server"}},
//	})
//	defer l.Close()
//	conn, err := l.Host("alice").ListenUDP(netip.AddrPort{}) // a socket inside alice's namespace
//
// # Topology and addressing
//
// Every node is a network namespace. The internet is a bridge in a
// namespace of its own; public hosts and the WAN links of routers hang on
// it. Each router's LAN is a bridge inside the router's namespace; its
// hosts (and routers declared Behind it) hang on that. Links are veth pairs
// created directly between two lab namespaces.
//
//	internet 10.77.0.0/16 (bridge, gateway 10.77.0.1, no forwarding)
//	├── public host        10.77.0.10, .11, ...
//	├── router WAN         10.77.1.1, .2, ...
//	│   └── LAN 192.168.N.0/24: router .1, hosts and routers Behind it .2, .3, ...
//	└── CGNAT carrier WAN  10.77.1.x
//	    └── carrier LAN 100.64.N.0/24: carrier .1, its home router .2, routers Behind it .3, ...
//	        └── home router LAN 192.168.M.0/24: the CGNAT's hosts
//
// N is the router's number in build order (routers are built after the
// router they sit Behind). 10.77.0.0/16 is a private range standing in for
// the public internet: the library under test must be told to treat it as
// public (InternetPrefix). Default routes point at the router above, or at
// 10.77.0.1 on the internet; the internet namespace does not forward, so
// packets for any address outside the lab end there. IPv6 is off
// everywhere: the lab is IPv4 only.
//
// # Names
//
// Every run picks a prefix, "rdvl" and five random base32 characters
// (Lab.Prefix). Namespaces are named prefix-internet, prefix-stun,
// prefix-rN-NAME and prefix-hN-NAME; links are the prefix plus a role
// letter and a number (w: router WAN, u: its other end, l: router LAN
// bridge, h: host link, p: its other end, br: internet bridge), 15
// characters at most.
//
// # Router kinds
//
// Behaviour is named as in RFC 4787 (mapping and filtering) and checked as
// RFC 5780 §4.3/§4.4 describe. Every router drops silently (no ICMP, no
// RST) everything from its WAN that belongs to no flow its LAN started,
// in the input chain as in the forward chain, except what its kind lets in:
// a packet the router itself accepted would leave a conntrack entry that
// can push a later outbound flow onto another port. Each router has one
// nftables table, "natlab", holding all of its rules.
//
//   - PortRestricted: endpoint-independent mapping, address-and-port
//     dependent filtering. Built as masquerade (which keeps the LAN
//     socket's port when it is free) plus conntrack filtering. Most home
//     routers behave so.
//   - Restricted: endpoint-independent mapping, address-dependent
//     filtering. Masquerade, and every packet leaving on the WAN records
//     (external port, remote address) -> internal endpoint in a dynamic
//     nftables map (timeout = the UDP/TCP timeout, refreshed by each
//     outbound packet, from a filter chain after source NAT because NAT
//     chains see only a flow's first packet); a new flow from the WAN that
//     hits the map is DNATed to the internal endpoint and accepted.
//   - FullCone: endpoint-independent mapping and filtering. As Restricted
//     with the map keyed by external port alone: once a socket has sent
//     out, anyone may reach it through its mapping.
//   - Symmetric: address-and-port dependent mapping and filtering.
//     masquerade fully-random: every new flow (new destination address or
//     port) gets a new random external port.
//   - CGNAT: two NAT layers. The carrier router maps endpoint-independently
//     (as RFC 6888 requires, through RFC 4787 REQ-1) and filters by address
//     and port (as most carrier NATs do, though RFC 4787 recommends
//     endpoint-independent filtering), with its LAN in the shared range
//     100.64.0.0/10; behind it sits a PortRestricted home router
//     (Router.Inner), and the CGNAT's hosts sit behind that. More home
//     routers can share the carrier: declare them Behind the CGNAT router.
//     Layers can also be composed freely with Behind.
//   - UDPBlocked: PortRestricted for TCP; every UDP packet from the LAN to
//     the WAN is dropped.
//   - UPnP: PortRestricted plus miniupnpd listening on the LAN bridge with
//     UPnP IGD, NAT-PMP and PCP on (NAT-PMP/PCP on LANAddr():5351), in
//     secure mode (a LAN host can map only its own address), with its
//     configuration, lease, pid and log files in the run's state directory.
//     Its rules go into chains of the router's table that the forward,
//     prerouting and postrouting chains jump to, so a mapping lets packets
//     through the drop-unsolicited rule. miniupnpd refuses to map ports
//     when its WAN address is private, as every lab address is, unless a
//     STUN test shows nothing filters in front of it: the lab runs a STUN
//     server (RFC 5780 CHANGE-REQUEST, two addresses by two ports, in
//     prefix-stun on 10.77.255.1-2) which miniupnpd asks at start, and the
//     UPnP router's input chain accepts that server's answers. Behind
//     another router the test sees the upstream NAT's filtering (unless it
//     is FullCone) and miniupnpd turns port forwarding off, as on a real
//     double NAT: NAT-PMP then answers result 3, and its start takes about
//     9 s of STUN retries. miniupnpd is stopped by Close.
//   - Blackhole: a deliberately broken router (PortRestricted rules behind
//     a chain that drops everything it routes, receives or sends), so that
//     tests can prove they notice a network that does not work. Any router
//     can be blackholed and restored at run time with Router.SetBlackhole.
//
// Timeouts: RouterSpec.UDPTimeout sets the namespace's conntrack UDP
// timeouts (unreplied and stream) and TCPTimeout its established TCP
// timeout; the cone maps of FullCone and Restricted use the same values.
// For a CGNAT both layers get them. Conntrack timeouts are per namespace, so
// routers do not share them.
//
// Counters reads nftables counters: bytes and packets in and out on the WAN
// link, and what the firewall dropped.
//
// # What is not built faithfully
//
//   - Linux NAT keeps a mapping per flow, reusing the LAN port when it is
//     free. Mapping is therefore endpoint-independent only while flows do
//     not collide: two LAN sockets with the same port talking to the same
//     remote endpoint get different external ports, and two LAN hosts may
//     share one external port towards different remotes (the cone maps then
//     follow the latest sender). Real EIM NATs hold one mapping per
//     internal endpoint.
//   - Port preservation is the rule here; many real NATs allocate ports
//     sequentially or at random even when mapping endpoint-independently.
//     Symmetric NATs with predictable (sequential) ports are not built.
//   - No hairpinning (RFC 4787 REQ-9): hosts behind one router, or one
//     carrier, cannot reach each other through their public mappings.
//   - Cone map entries are refreshed by outbound packets only (RFC 4787
//     REQ-6 outbound refresh); conntrack refreshes on both directions.
//   - A CGNAT has one public address, no port-block allocation and no
//     per-subscriber port limits (RFC 6888 REQ-4).
//   - TCPTimeout covers the established state only; other TCP states keep
//     the kernel's timeouts. Conntrack picks up mid-stream TCP packets
//     (nf_conntrack_tcp_loose), but such a packet from the WAN is still
//     unsolicited and dropped.
//   - No application-level gateways, one MTU (1500), no IPv6.
//   - Internet shaping is a constant one-way delay and independent random
//     loss per packet: no jitter, no reordering, no bandwidth limit, no
//     loss bursts, and at most 16384 packets in flight (see below).
//
// # Internet delay and loss
//
// This kernel has no sch_netem (and nftables' queue expression is
// missing), so Spec.Internet is built in userspace: the internet namespace
// turns br_netfilter on, so that bridged IPv4 packets pass its forward
// hook, where an iptables-legacy NFQUEUE rule (in that namespace's own
// legacy table) queues them to a netlink socket the lab owns. The lab
// drops a packet with probability Loss, or accepts it Delay after it was
// queued. Every packet between two internet nodes is queued once, so a
// round trip takes 2*Delay more. Without br_netfilter or iptables-legacy,
// New fails with ErrUnsupported.
//
// # Safety
//
//   - Traffic stays inside namespaces the lab created. Nothing is added to
//     the root namespace: no link, address, route or rule; veth pairs are
//     created with both ends already in lab namespaces, and the internet
//     bridge has a namespace of its own. Nothing links the lab to the
//     root namespace, so no packet can leave the machine.
//   - Sockets for lab traffic must be made inside a lab namespace (Host
//     helpers, Host.Do, Host.Command): a socket made in the root namespace
//     would send 10.77.0.0/16 traffic to the machine's real network.
//   - Every helper command the lab runs is bounded (20 s), Close is bounded
//     (30 s), miniupnpd's start and stop are bounded, and process kills
//     wait on pidfds with deadlines. The lab's own goroutines (STUN server,
//     shaper) are owned by the Lab and stopped and waited for by Close.
//   - Close kills every process left in the lab's namespaces, deletes the
//     namespaces and the state directory; it is idempotent. Use t.Cleanup.
//   - Each run records its owner in /run/rendezvous-natlab/PREFIX/owner
//     ("pid P start S", S being the process start time from /proc, so a
//     reused pid is not mistaken for the owner), written before any
//     namespace exists. CleanStale, which New calls first, removes the
//     runs whose owner is gone or whose record is missing: it kills the
//     processes in their namespaces (checked through a pidfd, so a reused
//     pid is never signalled), deletes the namespaces and the directory.
//
// # Requirements
//
// Root, ip (iproute2), nft (nftables), conntrack, sysctl (procps),
// miniupnpd (the nftables build), and a kernel with network namespaces,
// veth, bridges, nftables NAT and dynamic maps, and per-namespace conntrack
// timeouts; for internet delay and loss also iptables-legacy (package
// iptables), br_netfilter and xtables NFQUEUE. Check verifies all of it once per process by building a
// throwaway namespace. Tests call it through a helper that skips when
// something is missing, or fails when RENDEZVOUS_NATLAB=required.
package natlab
