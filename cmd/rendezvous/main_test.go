package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2pos/rendezvous"
	"github.com/p2pos/rendezvous/dht"
	"github.com/p2pos/rendezvous/internal/testnet"
	"github.com/p2pos/rendezvous/relay"
)

// loopback keeps the nodes the commands start on 127.0.0.1.
var loopback = []string{"--listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--public-ranges", "127.0.0.0/8"}

func TestMain(m *testing.M) {
	// The commands read their default bootstrap peers from the environment.
	os.Unsetenv(envBootstrap)
	os.Exit(m.Run())
}

// runCmd runs the tool in-process and returns its exit code and output.
func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	code = run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestHelp(t *testing.T) {
	for _, cmd := range []string{"node", "lookup", "connect", "demo"} {
		t.Run(cmd, func(t *testing.T) {
			for _, args := range [][]string{{cmd, "--help"}, {cmd, "-h"}, {"help", cmd}} {
				code, out, errOut := runCmd(t, args...)
				if code != exitOK {
					t.Fatalf("%q: exit %d, stderr %q", args, code, errOut)
				}
				if !strings.HasPrefix(out, "Usage: rendezvous "+cmd) || !strings.Contains(out, "Flags:") {
					t.Errorf("%q: usage not printed:\n%s", args, out)
				}
			}
		})
	}
	for _, args := range [][]string{{"--help"}, {"help"}, {"-h"}} {
		code, out, _ := runCmd(t, args...)
		if code != exitOK {
			t.Errorf("%q: exit %d", args, code)
		}
		for _, c := range commands() {
			if !strings.Contains(out, "  "+c.name+" ") {
				t.Errorf("%q: command %s not listed:\n%s", args, c.name, out)
			}
		}
	}
}

func TestUsageErrors(t *testing.T) {
	id := randomID(t).String()
	tests := []struct {
		args []string
		want string // in stderr
	}{
		{nil, "Usage: rendezvous <command>"},
		{[]string{"frobnicate"}, `rendezvous: unknown command "frobnicate"`},
		{[]string{"help", "frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"lookup"}, "rendezvous: lookup: missing PEERID"},
		{[]string{"lookup", "notapeerid"}, `rendezvous: lookup: "notapeerid" is not a peer ID`},
		{[]string{"lookup", id, id}, "want one PEERID"},
		{[]string{"lookup", "--nope", id}, "flag provided but not defined: -nope"},
		{[]string{"lookup", id}, "no bootstrap peers"},
		{[]string{"connect", id, "--mode", "sideways", "--bootstrap", "/ip4/127.0.0.1/udp/1/quic-v1/p2p/" + id}, "--mode"},
		{[]string{"connect", id, "--ping", "-1"}, "--ping"},
		{[]string{"node", "--public-ranges", "not-a-cidr"}, "--public-ranges"},
		{[]string{"node", "extra"}, "unexpected arguments: extra"},
		{[]string{"demo", "--private", "2"}, "at least 3 private peers"},
	}
	for _, tt := range tests {
		code, _, errOut := runCmd(t, tt.args...)
		if code != exitUsage {
			t.Errorf("%q: exit %d, want %d (stderr %q)", tt.args, code, exitUsage, errOut)
		}
		if !strings.Contains(errOut, tt.want) {
			t.Errorf("%q: stderr %q does not say %q", tt.args, errOut, tt.want)
		}
	}
}

func TestDemo(t *testing.T) {
	code, out, errOut := runCmd(t, "demo", "--public", "4", "--private", "3")
	if code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s\nstdout:\n%s", code, errOut, out)
	}
	t.Logf("\n%s", out)
	for _, want := range []string{
		"\nnetwork  up in ",
		"\npublish  7 of 7 peers published",
		"\nlookup   A found B by ID in ",
		"/p2p-circuit (relay P",
		`\ntopic    B and C advertised "demo-room"`,
		"A found 2 peers in ",
		"B (2 relays), C (2 relays)",
		"\nconnect  A connected to B relayed via relay P",
		`\necho     A sent "hello through the relay" over the relayed connection; B echoed "hello through the relay"`,
		"\nDemo finished in ",
	} {
		want = strings.ReplaceAll(want, `\n`, "\n")
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

func TestDemoJSON(t *testing.T) {
	code, out, errOut := runCmd(t, "demo", "--json", "--public", "4", "--private", "3")
	if code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, errOut)
	}
	var steps []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var step struct {
			Step  string `json:"step"`
			Path  string `json:"path"`
			Reply string `json:"reply"`
			Found []struct {
				Peer   string `json:"peer"`
				Relays int    `json:"relays"`
			} `json:"found"`
		}
		if err := json.Unmarshal([]byte(line), &step); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		steps = append(steps, step.Step)
		switch step.Step {
		case "topic":
			if len(step.Found) != 2 {
				t.Errorf("topic found %d peers, want 2: %s", len(step.Found), line)
			}
		case "connect":
			if step.Path != "relayed" {
				t.Errorf("connect path %q, want relayed", step.Path)
			}
		case "echo":
			if step.Reply != demoMessage {
				t.Errorf("echo reply %q", step.Reply)
			}
		}
	}
	want := "network publish lookup topic connect echo done"
	if got := strings.Join(steps, " "); got != want {
		t.Errorf("steps %q, want %q", got, want)
	}
}

