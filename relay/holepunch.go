package relay

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2pos/rendezvous/scope"
)

// HolePunch runs DCUtR, libp2p's hole-punch protocol: when a peer reaches
// this host through a relay, the two exchange their addresses over the
// relayed connection and dial each other at once, which opens both NATs.
// It is libp2p's own service, given the addresses to announce instead of
// the ones libp2p would (libp2p announces only addresses it counts as
// public, which leaves out every in-scope range and the LAN).
type HolePunch struct {
	svc *holepunch.Service
}

// ErrNoIdentify is returned by NewHolePunch when the host has no identify
// service to share.
var ErrNoIdentify = errors.New("relay: host without an identify service")

// NewHolePunch starts DCUtR on h. addrs returns the addresses to announce
// to a peer: the host's external addresses (those its peers observe) and
// its LAN addresses, for a peer behind the same router. Addresses of the
// remote peer are kept when in sc or on a LAN.
//
// With reg, libp2p's DCUtR metrics are registered with it.
func NewHolePunch(h host.Host, sc scope.Scope, addrs func() []ma.Multiaddr, reg prometheus.Registerer) (*HolePunch, error) {
	idh, ok := h.(interface{ IDService() identify.IDService })
	if !ok || idh.IDService() == nil {
		return nil, ErrNoIdentify
	}
	opts := []holepunch.Option{holepunch.WithAddrFilter(punchFilter{sc})}
	if reg != nil {
		opts = append(opts, holepunch.WithMetricsTracer(holepunch.NewMetricsTracer(holepunch.WithRegisterer(reg))))
	}
	svc, err := holepunch.NewService(h, idh.IDService(), func() []ma.Multiaddr { return punchable(sc, addrs()) }, opts...)
	if err != nil {
		return nil, fmt.Errorf("relay: hole punching: %w", err)
	}
	return &HolePunch{svc: svc}, nil
}

// Close stops the service. It is idempotent.
func (hp *HolePunch) Close() error {
	if hp == nil || hp.svc == nil {
		return nil
	}
	return hp.svc.Close()
}

// punchable keeps the addresses worth dialing for a hole punch: direct
// ones, in scope or private (a LAN), never loopback unless in scope.
func punchable(sc scope.Scope, addrs []ma.Multiaddr) []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, a := range addrs {
		if IsRelayed(a) {
			continue
		}
		if sc.IsPublic(a) || (manet.IsPrivateAddr(a) && !manet.IsIPLoopback(a)) {
			out = append(out, a)
		}
	}
	return out
}

// punchFilter applies punchable to both sides' addresses.
type punchFilter struct{ sc scope.Scope }

func (f punchFilter) FilterLocal(_ peer.ID, addrs []ma.Multiaddr) []ma.Multiaddr {
	return punchable(f.sc, addrs)
}

func (f punchFilter) FilterRemote(_ peer.ID, addrs []ma.Multiaddr) []ma.Multiaddr {
	return punchable(f.sc, addrs)
}
