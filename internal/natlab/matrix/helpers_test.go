package matrix

import (
	"context"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/p2pos/rendezvous/internal/natlab"
)

// labArgs are the flags every lab node gets: the lab's internet is public,
// and nodes listen on QUIC port 4001.
var labArgs = []string{"--public-ranges", natlab.InternetPrefix().String(), "--listen", "/ip4/0.0.0.0/udp/4001/quic-v1"}

// buildForLab skips the test when the lab cannot run here (fails it when
// RENDEZVOUS_NATLAB=required) and builds the rendezvous command.
func buildForLab(t *testing.T, ctx context.Context) string {
	t.Helper()
	natlab.Require(t)
	_, file, _, _ := runtime.Caller(0)
	bin, err := natlab.BuildCommand(ctx, filepath.Join(filepath.Dir(file), "..", "..", ".."), "./cmd/rendezvous", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// buildVanillaForLab builds the vanillapeer command; call it after
// buildForLab.
func buildVanillaForLab(t *testing.T, ctx context.Context) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	bin, err := natlab.BuildCommand(ctx, filepath.Join(filepath.Dir(file), "..", "..", ".."), "./internal/natlab/cmd/vanillapeer", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// startServers runs public nodes on the named hosts, each bootstrapping
// from the ones before, and returns their bootstrap addresses. They are
// stopped when the test ends.
func startServers(t *testing.T, ctx context.Context, lab *natlab.Lab, bin string, names ...string) []string {
	t.Helper()
	return startServersWith(t, ctx, lab, bin, nil, names...)
}

// startServersWith is startServers with extra flags for every server.
func startServersWith(t *testing.T, ctx context.Context, lab *natlab.Lab, bin string, extra []string, names ...string) []string {
	t.Helper()
	var boot []string
	for _, s := range startServerNodes(t, ctx, lab, bin, extra, names...) {
		boot = append(boot, s.boot)
	}
	return boot
}

// serverNode is a public node a test started.
type serverNode struct {
	id, boot string // peer ID, bootstrap address
	host     *natlab.Host
	proc     *natlab.Proc
}

// startServerNodes is startServersWith, returning the servers.
func startServerNodes(t *testing.T, ctx context.Context, lab *natlab.Lab, bin string, extra []string, names ...string) []serverNode {
	t.Helper()
	return startServerNodesArgs(t, ctx, lab, bin, append(append([]string{}, labArgs...), extra...), names...)
}

// startServerNodesArgs starts servers with args instead of labArgs; the
// servers are dialed at their QUIC or TCP port 4001, whichever args make
// them listen on.
func startServerNodesArgs(t *testing.T, ctx context.Context, lab *natlab.Lab, bin string, args []string, names ...string) []serverNode {
	t.Helper()
	// TCP when the servers listen on it: peers behind a router that
	// blocks UDP can reach them too.
	transport := "udp/4001/quic-v1"
	if slices.ContainsFunc(args, func(a string) bool { return strings.Contains(a, "/ip4/0.0.0.0/tcp/4001") }) {
		transport = "tcp/4001"
	}
	var out []serverNode
	var boot []string
	for _, name := range names {
		h := lab.Host(name)
		args := append([]string{"node", "--json", "--mode", "public"}, args...)
		if len(boot) > 0 {
			args = append(args, "--bootstrap", strings.Join(boot, ","))
		}
		p, err := h.Start(ctx, bin, args...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Stop(5 * time.Second) })
		var rl readyLine
		if err := p.NextJSON(ctx, &rl); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		s := serverNode{id: rl.PeerID, boot: "/ip4/" + h.Addr().String() + "/" + transport + "/p2p/" + rl.PeerID, host: h, proc: p}
		boot = append(boot, s.boot)
		out = append(out, s)
	}
	return out
}

// labConnectLine is what "rendezvous connect --json" prints once connected.
type labConnectLine struct {
	Path       string  `json:"path"`
	FirstPath  string  `json:"first_path"`
	DirectMS   float64 `json:"direct_ms"`
	RemoteAddr string  `json:"remote_addr"`
}

// labConnect runs "rendezvous connect" on host from to target, lets it join
// the network through boot first, and returns what it printed and the
// process, which the test stops. Failures end the test, with both sides'
// logs.
func labConnect(t *testing.T, ctx context.Context, lab *natlab.Lab, bin, from, boot string, target *node, args []string) (labConnectLine, *natlab.Proc) {
	t.Helper()
	p, err := lab.Host(from).Start(ctx, bin, append([]string{"connect", "--json", "--mode", "private", "--bootstrap", boot,
		"--timeout", "20s", "--direct-wait", "20s", "--wait-stdin", target.id}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(5 * time.Second) })
	// The connecting side learns its own mapping from what the DHT
	// servers observe, before it connects.
	var joined struct {
		Joined bool `json:"joined"`
	}
	if err := p.NextJSON(ctx, &joined); err != nil || !joined.Joined {
		t.Fatalf("join: %v: %s", err, p.Stderr())
	}
	if err := p.WriteLine("go"); err != nil {
		t.Fatal(err)
	}
	var cl labConnectLine
	if err := p.NextJSON(ctx, &cl); err != nil {
		t.Fatalf("connect: %v: %s\ntarget: %s", err, p.Stderr(), target.proc.Stderr())
	}
	if testing.Verbose() {
		t.Logf("%s: %s\ntarget: %s", from, p.Stderr(), target.proc.Stderr())
	}
	return cl, p
}
