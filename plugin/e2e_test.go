package plugin

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/p2pos/rendezvous"
	"github.com/p2pos/rendezvous/dht"
	"github.com/p2pos/rendezvous/internal/testnet"
)

// The end-to-end test runs nodes and plugins as processes of their own:
// the rendezvous command, and this test binary started again as a plugin
// (TestMain sees pluginProcEnv).
const pluginProcEnv = "RENDEZVOUS_PLUGIN_PROC"

func TestMain(m *testing.M) {
	if mode := os.Getenv(pluginProcEnv); mode != "" {
		os.Exit(pluginProcess(mode))
	}
	os.Exit(m.Run())
}

// procResult is what a plugin process prints.
type procResult struct {
	Sent     string `json:"sent,omitempty"`
	Received string `json:"received,omitempty"`
	Bytes    int64  `json:"bytes,omitempty"`
	Relayed  bool   `json:"relayed,omitempty"`
	Error    string `json:"error,omitempty"`
	Code     byte   `json:"code,omitempty"`
}

// pluginProcess is a plugin: "serve" registers a service and takes one
// stream, "open" opens one to a peer; either way it sends bytes and reads
// what comes until end of file, and prints both checksums.
func pluginProcess(mode string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := os.Getenv
	out := json.NewEncoder(os.Stdout)
	fail := func(err error) int {
		r := procResult{Error: err.Error()}
		var perr *Error
		if errors.As(err, &perr) {
			r.Code = perr.Code
		}
		out.Encode(r)
		return 1
	}
	c, err := Dial(ctx, env("PLUGIN_SOCKET"), env("PLUGIN_TOKEN"))
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	var s *Stream
	switch mode {
	case "serve":
		l, err := c.Register(ctx, env("PLUGIN_SERVICE"))
		if err != nil {
			return fail(err)
		}
		fmt.Println(`{"registered":true}`)
		if s, err = l.AcceptStream(ctx); err != nil {
			return fail(err)
		}
	case "open":
		if s, err = c.Open(ctx, env("PLUGIN_PEER"), env("PLUGIN_SERVICE")); err != nil {
			return fail(err)
		}
	}
	var size int64
	fmt.Sscan(env("PLUGIN_BYTES"), &size)
	var seed uint64
	fmt.Sscan(env("PLUGIN_SEED"), &seed)
	sent := sha256.New()
	var werr error
	var wg sync.WaitGroup
	wg.Go(func() {
		src := io.LimitReader(rand.NewChaCha8([32]byte{byte(seed)}), size)
		if _, werr = io.Copy(io.MultiWriter(s, sent), src); werr == nil {
			werr = s.CloseWrite()
		}
	})
	got := sha256.New()
	n, rerr := io.Copy(got, s)
	wg.Wait()
	if err := errors.Join(werr, rerr); err != nil {
		return fail(err)
	}
	out.Encode(procResult{Sent: hex.EncodeToString(sent.Sum(nil)), Received: hex.EncodeToString(got.Sum(nil)),
		Bytes: n, Relayed: s.Info().Relayed})
	return 0
}

// proc is a running process whose stdout is read line by line.
type proc struct {
	cmd   *exec.Cmd
	lines chan string
}

func startProc(t *testing.T, ctx context.Context, env []string, name string, args ...string) *proc {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, lines: make(chan string, 64)}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	return p
}

// next decodes the next line that decodes into v and satisfies ok.
func (p *proc) next(t *testing.T, ctx context.Context, v any, ok func() bool) {
	t.Helper()
	for {
		select {
		case l, open := <-p.lines:
			if !open {
				t.Fatalf("%s exited", p.cmd.Path)
			}
			if json.Unmarshal([]byte(l), v) == nil && ok() {
				return
			}
		case <-ctx.Done():
			t.Fatalf("%s: %v", p.cmd.Path, ctx.Err())
		}
	}
}

func buildRendezvous(t *testing.T, ctx context.Context) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	out := filepath.Join(t.TempDir(), "rendezvous")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/rendezvous")
	cmd.Dir = filepath.Join(filepath.Dir(file), "..")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v: %s", err, b)
	}
	return out
}

