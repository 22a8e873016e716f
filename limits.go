package rendezvous

import (
	"net/netip"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	"github.com/libp2p/go-libp2p/x/rate"
)

// Per-address connection limits. libp2p's defaults let one IPv4 address
// hold 8 connections to a node and open one every 5 s after a burst of 16.
// Public nodes here are the handshake servers of everyone behind a NAT,
// and a carrier-grade NAT puts many peers behind one address: a second
// peer of a CGNAT customer would be refused by the relays the first one
// uses. The limits below still bound one address, at a scale that fits a
// carrier's subscribers.
const (
	connsPerIPv4  = 256 // concurrent, per /32
	connsPerIPv6  = 256 // concurrent, per /56
	connRatePerIP = 4   // new connections per second, per /32 or /56, after the burst
	connBurst     = 256
)

// pingStreamsPerPeer is how many ping streams one peer may hold open at
// once. libp2p's default is 2 inbound, and a ping stream is released only
// when its handler sees the reset the other side sent: a peer that pings
// once to measure a new path and again right after (a punched connection
// measured, then the application's first ping) can find both earlier
// streams still counted and its new one reset with
// StreamResourceLimitExceeded. A ping answers 32 bytes with 32; a few
// more streams per peer cost nothing worth bounding tighter.
const pingStreamsPerPeer = 8

// newResourceManager returns libp2p's default resource manager with the
// per-address limits above.
func newResourceManager() (network.ResourceManager, error) {
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	pingPeer := rcmgr.BaseLimit{
		StreamsInbound:  pingStreamsPerPeer,
		StreamsOutbound: pingStreamsPerPeer,
		Streams:         2 * pingStreamsPerPeer,
		Memory:          32 * (256<<20 + 16<<10), // as libp2p sets it
	}
	limits.AddServicePeerLimit(ping.ServiceName, pingPeer, rcmgr.BaseLimitIncrease{})
	limits.AddProtocolPeerLimit(ping.ID, pingPeer, rcmgr.BaseLimitIncrease{})
	perIP := rate.Limit{RPS: connRatePerIP, Burst: connBurst}
	limiter := &rate.Limiter{
		NetworkPrefixLimits: []rate.PrefixLimit{
			{Prefix: netip.MustParsePrefix("127.0.0.0/8"), Limit: rate.Limit{}},
			{Prefix: netip.MustParsePrefix("::1/128"), Limit: rate.Limit{}},
		},
		SubnetRateLimiter: rate.SubnetLimiter{
			IPv4SubnetLimits: []rate.SubnetLimit{{PrefixLength: 32, Limit: perIP}},
			IPv6SubnetLimits: []rate.SubnetLimit{{PrefixLength: 56, Limit: perIP}},
			GracePeriod:      time.Minute,
		},
	}
	return rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.AutoScale()),
		rcmgr.WithConnRateLimiters(limiter),
		rcmgr.WithLimitPerSubnet(
			[]rcmgr.ConnLimitPerSubnet{{PrefixLength: 32, ConnCount: connsPerIPv4}},
			[]rcmgr.ConnLimitPerSubnet{{PrefixLength: 56, ConnCount: connsPerIPv6}}),
	)
}
