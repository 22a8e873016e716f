package matrix

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/p2pos/rendezvous/internal/natlab"
)

// TestSameRouterConnectsOverLAN: two peers behind the same router, which
// does not hairpin, connect directly over their LAN addresses: the punch
// one of the target's relays coordinates carries both sides' LAN addresses.
func TestSameRouterConnectsOverLAN(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin := buildForLab(t, ctx)
	lab, err := natlab.New(ctx, natlab.Spec{
		Routers: []natlab.RouterSpec{{Name: "home", Kind: natlab.PortRestricted}},
		Hosts: []natlab.HostSpec{
			{Name: "server1"}, {Name: "server2"}, {Name: "alice", Router: "home"}, {Name: "bob", Router: "home"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	boot := strings.Join(startServers(t, ctx, lab, bin, "server1", "server2"), ",")
	bob := lab.Host("bob")
	cfg := Config{Binary: bin}
	target := startTarget(ctx, lab, cfg, "lan", append([]string{"--json"}, labArgs...), boot, bob)
	if target.err != nil {
		t.Fatal(target.err)
	}
	t.Cleanup(func() { target.proc.Stop(5 * time.Second) })

	p, err := lab.Host("alice").Start(ctx, bin, append([]string{"connect", "--json", "--mode", "private", "--bootstrap", boot,
		"--timeout", "20s", target.id}, labArgs...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(5 * time.Second)
	var cl struct {
		Path       string `json:"path"`
		RemoteAddr string `json:"remote_addr"`
	}
	if err := p.NextJSON(ctx, &cl); err != nil {
		t.Fatalf("connect: %v: %s", err, p.Stderr())
	}
	t.Logf("alice reached bob: %+v", cl)
	if cl.Path != "hole-punched" || !strings.HasPrefix(cl.RemoteAddr, "/ip4/"+bob.Addr().String()+"/") {
		t.Errorf("path %s to %s, want hole-punched to bob's LAN address %s", cl.Path, cl.RemoteAddr, bob.Addr())
	}
}
