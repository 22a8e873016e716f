package natlab

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// nftTable is the name of the table that holds a router's whole firewall,
// NAT and accounting, and miniupnpd's chains on UPnP routers.
const nftTable = "natlab"

// Chain names miniupnpd fills (its defaults, named in its configuration too).
const (
	upnpForwardChain = "miniupnpd"
	upnpPreChain     = "prerouting_miniupnpd"
	upnpPostChain    = "postrouting_miniupnpd"
)

// stunPorts are the two ports of the lab's STUN server, on both its
// addresses.
var stunPorts = [2]uint16{3478, 3479}

// ruleParams is what a router's ruleset depends on.
type ruleParams struct {
	wan, lan    string // interface names
	lanPrefix   netip.Prefix
	mapping     mapping
	filter      filter
	blockUDP    bool
	upnp        bool
	udpTimeout  time.Duration // lifetime of FullCone and Restricted filter entries
	tcpTimeout  time.Duration
	stunServers []netip.Addr // accepted as sources of STUN answers (UPnP only)
}

type mapping int

const (
	mapPreserve mapping = iota // masquerade: keep the source port when free
	mapRandom                  // masquerade fully-random: new random port per flow
)

type filter int

const (
	filterAddrPort filter = iota // conntrack only: address and port dependent
	filterAddr                   // address dependent (Restricted)
	filterNone                   // endpoint independent (FullCone)
)

func nftSeconds(d time.Duration) string {
	s := int64(d / time.Second)
	if s < 1 {
		s = 1
	}
	return fmt.Sprintf("%ds", s)
}

// ruleset renders the nftables ruleset of a router.
//
// Packets from the WAN that belong to no flow the LAN started are dropped
// silently, in input as in forward: an unsolicited packet the router itself
// accepted would leave a conntrack entry that can push a later outbound flow
// onto another port. The only exceptions are what the kind allows: entries of
// the FullCone and Restricted maps, miniupnpd's port mappings, and (UPnP) the
// answers of the lab's STUN server that miniupnpd asks at start.
func ruleset(p ruleParams) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	wan, lan := fmt.Sprintf("%q", p.wan), fmt.Sprintf("%q", p.lan)

	w("table inet %s {", nftTable)
	w("\tcounter wan_in {\n\t}")
	w("\tcounter wan_out {\n\t}")
	w("\tcounter dropped {\n\t}")
	switch p.filter {
	case filterNone:
		// external proto . port -> internal address . port
		w("\tmap cone {\n\t\ttype inet_proto . inet_service : ipv4_addr . inet_service\n\t\tflags dynamic,timeout\n\t\ttimeout %s\n\t}", nftSeconds(p.udpTimeout))
	case filterAddr:
		// external proto . port . remote address -> internal address . port
		w("\tmap cone {\n\t\ttype inet_proto . inet_service . ipv4_addr : ipv4_addr . inet_service\n\t\tflags dynamic,timeout\n\t\ttimeout %s\n\t}", nftSeconds(p.udpTimeout))
	}
	if p.upnp {
		w("\tchain %s {\n\t}", upnpForwardChain)
		w("\tchain %s {\n\t}", upnpPreChain)
		w("\tchain %s {\n\t}", upnpPostChain)
	}
	// Filled by Router.SetBlackhole.
	w("\tchain blackhole {\n\t}")

	// Accounting sees every packet on the WAN, before and after all else.
	w("\tchain count_in {\n\t\ttype filter hook prerouting priority -400; policy accept;\n\t\tiifname %s counter name wan_in\n\t}", wan)
	w("\tchain count_out {\n\t\ttype filter hook postrouting priority 400; policy accept;\n\t\toifname %s counter name wan_out\n\t}", wan)

	w("\tchain input {\n\t\ttype filter hook input priority 0; policy drop;")
	w("\t\tjump blackhole")
	w("\t\tiif lo accept")
	w("\t\tct state established,related accept")
	w("\t\tiifname %s accept", lan)
	if len(p.stunServers) > 0 {
		w("\t\tiifname %s ip saddr { %s } udp sport { %d, %d } accept", wan, joinAddrs(p.stunServers), stunPorts[0], stunPorts[1])
	}
	w("\t\tcounter name dropped drop\n\t}")

	w("\tchain forward {\n\t\ttype filter hook forward priority 0; policy drop;")
	w("\t\tjump blackhole")
	if p.blockUDP {
		w("\t\tiifname %s meta l4proto udp counter name dropped drop", lan)
	}
	w("\t\tiifname %s oifname %s accept", lan, wan)
	w("\t\tct state established,related accept")
	if p.filter != filterAddrPort {
		// Only the cone map DNATs new flows from the WAN.
		w("\t\tiifname %s ct status dnat accept", wan)
	}
	if p.upnp {
		w("\t\tiifname %s jump %s", wan, upnpForwardChain)
	}
	w("\t\tcounter name dropped drop\n\t}")

	w("\tchain output {\n\t\ttype filter hook output priority 0; policy accept;\n\t\tjump blackhole\n\t}")

	w("\tchain prerouting {\n\t\ttype nat hook prerouting priority -100; policy accept;")
	switch p.filter {
	case filterNone:
		w("\t\tiifname %s meta l4proto { tcp, udp } dnat ip to meta l4proto . th dport map @cone", wan)
	case filterAddr:
		w("\t\tiifname %s meta l4proto { tcp, udp } dnat ip to meta l4proto . th dport . ip saddr map @cone", wan)
	}
	if p.upnp {
		w("\t\tiifname %s jump %s", wan, upnpPreChain)
	}
	w("\t}")

	w("\tchain postrouting {\n\t\ttype nat hook postrouting priority 100; policy accept;")
	if p.upnp {
		w("\t\tjump %s", upnpPostChain)
	}
	masq := "masquerade"
	if p.mapping == mapRandom {
		masq = "masquerade fully-random"
	}
	w("\t\toifname %s ip saddr %s %s", wan, p.lanPrefix.Masked(), masq)
	w("\t}")

	if p.filter != filterAddrPort {
		// After source NAT (priority 300 > srcnat), every packet leaving on
		// the WAN records or refreshes the cone entry of its mapping: the
		// packet's source is the external endpoint, and the internal one is
		// the original source of a LAN-started flow, or the reply source of
		// a flow the cone let in.
		key := "meta l4proto . th sport"
		if p.filter == filterAddr {
			key += " . ip daddr"
		}
		w("\tchain cone_refresh {\n\t\ttype filter hook postrouting priority 300; policy accept;")
		for _, pr := range []struct {
			proto string
			t     time.Duration
		}{{"udp", p.udpTimeout}, {"tcp", p.tcpTimeout}} {
			w("\t\toifname %s meta l4proto %s ct direction original ct original ip saddr %s update @cone { %s timeout %s : ct original ip saddr . ct original proto-src }",
				wan, pr.proto, p.lanPrefix.Masked(), key, nftSeconds(pr.t))
			w("\t\toifname %s meta l4proto %s ct direction reply ct reply ip saddr %s update @cone { %s timeout %s : ct reply ip saddr . ct reply proto-src }",
				wan, pr.proto, p.lanPrefix.Masked(), key, nftSeconds(pr.t))
		}
		w("\t}")
	}
	w("}")
	return b.String()
}

// blackholeRules renders the content of the blackhole chain.
func blackholeRules(on bool) string {
	s := fmt.Sprintf("flush chain inet %s blackhole\n", nftTable)
	if on {
		s += fmt.Sprintf("add rule inet %s blackhole counter name dropped drop\n", nftTable)
	}
	return s
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}
