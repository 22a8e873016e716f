package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/p2pos/rendezvous/internal/testnet"
	"github.com/p2pos/rendezvous/nat/probe"
)

// netcheckNet starts a loopback network whose public nodes run probe
// servers, and returns the flags that join it.
func netcheckNet(t *testing.T) []string {
	t.Helper()
	_, flags := startNetOf(t, testnet.Config{Public: 2, Private: 1})
	// --no-portmap: tests keep to loopback, away from the machine's gateway.
	return append(flags, "--no-portmap")
}

// runNetcheckCmd runs netcheck with args. The dial-back checker retries an
// inconclusive first check (no AutoNAT server identified yet) only after
// 15 s, past netcheck's 10 s wait; on a loaded machine that happens, and
// netcheck rightly reports unknown. The run is then repeated once.
func runNetcheckCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	args = append([]string{"netcheck"}, args...)
	code, stdout, stderr = runCmd(t, args...)
	if code == exitOK && (strings.Contains(stdout, `"reachability":"unknown"`) || strings.Contains(stdout, "* Reachability:    unknown")) {
		t.Logf("no dial-back verdict within %v; running again", reachabilityWait)
		code, stdout, stderr = runCmd(t, args...)
	}
	return code, stdout, stderr
}

// runNetcheckJSON runs netcheck --json with args and decodes its output.
func runNetcheckJSON(t *testing.T, args ...string) netcheckJSON {
	t.Helper()
	code, out, errOut := runNetcheckCmd(t, append([]string{"--json"}, args...)...)
	if code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s\nstdout:\n%s", code, errOut, out)
	}
	if errOut != "" {
		t.Errorf("stderr not empty: %q", errOut)
	}
	t.Logf("%s", out)
	var got netcheckJSON
	dec := json.NewDecoder(strings.NewReader(out))
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("%q: %v", out, err)
	}
	if dec.More() {
		t.Errorf("more than one JSON object: %q", out)
	}
	return got
}

func TestNetcheck(t *testing.T) {
	flags := netcheckNet(t)

	t.Run("quick-json", func(t *testing.T) {
		got := runNetcheckJSON(t, append([]string{"--quick"}, flags...)...)
		// Loopback is public in this scope, and the other peers dial back.
		if got.Reachability != "public" {
			t.Errorf("reachability %q, want public", got.Reachability)
		}
		if len(got.IPv4) == 0 || !strings.HasPrefix(got.IPv4[0].Addr, "/ip4/127.0.0.1/udp/") || !got.IPv4[0].InScope {
			t.Errorf("ipv4 addresses %+v", got.IPv4)
		}
		if got.IPv6 == nil {
			t.Error("ipv6: null, want a list")
		}
		if len(got.ProbeServers) < 1 {
			t.Fatalf("no probe server; nat_error %q", got.NATError)
		}
		n := got.NAT
		if n == nil {
			t.Fatalf("nat: null; nat_error %q", got.NATError)
		}
		// Loopback does not translate: one external address everywhere,
		// the socket's own.
		if n.Mapping != probe.EndpointIndependent.String() || n.MappingConfidence <= 0 {
			t.Errorf("mapping %q (confidence %v), want endpoint-independent", n.Mapping, n.MappingConfidence)
		}
		if !strings.HasPrefix(n.External, "127.0.0.1:") || n.Servers < 1 || n.Packets == 0 || n.Bytes == 0 {
			t.Errorf("nat %+v", n)
		}
		// The gateway is not asked in tests (--no-portmap), and says so.
		pm := got.PortMapping
		if pm == nil || !strings.Contains(pm.Error, "--no-portmap") {
			t.Fatalf("port_mapping: %+v, want it skipped", pm)
		}
		if !got.Quick || got.Timeout != nil || got.TimeoutError != "" {
			t.Errorf("binding timeout measured with --quick: %+v, %q", got.Timeout, got.TimeoutError)
		}
	})

	t.Run("binding-timeout", func(t *testing.T) {
		got := runNetcheckJSON(t, append([]string{"--candidates", "2s,1s"}, flags...)...)
		b := got.Timeout
		if b == nil {
			t.Fatalf("binding_timeout: null; error %q", got.TimeoutError)
		}
		// Loopback keeps every mapping: both probes survive.
		if b.LowerMS == nil || *b.LowerMS < 2000 {
			t.Errorf("lower bound %v ms, want >= 2000", b.LowerMS)
		}
		if b.UpperMS != nil || !b.Consistent || len(b.AliveMS) != 2 {
			t.Errorf("binding timeout %+v", b)
		}
		if want := []float64{1000, 2000}; len(b.CandidatesMS) != 2 || b.CandidatesMS[0] != want[0] || b.CandidatesMS[1] != want[1] {
			t.Errorf("candidates %v ms, want %v", b.CandidatesMS, want)
		}
		// 2/3 of the 2 s lower bound.
		if b.KeepAliveMS != 1300 || b.KeepAliveRule != "2/3 of the lower bound" {
			t.Errorf("keep-alive %v ms by %q", b.KeepAliveMS, b.KeepAliveRule)
		}
		if b.Bytes == 0 || b.ElapsedMS < 2000 {
			t.Errorf("cost %+v", b)
		}
	})

	t.Run("text", func(t *testing.T) {
		code, out, errOut := runNetcheckCmd(t, append([]string{"--quick"}, flags...)...)
		if code != exitOK {
			t.Fatalf("exit %d, stderr:\n%s", code, errOut)
		}
		t.Logf("\n%s", out)
		for _, want := range []string{
			"Report:\n",
			"\t* Reachability:    public (confirmed by dial-back)\n",
			"\t* IPv4:            /ip4/127.0.0.1/udp/",
			" (in scope)\n",
			// One server address cannot tell endpoint-independent
			// mapping from address-dependent.
			"\t* Mapping:         undetermined: endpoint-independent or address-dependent (confidence 50%)\n",
			"\t* Filtering:       ",
			"\t* Port mapping:    ",
			"\t* UDP mapping:     ",
			"\t* Binding timeout: not measured (--quick)\n",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q", want)
			}
		}
	})
}

