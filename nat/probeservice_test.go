package nat_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2pos/rendezvous/nat"
	"github.com/p2pos/rendezvous/nat/probe"
	"github.com/p2pos/rendezvous/scope"
)

func newHost(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/udp/0/quic-v1"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// TestProbeService finds a peer's probe server over libp2p and classifies
// the (absent) NAT of loopback with it.
func TestProbeService(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	server, client := newHost(t), newHost(t)
	svc := nat.NewProbeService(server)
	t.Cleanup(func() { svc.Close() })
	loop := scope.With(netip.MustParsePrefix("127.0.0.0/8"))

	if err := client.Connect(ctx, peer.AddrInfo{ID: server.ID(), Addrs: server.Addrs()}); err != nil {
		t.Fatal(err)
	}
	// Disabled: nobody to ask.
	if _, err := nat.FindProbeServers(ctx, client, loop, []peer.ID{server.ID()}, 2); !errors.Is(err, nat.ErrNoProbeServers) {
		t.Fatalf("disabled service: %v, want ErrNoProbeServers", err)
	}
	if err := svc.SetEnabled(true); err != nil {
		t.Fatal(err)
	}
	// The protocol list reaches the client by identify push; ask again
	// once it knows.
	client.Peerstore().AddProtocols(server.ID(), nat.ProbeProtocol)
	found, err := nat.FindProbeServers(ctx, client, loop, []peer.ID{server.ID()}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0].Peer != server.ID() || !found[0].Primary.Addr().IsLoopback() || !found[0].Alt.IsValid() {
		t.Fatalf("found %+v", found)
	}
	// Out of scope: the internet scope does not count loopback.
	if _, err := nat.FindProbeServers(ctx, client, scope.Internet(), []peer.ID{server.ID()}, 2); !errors.Is(err, nat.ErrNoProbeServers) {
		t.Fatalf("out of scope: %v, want ErrNoProbeServers", err)
	}
	res, err := probe.Classify(ctx, []netip.AddrPort{found[0].Primary},
		func() (net.PacketConn, error) { return net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}) })
	if err != nil {
		t.Fatal(err)
	}
	if res.Mapping != probe.EndpointIndependent || res.External.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("classified loopback as %+v", res)
	}
	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := svc.SetEnabled(true); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("SetEnabled after Close: %v", err)
	}
}