func TestLookupUnreachableBootstrap(t *testing.T) {
	boot := "/ip4/127.0.0.1/udp/1/quic-v1/p2p/" + randomID(t).String()
	args := append([]string{"lookup", randomID(t).String(), "--bootstrap", boot, "--timeout", "2s"}, loopback...)
	code, out, errOut := runCmd(t, args...)
	if code != exitFail {
		t.Fatalf("exit %d, want %d; stdout %q, stderr %q", code, exitFail, out, errOut)
	}
	if !strings.HasPrefix(errOut, "rendezvous: lookup: no bootstrap peer reachable") {
		t.Errorf("stderr %q", errOut)
	}
}

// startNet starts a loopback network of 3 public and 2 private nodes and
// returns it with the bootstrap flag that joins it.
func startNet(t *testing.T) (*testnet.Network, []string) {
	return startNetOf(t, testnet.Config{Public: 3, Private: 2})
}

// startNetOf is startNet for a network of cfg's size.
func startNetOf(t *testing.T, cfg testnet.Config) (*testnet.Network, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tn, err := testnet.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.Close() })
	p := tn.Public[0]
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: p.ID(), Addrs: p.Addrs()})
	if err != nil {
		t.Fatal(err)
	}
	return tn, append([]string{"--bootstrap", addrs[0].String()}, loopback...)
}