// TestEndToEnd: two node processes serve plugins; a plugin process on
// each sends 10 MB to the other through the nodes, and the checksums
// match. A plugin with a wrong token, one that opens a service it was not
// granted, and a session that sends a malformed frame each get a clear
// error, and the good plugins go on.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := buildRendezvous(t, ctx)
	// Public nodes, in this process, volunteer as data relays: the two
	// nodes' connection carries 20 MB even if it stays relayed.
	tn, err := testnet.New(ctx, testnet.Config{Public: 3, Options: []rendezvous.Option{
		rendezvous.WithDataRelay(dht.DataRelay{Duration: 10 * time.Minute, Data: 64 << 20, Circuits: 4})}})
	if err != nil {
		t.Fatal(err)
	}
	defer tn.Close()
	boot := tn.BootstrapAddrs()
	type node struct {
		id, dir string
	}
	startNode := func(name, token string) node {
		dir := filepath.Join(t.TempDir(), name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		cfg := Config{Plugins: []Grant{{Name: "bulk", Token: token, Register: []string{"bulk/1"}, Open: []string{"bulk/1"}}}}
		b, _ := json.Marshal(cfg)
		cfgPath := filepath.Join(dir, "plugins.json")
		if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
			t.Fatal(err)
		}
		p := startProc(t, ctx, nil, bin, "node", "--json", "--mode", "private", "--bootstrap", strings.Join(boot, ","),
			"--public-ranges", "127.0.0.0/8", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--data-dir", dir, "--plugins", cfgPath)
		type publish struct {
			RelayAddrs []string `json:"relay_addrs"`
		}
		var ready struct {
			Event   string   `json:"event"`
			PeerID  string   `json:"peer_id"`
			Plugins string   `json:"plugins"`
			Publish *publish `json:"publish"`
			Status  struct {
				Publish *publish `json:"publish"`
			} `json:"status"`
		}
		// Ready, and published with a relay: the other node reaches it
		// through one.
		p.next(t, ctx, &ready, func() bool { return ready.Event == "ready" })
		if ready.Plugins != filepath.Join(dir, "plugins.sock") {
			t.Fatalf("ready line names plugin socket %q", ready.Plugins)
		}
		id := ready.PeerID
		for pub := ready.Status.Publish; pub == nil || len(pub.RelayAddrs) == 0; pub = ready.Publish {
			ready.Publish = nil
			p.next(t, ctx, &ready, func() bool { return ready.Event == "published" })
		}
		ready.PeerID = id
		if fi, err := os.Stat(filepath.Join(dir, "plugins.sock")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("socket: %v, mode %v", err, fi.Mode())
		}
		return node{id: ready.PeerID, dir: dir}
	}
	a, b := startNode("a", tokenA), startNode("b", tokenB)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	plugin := func(mode string, n node, token string, env ...string) *proc {
		return startProc(t, ctx, append([]string{pluginProcEnv + "=" + mode, "PLUGIN_SOCKET=" + filepath.Join(n.dir, "plugins.sock"),
			"PLUGIN_TOKEN=" + token}, env...), self, "-test.run=^$")
	}
	const size = 10 << 20

	// The refusals come first: the good plugins run after them.
	var bad procResult
	plugin("open", a, "a-wrong-token-0123456789", "PLUGIN_PEER="+b.id, "PLUGIN_SERVICE=bulk/1").next(t, ctx, &bad, func() bool { return true })
	if bad.Code != CodeAuth || !strings.Contains(bad.Error, "token") {
		t.Fatalf("wrong token: %+v", bad)
	}
	plugin("open", a, tokenA, "PLUGIN_PEER="+b.id, "PLUGIN_SERVICE=other/1").next(t, ctx, &bad, func() bool { return true })
	if bad.Code != CodeNotGranted || !strings.Contains(bad.Error, "may not open other/1") {
		t.Fatalf("ungranted open: %+v", bad)
	}
	raw, err := net.Dial("unix", filepath.Join(a.dir, "plugins.sock"))
	if err != nil {
		t.Fatal(err)
	}
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	raw.Write(appendFrame(nil, frame{typ: frameHello, payload: append([]byte{Version}, tokenA...)}))
	raw.Write([]byte{0xee, 0, 0, 0, 0, 0, 0, 0, 0})
	var gotErr *Error
	for {
		f, err := readFrame(raw)
		if err != nil {
			break
		}
		if f.typ == frameError {
			gotErr = parseError(f.payload)
		}
	}
	raw.Close()
	if gotErr == nil || gotErr.Code != CodeMalformed {
		t.Fatalf("malformed frame: %v", gotErr)
	}

	server := plugin("serve", b, tokenB, "PLUGIN_SERVICE=bulk/1", fmt.Sprintf("PLUGIN_BYTES=%d", size), "PLUGIN_SEED=2")
	var registered struct{ Registered bool }
	server.next(t, ctx, &registered, func() bool { return registered.Registered })
	start := time.Now()
	client := plugin("open", a, tokenA, "PLUGIN_PEER="+b.id, "PLUGIN_SERVICE=bulk/1", fmt.Sprintf("PLUGIN_BYTES=%d", size), "PLUGIN_SEED=1")
	var ra, rb procResult
	client.next(t, ctx, &ra, func() bool { return ra.Sent != "" || ra.Error != "" })
	server.next(t, ctx, &rb, func() bool { return rb.Sent != "" || rb.Error != "" })
	if ra.Error != "" || rb.Error != "" {
		t.Fatalf("plugins: %+v, %+v", ra, rb)
	}
	if ra.Bytes != size || rb.Bytes != size || ra.Sent != rb.Received || rb.Sent != ra.Received {
		t.Fatalf("a: %+v\nb: %+v", ra, rb)
	}
	t.Logf("10 MB each way between plugin processes through two node processes in %v (relayed %v)", time.Since(start).Round(time.Millisecond), ra.Relayed)
}