func TestNetcheckUsage(t *testing.T) {
	code, out, errOut := runCmd(t, "netcheck", "--help")
	if code != exitOK {
		t.Fatalf("--help: exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{"Usage: rendezvous netcheck [flags]", "--quick", "--candidates DURATIONS", "2/3 of the lower bound"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	// Reachability is what netcheck finds out: it cannot be forced.
	if strings.Contains(out, "--mode") {
		t.Error("--help offers --mode")
	}

	boot := []string{"--bootstrap", "/ip4/127.0.0.1/udp/1/quic-v1/p2p/" + randomID(t).String()}
	tests := []struct {
		args []string
		want string
	}{
		{nil, "no bootstrap peers"},
		{[]string{"extra"}, "unexpected arguments: extra"},
		{append([]string{"--mode", "public"}, boot...), "flag provided but not defined: -mode"},
		{append([]string{"--candidates", "1s,soon"}, boot...), `--candidates: "soon" is not a duration`},
		{append([]string{"--candidates", "11m"}, boot...), "--candidates: 11m0s is not a whole number of milliseconds"},
		{append([]string{"--candidates", "1.5ms"}, boot...), "--candidates: 1.5ms is not a whole number"},
		{append([]string{"--quick", "--candidates", "1s"}, boot...), "--quick skips"},
		{append([]string{"--timeout", "0s"}, boot...), "--timeout must be positive"},
	}
	for _, tt := range tests {
		code, _, errOut := runCmd(t, append([]string{"netcheck"}, tt.args...)...)
		if code != exitUsage {
			t.Errorf("%q: exit %d, want %d (stderr %q)", tt.args, code, exitUsage, errOut)
		}
		if !strings.Contains(errOut, tt.want) {
			t.Errorf("%q: stderr %q does not say %q", tt.args, errOut, tt.want)
		}
	}
}

func TestNetcheckUnreachableBootstrap(t *testing.T) {
	boot := "/ip4/127.0.0.1/udp/1/quic-v1/p2p/" + randomID(t).String()
	args := append([]string{"netcheck", "--quick", "--bootstrap", boot, "--timeout", "2s"}, loopback...)
	code, out, errOut := runCmd(t, args...)
	if code != exitFail {
		t.Fatalf("exit %d, want %d; stdout %q, stderr %q", code, exitFail, out, errOut)
	}
	if out != "" || !strings.HasPrefix(errOut, "rendezvous: netcheck: no bootstrap peer reachable") {
		t.Errorf("stdout %q, stderr %q", out, errOut)
	}
}

func TestProgressLine(t *testing.T) {
	tests := []struct {
		done, total       int
		elapsed, expected time.Duration
		want              string
	}{
		{0, 10, 0, 100 * time.Second, "[....................] 0/10 probes, 1m40s left"},
		{3, 10, 50 * time.Second, 100 * time.Second, "[##########..........] 3/10 probes, 50s left"},
		{9, 10, 120 * time.Second, 100 * time.Second, "[####################] 9/10 probes, 0s left"},
		{2, 2, 3 * time.Second, 4 * time.Second, "[####################] 2/2 probes, 1s left"},
	}
	for _, tt := range tests {
		if got := progressLine(tt.done, tt.total, tt.elapsed, tt.expected); got != tt.want {
			t.Errorf("progressLine(%d, %d, %v, %v) = %q, want %q", tt.done, tt.total, tt.elapsed, tt.expected, got, tt.want)
		}
	}
}

func TestKeepAlive(t *testing.T) {
	tests := []struct {
		res  probe.TimeoutResult
		want time.Duration
	}{
		{probe.TimeoutResult{Lower: 60 * time.Second, Upper: 90 * time.Second, Estimate: 75 * time.Second}, 40 * time.Second},
		{probe.TimeoutResult{Lower: 420 * time.Second, Estimate: 420 * time.Second}, 280 * time.Second},
		{probe.TimeoutResult{Upper: 15 * time.Second, Estimate: 7500 * time.Millisecond}, 5 * time.Second},
		{probe.TimeoutResult{Lower: 2 * time.Second, Estimate: 2 * time.Second}, 1300 * time.Millisecond},
	}
	for _, tt := range tests {
		if got, _ := keepAlive(tt.res); got != tt.want {
			t.Errorf("keepAlive(%+v) = %v, want %v", tt.res, got, tt.want)
		}
	}
}
