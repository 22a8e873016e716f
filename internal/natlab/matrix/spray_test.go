package matrix

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/p2pos/rendezvous/internal/natlab"
)

// TestSprayPunch: peers behind a port-restricted router and behind a
// symmetric router (random ports) connect directly, which only a spray
// punch can do, whichever side connects, over QUIC and over TCP: the
// connection starts on a relay and becomes direct.
func TestSprayPunch(t *testing.T) {
	for _, transport := range []string{"quic", "tcp"} {
		t.Run(transport, func(t *testing.T) { testSprayPunch(t, transport) })
	}
}

func testSprayPunch(t *testing.T, transport string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := buildForLab(t, ctx)
	lab, err := natlab.New(ctx, natlab.Spec{
		Routers: []natlab.RouterSpec{{Name: "home", Kind: natlab.PortRestricted}, {Name: "sym", Kind: natlab.Symmetric}},
		Hosts: []natlab.HostSpec{
			{Name: "server1"}, {Name: "server2"},
			{Name: "alice", Router: "home"}, {Name: "bob", Router: "sym"},
			{Name: "carol", Router: "home"}, {Name: "dave", Router: "sym"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	args := append([]string{}, labArgs...)
	if transport == "tcp" {
		args = []string{"--public-ranges", natlab.InternetPrefix().String(), "--listen", "/ip4/0.0.0.0/tcp/4001"}
	}
	var boot string
	for _, s := range startServerNodesArgs(t, ctx, lab, bin, args, "server1", "server2") {
		boot = strings.TrimPrefix(boot+","+s.boot, ",")
	}
	cfg := Config{Binary: bin}
	for _, pair := range []struct{ from, to, kind string }{{"alice", "bob", "symmetric"}, {"dave", "carol", "port-restricted"}} {
		t.Run(pair.from+"-to-"+pair.to, func(t *testing.T) {
			target := startTarget(ctx, lab, cfg, pair.kind, append([]string{"--json", "--nat-timeouts", "2s", "--tcp-holds", "none"}, args...), boot, lab.Host(pair.to))
			if target.err != nil {
				t.Fatal(target.err)
			}
			defer target.proc.Stop(5 * time.Second)
			cl, p := labConnect(t, ctx, lab, bin, pair.from, boot, target, args)
			t.Logf("%s reached %s: %+v", pair.from, pair.to, cl)
			if cl.Path != "hole-punched" {
				t.Errorf("path %s, want hole-punched\n%s: %s\n%s: %s", cl.Path, pair.from, p.Stderr(), pair.to, target.proc.Stderr())
			}
		})
	}
}
