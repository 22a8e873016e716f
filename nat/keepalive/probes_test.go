package keepalive

import (
	"bufio"
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestProbeCountArithmetic(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const idle, rtt = 10 * time.Second, 40 * time.Millisecond
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	var p probeCount
	steps := []struct {
		name string
		st   tcpState
		want uint64
	}{
		{"busy", tcpState{lastData: at(0), lastAck: at(rtt), rtt: rtt}, 0},
		{"first probe answered", tcpState{lastData: at(0), lastAck: at(idle + 2*rtt), rtt: rtt}, 1},
		{"looked at again", tcpState{lastData: at(0), lastAck: at(idle + 2*rtt), rtt: rtt}, 1},
		{"three more, seen at once", tcpState{lastData: at(0), lastAck: at(4*idle + 5*rtt), rtt: rtt}, 4},
		{"one sent, not answered", tcpState{lastData: at(0), lastAck: at(4*idle + 5*rtt), rtt: rtt, unanswered: 1}, 5},
		{"sent again, answered", tcpState{lastData: at(0), lastAck: at(6*idle + 6*rtt), rtt: rtt}, 6},
		{"data: a new stretch", tcpState{lastData: at(time.Hour), lastAck: at(time.Hour + rtt), rtt: rtt}, 6},
		{"its first probe", tcpState{lastData: at(time.Hour), lastAck: at(time.Hour + idle + 2*rtt), rtt: rtt}, 7},
		{"one lost unseen, sent again", tcpState{lastData: at(time.Hour), lastAck: at(time.Hour + 3*idle + 3*rtt), rtt: rtt}, 9},
	}
	for _, s := range steps {
		if got := p.observe(s.st, idle, idle); got != s.want {
			t.Fatalf("%s: %d probes, want %d", s.name, got, s.want)
		}
	}
	// A new idle time counts from the last answer on.
	last := tcpState{lastData: at(time.Hour), lastAck: at(time.Hour + 3*idle + 3*rtt), rtt: rtt}
	p.restart(last)
	const idle2 = 30 * time.Second
	later := tcpState{lastData: at(time.Hour), lastAck: last.lastAck.Add(2 * (idle2 + rtt)), rtt: rtt}
	if got := p.observe(later, idle2, idle); got != 11 {
		t.Fatalf("after the idle change: %d probes, want 11", got)
	}
}

// tcpKeepAlivesSent reads the kernel's count of keep-alive probes sent in
// this network namespace (TcpExt TCPKeepAlive).
func tcpKeepAlivesSent(t *testing.T) uint64 {
	t.Helper()
	f, err := os.Open("/proc/net/netstat")
	if err != nil {
		t.Skip("no /proc/net/netstat:", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		names := strings.Fields(sc.Text())
		if !sc.Scan() {
			break
		}
		values := strings.Fields(sc.Text())
		if len(names) == 0 || names[0] != "TcpExt:" || len(values) != len(names) {
			continue
		}
		for i, n := range names {
			if n == "TCPKeepAlive" {
				v, err := strconv.ParseUint(values[i], 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
		}
	}
	t.Skip("no TCPKeepAlive counter")
	return 0
}

// The probes counted are the kernel's: on an idle loopback connection with
// a 5 s idle time, the count grows by one each 5 s, and never past what the
// kernel says it sent in all.
func TestKeepAlivesCounted(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("probes are counted from Linux's TCP_INFO")
	}
	a, ta := newHost(t, "/ip4/127.0.0.1/tcp/0")
	b, _ := newHost(t, "/ip4/127.0.0.1/tcp/0")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
		t.Fatal(err)
	}
	c := a.Network().ConnsToPeer(b.ID())[0]
	before := tcpKeepAlivesSent(t)
	if err := ta.SetIdle(c, MinIdle); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if n, ok := ta.KeepAlives(c); !ok || n != 0 {
		t.Fatalf("a fresh connection: %d probes (%v)", n, ok)
	}
	const want = 3
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var n uint64
	for n < want {
		select {
		case <-ctx.Done():
			t.Fatalf("%d probes counted in %v, want %d", n, time.Since(start), want)
		case <-tick.C:
		}
		var ok bool
		if n, ok = ta.KeepAlives(c); !ok {
			t.Fatal("probes not counted")
		}
	}
	elapsed := time.Since(start)
	sent := tcpKeepAlivesSent(t) - before
	t.Logf("%d probes counted in %v; the kernel sent %d in this namespace", n, elapsed, sent)
	if n > sent {
		t.Fatalf("counted %d probes, the kernel sent %d", n, sent)
	}
	if limit := uint64(elapsed/MinIdle) + 1; n > limit {
		t.Fatalf("counted %d probes in %v, at most %d possible", n, elapsed, limit)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := ta.KeepAlives(c); ok {
		t.Fatal("a closed connection still counted")
	}
}
