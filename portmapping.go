package rendezvous

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2pos/rendezvous/nat/portmap"
)

// startPortMapping asks the gateway (UPnP IGD, NAT-PMP or PCP) to map the
// node's IPv4 QUIC and TCP ports, and keeps the mappings alive. A mapped
// address becomes one of the node's addresses, to be confirmed by dial-back
// like any other.
func (n *Node) startPortMapping() error {
	var popts []portmap.Option
	if n.s.log != nil {
		popts = append(popts, portmap.WithLogger(n.s.log))
	}
	client, err := portmap.NewClient(popts...)
	if err != nil {
		return err
	}
	done := map[string]bool{}
	for _, a := range n.h.Network().ListenAddresses() {
		if len(a) < 2 || a[0].Code() != ma.P_IP4 {
			continue
		}
		var transport, suffix string
		var port int
		switch {
		case len(a) >= 3 && a[1].Code() == ma.P_UDP && a[2].Code() == ma.P_QUIC_V1:
			transport, suffix = "udp", "/quic-v1"
			port, _ = strconv.Atoi(a[1].Value())
		case a[1].Code() == ma.P_TCP && len(a) == 2:
			transport = "tcp"
			port, _ = strconv.Atoi(a[1].Value())
		default:
			continue
		}
		if done[transport] || port <= 0 || port > 65535 {
			continue
		}
		done[transport] = true
		k, err := client.Keep(transport, uint16(port), func(m portmap.Mapping, err error) {
			n.mappingChanged(transport, suffix, m, err)
		})
		if err != nil {
			return err
		}
		n.keepers = append(n.keepers, k)
	}
	return nil
}

func (n *Node) mappingChanged(transport, suffix string, m portmap.Mapping, err error) {
	var addr ma.Multiaddr
	if err == nil && m.External.IsValid() {
		addr, err = ma.NewMultiaddr(fmt.Sprintf("/ip4/%s/%s/%d%s", m.External.Addr(), transport, m.External.Port(), suffix))
	}
	if err != nil {
		n.log.Debugw("port mapping", "transport", transport, "error", err)
	}
	pm := PortMappingStatus{Transport: transport}
	if err == nil && m.External.IsValid() {
		pm.Protocol, pm.External, pm.Lifetime = string(m.Protocol), m.External.String(), m.Lifetime
	} else if err != nil {
		pm.Error = err.Error()
	}
	n.mu.Lock()
	if n.portMaps == nil {
		n.portMaps = map[string]PortMappingStatus{}
	}
	n.portMaps[transport] = pm
	old := n.mapped[transport]
	if addr == nil {
		delete(n.mapped, transport)
	} else {
		if n.mapped == nil {
			n.mapped = map[string]ma.Multiaddr{}
		}
		n.mapped[transport] = addr
	}
	n.mu.Unlock()
	if (old == nil) != (addr == nil) || (old != nil && !old.Equal(addr)) {
		n.log.Infow("port mapping", "transport", transport, "addr", addr, "protocol", m.Protocol)
		n.checker.Recheck()
		n.triggerPublish()
	}
}

// PortMappingStatus is a port mapping the node asked its gateway for.
type PortMappingStatus struct {
	Transport string        `json:"transport"`          // "udp" or "tcp"
	Protocol  string        `json:"protocol,omitempty"` // UPnP, NAT-PMP or PCP
	External  string        `json:"external,omitempty"` // the mapped address
	Lifetime  time.Duration `json:"lifetime_ns,omitempty"`
	Error     string        `json:"error,omitempty"`
}

// portMappingStatus returns the port mappings, by transport.
func (n *Node) portMappingStatus() []PortMappingStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]PortMappingStatus, 0, len(n.portMaps))
	for _, pm := range n.portMaps {
		out = append(out, pm)
	}
	slices.SortFunc(out, func(a, b PortMappingStatus) int { return strings.Compare(a.Transport, b.Transport) })
	return out
}

func (n *Node) mappedAddrs() []ma.Multiaddr {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]ma.Multiaddr, 0, len(n.mapped))
	for _, a := range n.mapped {
		out = append(out, a)
	}
	return out
}