func TestLookupAndConnect(t *testing.T) {
	tn, flags := startNet(t)
	target := tn.Private[1]
	// Wait until the target's record names both its relays, so that every
	// command below sees the same.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := testnet.WaitStatus(ctx, target, func(st rendezvous.Status) bool {
		p := st.Publish
		return p != nil && len(p.RelayAddrs) == relay.DefaultReservations && len(st.Relays) == relay.DefaultReservations
	}); err != nil {
		t.Fatal(err)
	}
	id := target.ID().String()

	t.Run("lookup", func(t *testing.T) {
		code, out, errOut := runCmd(t, append([]string{"lookup", id}, flags...)...)
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		t.Logf("\n%s", out)
		for _, want := range []string{"peer ID    " + id, "NAT        private", "direct     none", "via relay  /ip4/127.0.0.1/", "/p2p-circuit\n", "lookup     "} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q", want)
			}
		}
	})

	t.Run("lookup-json", func(t *testing.T) {
		// Flags may come after the peer ID too.
		code, out, errOut := runCmd(t, append(append([]string{"lookup", id, "--json"}, flags...), "--timeout", "20s")...)
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		var got lookupJSON
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%q: %v", out, err)
		}
		if got.PeerID != id || len(got.RelayAddrs) == 0 || len(got.Addrs) != 0 || got.NAT.Reachability != "private" {
			t.Errorf("record %+v", got)
		}
		if got.Cached || got.RPCs == 0 || got.BytesReceived == 0 || got.LookupMS <= 0 {
			t.Errorf("lookup stats %+v", got)
		}
	})

	t.Run("lookup-not-found", func(t *testing.T) {
		missing := randomID(t).String()
		code, _, errOut := runCmd(t, append([]string{"lookup", missing}, flags...)...)
		if code != exitFail {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		if want := "rendezvous: lookup: no record for " + missing + "\n"; errOut != want {
			t.Errorf("stderr %q, want %q", errOut, want)
		}
	})

	t.Run("connect", func(t *testing.T) {
		// Without punching, the peer's relay carries the connection.
		code, out, errOut := runCmd(t, append([]string{"connect", "--no-hole-punch", id}, flags...)...)
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		t.Logf("\n%s", out)
		for _, want := range []string{"path         relayed\n", "via relay    12D3", "remote addr  /ip4/127.0.0.1/", "dial         ", "RTT          "} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q", want)
			}
		}
	})

	t.Run("connect-json-ping", func(t *testing.T) {
		code, out, errOut := runCmd(t, append([]string{"connect", "--json", "--ping", "3", id}, flags...)...)
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		var got struct {
			Path  string `json:"path"`
			Relay string `json:"relay"`
			Ping  struct {
				Count int     `json:"count"`
				MinMS float64 `json:"min_ms"`
			} `json:"ping"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%q: %v", out, err)
		}
		// Loopback has no NAT: the punch one of the peer's relays
		// coordinates makes a direct connection.
		if got.Path != "hole-punched" || got.Relay != "" {
			t.Errorf("path %q via %q, want hole-punched: %s", got.Path, got.Relay, out)
		}
		if got.Ping.Count != 3 || got.Ping.MinMS <= 0 {
			t.Errorf("ping %+v", got.Ping)
		}
	})
}

// startNode runs the node command in the background and returns its output
// lines, a function that stops it, and its exit code once it has stopped.
func startNode(t *testing.T, args ...string) (lines <-chan string, stop func(), exit <-chan int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	code := make(chan int, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c := run(ctx, append([]string{"node"}, args...), pw, io.Discard)
		pw.Close()
		code <- c
	}()
	out := make(chan string, 100)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(pr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			out <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		cancel()
		for range out {
		}
		<-done
	})
	return out, cancel, code
}

// nextLine returns the next output line, failing the test after a deadline.
func nextLine(t *testing.T, lines <-chan string) string {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatal("output ended")
		}
		return l
	case <-time.After(30 * time.Second):
		t.Fatal("no output line within 30s")
	}
	return ""
}

type readyJSON struct {
	Event  string            `json:"event"`
	PeerID string            `json:"peer_id"`
	Addrs  []string          `json:"addrs"`
	Status rendezvous.Status `json:"status"`
}

func TestNodeJSONFirst(t *testing.T) {
	lines, stop, exit := startNode(t, append([]string{"--json", "--mode", "public"}, loopback...)...)
	var ready readyJSON
	line := nextLine(t, lines)
	if err := json.Unmarshal([]byte(line), &ready); err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	if ready.Event != "ready" || ready.PeerID == "" || ready.Status.Reachability != "public" || !ready.Status.RelayService {
		t.Errorf("ready line %s", line)
	}
	if len(ready.Addrs) == 0 || !strings.HasPrefix(ready.Addrs[0], "/ip4/127.0.0.1/udp/") || !strings.HasSuffix(ready.Addrs[0], "/p2p/"+ready.PeerID) {
		t.Errorf("bootstrap addrs %q", ready.Addrs)
	}
	stop()
	waitStopped(t, lines, exit)
}

func TestNodeJSONJoin(t *testing.T) {
	_, flags := startNet(t)
	lines, stop, exit := startNode(t, append([]string{"--json", "--mode", "private"}, flags...)...)
	var ready readyJSON
	line := nextLine(t, lines)
	if err := json.Unmarshal([]byte(line), &ready); err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	if ready.Event != "ready" || ready.Status.Reachability != "private" || ready.Status.DHTMode != "client" {
		t.Errorf("ready line %s", line)
	}
	if p := ready.Status.Publish; p == nil || p.Error != "" || p.Holders == 0 {
		t.Errorf("ready before a successful publish: %s", line)
	}
	// Events follow, each a JSON object; wait for the record with a relay.
	for {
		var ev rendezvous.Event
		line := nextLine(t, lines)
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if ev.Type == rendezvous.EventPublished && ev.Publish != nil && len(ev.Publish.RelayAddrs) > 0 {
			break
		}
		if ev.Type == rendezvous.EventRelays && len(ready.Status.Publish.RelayAddrs) > 0 {
			break // the ready line had the relays already
		}
	}
	stop()
	waitStopped(t, lines, exit)
}

func TestNodeText(t *testing.T) {
	lines, stop, exit := startNode(t, append([]string{"--mode", "public"}, loopback...)...)
	var out []string
	for {
		l := nextLine(t, lines)
		out = append(out, l)
		if strings.Contains(l, " ready: first node of the network") {
			break
		}
	}
	text := strings.Join(out, "\n")
	for _, want := range []string{"peer ID ", "listening on ", "/ip4/127.0.0.1/udp/", "reachability    public, DHT server, relay service on", "bootstrap with  /ip4/127.0.0.1/udp/"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	stop()
	go func() {
		for range lines {
		}
	}()
	select {
	case code := <-exit:
		if code != exitOK {
			t.Errorf("exit %d", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("node did not stop")
	}
}

// waitStopped waits for the node command to print its last line and exit 0.
func waitStopped(t *testing.T, lines <-chan string, exit <-chan int) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	last := ""
	for {
		select {
		case l, ok := <-lines:
			if ok {
				last = l
				continue
			}
			var ev struct{ Event string }
			if err := json.Unmarshal([]byte(last), &ev); err != nil || ev.Event != "stopped" {
				t.Errorf("last line %q, want a stopped event", last)
			}
			select {
			case code := <-exit:
				if code != exitOK {
					t.Errorf("exit %d", code)
				}
			case <-deadline:
				t.Fatal("node did not exit")
			}
			return
		case <-deadline:
			t.Fatal("node did not stop")
		}
	}
}

func randomID(t *testing.T) peer.ID {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestParseDataRelay(t *testing.T) {
	caps, err := parseDataRelay("1h,64MiB,16")
	if err != nil || caps != (dht.DataRelay{Duration: time.Hour, Data: 64 << 20, Circuits: 16}) {
		t.Fatalf("parseDataRelay = %+v, %v", caps, err)
	}
	for _, bad := range []string{"", "1h,64MiB", "1h,64MiB,0", "0s,1MiB,1", "1h,100,1", "1h,-1KiB,1", "48h,1MiB,1", "1h,xMiB,1"} {
		if _, err := parseDataRelay(bad); err == nil {
			t.Errorf("parseDataRelay(%q) accepted", bad)
		}
	}
}
