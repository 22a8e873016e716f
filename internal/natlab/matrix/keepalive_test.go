package matrix

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/p2pos/rendezvous/internal/natlab"
)

// TestStandingConnectionsOutliveTheTCPTimeout puts a node behind a router
// that forgets idle TCP mappings after 20 s. The node proves that (a 40 s
// hold expires while a 5 s one survives), keeps its two relay connections
// alive with kernel probes, and after 45 s without application traffic
// still holds the same relays, the same router flows, and is reachable
// through its relays.
func TestStandingConnectionsOutliveTheTCPTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bin := buildForLab(t, ctx)
	const tcpTimeout = 20 * time.Second
	lab, err := natlab.New(ctx, natlab.Spec{
		Routers: []natlab.RouterSpec{{Name: "home", Kind: natlab.PortRestricted, UDPTimeout: 6 * time.Second, TCPTimeout: tcpTimeout}},
		Hosts:   []natlab.HostSpec{{Name: "server1"}, {Name: "server2"}, {Name: "server3"}, {Name: "natted", Router: "home"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	both := []string{"--listen", "/ip4/0.0.0.0/udp/4001/quic-v1,/ip4/0.0.0.0/tcp/4001"}
	boot := startServersWith(t, ctx, lab, bin, both, "server1", "server2", "server3")

	args := append(append([]string{"node", "--json", "--mode", "auto", "--no-portmap", "--bootstrap", strings.Join(boot, ","),
		"--nat-timeouts", "2s,4s,8s", "--tcp-holds", "5s,40s"}, labArgs...), both...)
	p, err := lab.Host("natted").Start(ctx, bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(5 * time.Second) })

	type keepalive struct {
		Idle     time.Duration `json:"idle_ns"`
		Basis    string        `json:"basis"`
		Lower    time.Duration `json:"tcp_lifetime_lower_ns"`
		Upper    time.Duration `json:"tcp_lifetime_upper_ns"`
		Measured bool          `json:"tcp_measuring"`
		Standing int           `json:"standing_tcp"`
		Sent     int           `json:"keepalives_sent"`
	}
	type line struct {
		Event  string `json:"event"`
		PeerID string `json:"peer_id"`
		Status struct {
			Relays []struct {
				Relay string `json:"relay"`
			} `json:"relays"`
			KeepAlive *keepalive `json:"keepalive"`
		} `json:"status"`
	}
	var id string
	var relays []string
	var sentBefore, sentAfter int
	for {
		var l line
		if err := p.NextJSON(ctx, &l); err != nil {
			t.Fatalf("waiting for the TCP lifetime: %v", err)
		}
		if l.PeerID != "" {
			id = l.PeerID
		}
		k := l.Status.KeepAlive
		if k == nil || k.Standing != 2 || k.Lower != 5*time.Second || k.Upper != 40*time.Second {
			continue
		}
		raw, _ := json.Marshal(k)
		t.Logf("proven: %s", raw)
		if k.Basis != "tcp" || k.Idle != 5*time.Second {
			t.Fatalf("keep-alive %s, want 5 s by the proven TCP lifetime", raw)
		}
		for _, r := range l.Status.Relays {
			relays = append(relays, r.Relay)
		}
		sentBefore = k.Sent
		break
	}
	before := standingFlows(t, ctx, lab)
	if len(before) != 2 {
		t.Fatalf("standing flows at the router: %v", before)
	}

	// 45 s without application traffic: more than twice the router's
	// TCP timeout. Any relay change the node reports fails the test.
	idle := time.NewTimer(45 * time.Second)
	defer idle.Stop()
	events := make(chan line)
	go func() {
		for {
			var l line
			if p.NextJSON(ctx, &l) != nil {
				return
			}
			select {
			case events <- l:
			case <-ctx.Done():
				return
			}
		}
	}()
wait:
	for {
		select {
		case <-idle.C:
			break wait
		case l := <-events:
			if l.Event == "relays" {
				t.Fatalf("relays changed while idle: %+v", l.Status.Relays)
			}
			if k := l.Status.KeepAlive; k != nil {
				sentAfter = k.Sent
			}
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	// Each standing connection must have been probed at least every 20 s
	// to keep its flow; at a 5 s idle time it is probed about every 5 s.
	t.Logf("keep-alive probes counted while idle: %d (%d before)", sentAfter-sentBefore, sentBefore)
	if got, least := sentAfter-sentBefore, 2*int(45*time.Second/tcpTimeout); got < least {
		t.Errorf("%d keep-alive probes counted in 45 s on 2 standing connections, want at least %d", got, least)
	}
	after := standingFlows(t, ctx, lab)
	for f := range before {
		if !after[f] {
			t.Errorf("standing flow %s lost while idle (flows now %v)", f, after)
		}
	}

	var res struct {
		Path  string `json:"path"`
		Relay string `json:"relay"`
	}
	// A fresh peer connects by ID, bootstrapping from each server in turn.
	var errs []string
	for _, b := range boot {
		c, err := lab.Host("server1").Start(ctx, bin, "connect", "--json", "--public-ranges", natlab.InternetPrefix().String(),
			"--listen", "/ip4/0.0.0.0/udp/0/quic-v1", "--bootstrap", b, id)
		if err != nil {
			t.Fatal(err)
		}
		if err = c.NextJSON(ctx, &res); err == nil {
			break
		}
		errs = append(errs, err.Error())
		t.Logf("connect through %s: %v", b, err)
	}
	if res.Path == "" {
		t.Fatalf("connect after the idle time: %v", errs)
	}
	t.Logf("connected after %v idle: path %s via %s (relays %v)", 45*time.Second, res.Path, res.Relay, relays)
}

// standingFlows lists the router's established TCP flows to port 4001 of
// the public hosts.
func standingFlows(t *testing.T, ctx context.Context, lab *natlab.Lab) map[string]bool {
	t.Helper()
	out, err := lab.Router("home").Command(ctx, "conntrack", "-L", "-p", "tcp", "--dport", "4001").Output()
	if err != nil {
		t.Fatalf("conntrack: %v", err)
	}
	flows := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.Contains(l, "ESTABLISHED") {
			continue
		}
		var src, dst, sport string
		for _, f := range strings.Fields(l) {
			switch {
			case strings.HasPrefix(f, "src=") && src == "":
				src = f
			case strings.HasPrefix(f, "dst=") && dst == "":
				dst = f
			case strings.HasPrefix(f, "sport=") && sport == "":
				sport = f
			}
		}
		flows[src+" "+dst+" "+sport] = true
	}
	return flows
}
