package matrix

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/p2pos/rendezvous/internal/natlab"
)

// TestUDPBlockedBothTransports: peers that listen on QUIC and TCP, as
// nodes do by default, one behind a port-restricted router and one behind
// a router that blocks UDP, connect directly over TCP, whichever side
// connects. The side behind the port-restricted router joins over QUIC and
// is seen at no TCP address; the other must still dial it over TCP. A peer
// behind a symmetric router reaches the one behind the UDP-blocking router
// by a spray punch over TCP, not QUIC.
func TestUDPBlockedBothTransports(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := buildForLab(t, ctx)
	lab, err := natlab.New(ctx, natlab.Spec{
		Internet: natlab.Internet{Delay: 20 * time.Millisecond},
		Routers: []natlab.RouterSpec{{Name: "home", Kind: natlab.PortRestricted}, {Name: "blocked", Kind: natlab.UDPBlocked},
			{Name: "sym", Kind: natlab.Symmetric}},
		Hosts: []natlab.HostSpec{
			{Name: "server1"}, {Name: "server2"},
			{Name: "alice", Router: "home"}, {Name: "bob", Router: "blocked"},
			{Name: "carol", Router: "home"}, {Name: "dave", Router: "blocked"},
			{Name: "erin", Router: "sym"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	args := []string{"--public-ranges", natlab.InternetPrefix().String(), "--listen", listenAddr(Both)}
	// Both addresses of each server, as a node would have them: a peer
	// that can, joins over QUIC, and is then seen at no TCP address.
	var boot []string
	for _, s := range startServerNodesArgs(t, ctx, lab, bin, args, "server1", "server2") {
		ip := s.host.Addr().String()
		boot = append(boot, "/ip4/"+ip+"/udp/4001/quic-v1/p2p/"+s.id, "/ip4/"+ip+"/tcp/4001/p2p/"+s.id)
	}
	cfg := Config{Binary: bin}
	pairs := []struct {
		from, to, kind string
		spray          bool // only a spray punch opens the pair: it may start relayed
	}{{"alice", "bob", "udp-blocked", false}, {"dave", "carol", "port-restricted", false}, {"erin", "bob", "udp-blocked", true}}
	for _, pair := range pairs {
		t.Run(pair.from+"-to-"+pair.to, func(t *testing.T) {
			target := startTarget(ctx, lab, cfg, pair.kind, append([]string{"--json", "--nat-timeouts", "2s", "--tcp-holds", "none"}, args...), strings.Join(boot, ","), lab.Host(pair.to))
			if target.err != nil {
				t.Fatal(target.err)
			}
			defer target.proc.Stop(5 * time.Second)
			cl, p := labConnect(t, ctx, lab, bin, pair.from, strings.Join(boot, ","), target, args)
			t.Logf("%s reached %s: %+v", pair.from, pair.to, cl)
			if cl.Path != "hole-punched" || (cl.FirstPath != "" && !pair.spray) || !strings.Contains(cl.RemoteAddr, "/tcp/") {
				t.Errorf("path %s (first %q) at %s, want hole-punched over TCP\n%s: %s\n%s: %s",
					cl.Path, cl.FirstPath, cl.RemoteAddr, pair.from, p.Stderr(), pair.to, target.proc.Stderr())
			}
		})
	}
}
