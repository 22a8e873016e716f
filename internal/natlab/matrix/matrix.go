// Package matrix runs the connection matrix in the NAT lab: for every pair of
// sides (a public host, or a host behind a router of each kind) and each
// transport, a fresh peer on one side connects by peer ID to a peer on the
// other, and the matrix records whether it worked, over which path, how
// long the first byte took, how many bytes crossed the public nodes, and why
// it failed.
//
// Every peer is the rendezvous command, run inside the lab's namespaces. The
// public nodes are forced public; peers behind routers run in auto mode, as
// users would run them. One side, "broken", is a port-restricted router that
// is cut off from the internet (natlab's blackhole) once its peer has
// published: its cells must fail, which proves the instrument sees failures.
//
// With Config.VanillaBinary set, every cell is also measured for vanilla
// go-libp2p with defaults (see vanilla.go): a vanilla target on its own host
// behind its own router of the side's kind, and a vanilla dialer on the
// same source host, given the target's addresses out of band.
package matrix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/p2pos/rendezvous/internal/natlab"
)

// Public names the side of a peer on the public internet, without a router.
const Public = "public"

// Broken names the side behind a router that is cut off on purpose.
const Broken = "broken"

// Config says what to run.
type Config struct {
	// Binary is the rendezvous command to run.
	Binary string
	// VanillaBinary, if set, is the vanillapeer command: each cell is then
	// measured for vanilla go-libp2p too, after this library's trial.
	VanillaBinary string
	// Sides are the sides to pair: Public, router kinds, and Broken.
	// Default: all of them.
	Sides []string
	// Transports are "quic", "tcp" and Both (every peer on QUIC and TCP,
	// as nodes run by default). Default "quic" and "tcp".
	Transports []string
	// Servers is the number of public DHT servers (and relays). Default 3.
	Servers int
	// Delay is the internet's one-way delay. Default 0.
	Delay time.Duration
	// Timeout bounds one connection attempt. Default 30 s.
	Timeout time.Duration
	// Trials is how many times each pair connects, each time from a fresh
	// peer. Default 1.
	Trials int
	// VanillaTrials is how many of them vanilla go-libp2p makes too.
	// Default: Trials.
	VanillaTrials int
	// Pairs, if set, limits the cells to these pairs, each "from:to" with
	// from before to in Sides.
	Pairs []string
	// Logf, if set, reports progress.
	Logf func(format string, args ...any)
}

// DefaultSides are all sides in table order.
func DefaultSides() []string {
	out := []string{Public}
	for _, k := range natlab.Kinds() {
		if k != natlab.Blackhole {
			out = append(out, string(k))
		}
	}
	return append(out, Broken)
}

// Both is the transport of cells whose peers all listen on QUIC and TCP.
const Both = "both"

// Implementations a cell measures.
const (
	Rendezvous = "rendezvous"
	Vanilla    = "vanilla"
)

// Cell is one connection attempt.
type Cell struct {
	// Impl is Rendezvous, or Vanilla for stock go-libp2p.
	Impl      string `json:"impl"`
	From      string `json:"from"`
	To        string `json:"to"`
	Transport string `json:"transport"`
	Trial     int    `json:"trial"`
	OK        bool   `json:"ok"`
	// Path is "direct", "hole-punched" or "relayed".
	Path  string `json:"path,omitempty"`
	Relay string `json:"relay,omitempty"`
	// ViaDataRelay: the relayed connection went through the server that
	// volunteers as a data relay.
	ViaDataRelay bool `json:"via_data_relay,omitempty"`
	// LookupMS, DialMS and FirstByteMS are measured by the connecting peer:
	// first byte = lookup + dial + the first stream round trip.
	LookupMS    float64 `json:"lookup_ms,omitempty"`
	DialMS      float64 `json:"dial_ms,omitempty"`
	FirstByteMS float64 `json:"first_byte_ms,omitempty"`
	// DirectMS is the time to a direct connection, when one came.
	DirectMS *float64 `json:"direct_ms,omitempty"`
	// PublicBytes crossed the public nodes to or from the two peers' public
	// addresses during the attempt (nftables counters on the public nodes),
	// from the lookup on.
	PublicBytes int64 `json:"public_bytes"`
	// JoinBytes crossed them while the connecting peer joined the
	// network, before it looked the other up; not in PublicBytes.
	JoinBytes int64  `json:"join_bytes"`
	Reason    string `json:"reason,omitempty"`
	// Attempts are the ways the connecting peer tried, as connect --json
	// reports them.
	Attempts json.RawMessage `json:"attempts,omitempty"`
	// LookupRPCs and LookupBytes count the lookup's kad requests and their
	// messages' bytes (without transport overhead).
	LookupRPCs  int64 `json:"lookup_rpcs"`
	LookupBytes int64 `json:"lookup_bytes"`
	// PeerDCUtR, for a vanilla cell, tells whether the target advertised
	// go-libp2p's hole-punch protocol (DCUtR) to the dialer.
	PeerDCUtR *bool `json:"peer_dcutr,omitempty"`
}

// Result is a whole matrix.
type Result struct {
	Sides      []string `json:"sides"`
	Transports []string `json:"transports"`
	Servers    int      `json:"servers"`
	Trials     int      `json:"trials"`
	// VanillaTrials is how many trials vanilla go-libp2p made per pair.
	VanillaTrials int       `json:"vanilla_trials,omitempty"`
	DelayMS       float64   `json:"delay_ms"`
	Started       time.Time `json:"started"`
	Seconds       float64   `json:"seconds"`
	Cells         []Cell    `json:"cells"`
}

// Run runs the matrix.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Binary == "" {
		return nil, errors.New("matrix: no binary")
	}
	if len(cfg.Sides) == 0 {
		cfg.Sides = DefaultSides()
	}
	if len(cfg.Transports) == 0 {
		cfg.Transports = []string{"quic", "tcp"}
	}
	if cfg.Servers <= 0 {
		cfg.Servers = 3
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Trials <= 0 {
		cfg.Trials = 1
	}
	if cfg.VanillaTrials <= 0 || cfg.VanillaTrials > cfg.Trials {
		cfg.VanillaTrials = cfg.Trials
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	res := &Result{Sides: cfg.Sides, Transports: cfg.Transports, Servers: cfg.Servers, Trials: cfg.Trials,
		DelayMS: float64(cfg.Delay.Microseconds()) / 1000, Started: time.Now()}
	if cfg.VanillaBinary != "" {
		res.VanillaTrials = cfg.VanillaTrials
	}
	for _, tr := range cfg.Transports {
		cells, err := runTransport(ctx, cfg, tr)
		if err != nil {
			return nil, err
		}
		res.Cells = append(res.Cells, cells...)
	}
	res.Seconds = time.Since(res.Started).Seconds()
	return res, nil
}

// Names of lab hosts and routers for a side: "from" peers connect, "to"
// peers are connected to.
func hostName(side, role string) string   { return side + "-" + role }
func routerName(side, role string) string { return "r-" + side + "-" + role }

func spec(cfg Config) natlab.Spec {
	var s natlab.Spec
	s.Internet.Delay = cfg.Delay
	for i := range cfg.Servers {
		s.Hosts = append(s.Hosts, natlab.HostSpec{Name: fmt.Sprintf("server%d", i+1)})
	}
	roles := []string{"from", "to"}
	if cfg.VanillaBinary != "" {
		roles = append(roles, vanillaRole)
	}
	for _, side := range cfg.Sides {
		for _, role := range roles {
			h := natlab.HostSpec{Name: hostName(side, role)}
			if side != Public {
				kind := natlab.Kind(side)
				if side == Broken {
					kind = natlab.PortRestricted
				}
				s.Routers = append(s.Routers, natlab.RouterSpec{Name: routerName(side, role), Kind: kind})
				h.Router = routerName(side, role)
			}
			s.Hosts = append(s.Hosts, h)
		}
	}
	return s
}

func listenAddr(transport string) string {
	switch transport {
	case "tcp":
		return "/ip4/0.0.0.0/tcp/4001"
	case Both:
		return "/ip4/0.0.0.0/udp/4001/quic-v1,/ip4/0.0.0.0/tcp/4001"
	}
	return "/ip4/0.0.0.0/udp/4001/quic-v1"
}

type publishLine struct {
	Addrs      []string `json:"addrs"`
	RelayAddrs []string `json:"relay_addrs"`
	Error      string   `json:"error"`
}

// node is a long-running peer in the lab.
type node struct {
	proc *natlab.Proc
	id   string
	err  error // why it could not start
}

type readyLine struct {
	Event        string   `json:"event"`
	Reachability string   `json:"reachability"`
	PeerID       string   `json:"peer_id"`
	Addrs        []string `json:"addrs"`
	Status       struct {
		Publish      *publishLine `json:"publish"`
		Reachability string       `json:"reachability"`
		NAT          *struct {
			UDPTimeout int64  `json:"udp_timeout_ns"`
			Measuring  bool   `json:"timeout_measuring"`
			Error      string `json:"error"`
		} `json:"nat"`
	} `json:"status"`
	Publish *publishLine `json:"publish"`
}

// surveyed tells whether a status line shows the NAT survey over (or none
// due: a public node).
func (rl readyLine) surveyed() bool {
	if rl.Status.Reachability == "public" {
		return true
	}
	n := rl.Status.NAT
	return n != nil && !n.Measuring && (n.UDPTimeout > 0 || n.Error != "")
}

func runTransport(ctx context.Context, cfg Config, transport string) ([]Cell, error) {
	lab, err := natlab.New(ctx, spec(cfg))
	if err != nil {
		return nil, fmt.Errorf("matrix: lab: %w", err)
	}
	defer lab.Close()
	scope := natlab.InternetPrefix().String()
	common := []string{"--json", "--public-ranges", scope, "--listen", listenAddr(transport)}

	// Public servers: the first bootstraps the others, and volunteers as
	// a data relay, as some public peers would.
	var boot []string
	var dataRelay string // its peer ID
	for i := range cfg.Servers {
		h := lab.Host(fmt.Sprintf("server%d", i+1))
		args := append([]string{"node", "--mode", "public"}, common...)
		if i == 0 {
			args = append(args, "--data-relay", dataRelayCaps)
		}
		if len(boot) > 0 {
			args = append(args, "--bootstrap", strings.Join(boot, ","))
		}
		p, err := h.Start(ctx, cfg.Binary, args...)
		if err != nil {
			return nil, err
		}
		var rl readyLine
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = p.NextJSON(sctx, &rl)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("matrix: server %d: %w", i+1, err)
		}
		if i == 0 {
			dataRelay = rl.PeerID
		}
		for _, a := range rl.Addrs {
			if strings.Contains(a, "/"+h.Addr().String()+"/") {
				boot = append(boot, a+"/p2p/"+rl.PeerID)
			}
		}
	}
	if len(boot) == 0 {
		return nil, errors.New("matrix: servers published no usable address")
	}
	bootArg := strings.Join(boot, ",")
	cfg.Logf("%s: %d servers up", transport, cfg.Servers)

	// Target peers, one per side (and a vanilla one), in parallel.
	targets := map[string]*node{}
	vanillas := map[string]*vanillaTarget{}
	defer func() {
		for _, t := range vanillas {
			t.stop()
		}
	}()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, side := range cfg.Sides {
		wg.Go(func() {
			n := startTarget(ctx, lab, cfg, side, common, bootArg)
			mu.Lock()
			targets[side] = n
			mu.Unlock()
		})
		if cfg.VanillaBinary != "" {
			wg.Go(func() {
				t := startVanillaTarget(ctx, lab, cfg, side, transport, boot)
				mu.Lock()
				vanillas[side] = t
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if sideIn(cfg.Sides, Broken) {
		roles := []string{"to", "from"}
		if cfg.VanillaBinary != "" {
			roles = append(roles, vanillaRole)
		}
		for _, role := range roles {
			if err := lab.Router(routerName(Broken, role)).SetBlackhole(ctx, true); err != nil {
				return nil, err
			}
		}
	}
	cfg.Logf("%s: targets up", transport)

	var cells []Cell
	for i, from := range cfg.Sides {
		for _, to := range cfg.Sides[i:] {
			if len(cfg.Pairs) > 0 && !slices.Contains(cfg.Pairs, from+":"+to) {
				continue
			}
			for trial := range cfg.Trials {
				c := runCell(ctx, lab, cfg, transport, from, to, targets[to], common, bootArg)
				c.Trial = trial + 1
				c.ViaDataRelay = c.OK && c.Path == "relayed" && c.Relay == dataRelay
				cfg.Logf("%s %s -> %s #%d: ok=%v path=%s first byte %.0f ms, %d B via public nodes %s",
					transport, from, to, c.Trial, c.OK, c.Path, c.FirstByteMS, c.PublicBytes, c.Reason)
				cells = append(cells, c)
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				if cfg.VanillaBinary == "" || trial >= cfg.VanillaTrials {
					continue
				}
				v := runVanillaCell(ctx, lab, cfg, transport, from, to, vanillas[to])
				v.Trial = trial + 1
				cfg.Logf("%s %s -> %s #%d vanilla: ok=%v path=%s first byte %.0f ms, %d B via public nodes %s",
					transport, from, to, v.Trial, v.OK, v.Path, v.FirstByteMS, v.PublicBytes, v.Reason)
				cells = append(cells, v)
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
			}
		}
	}
	for _, n := range targets {
		if n.proc != nil {
			n.proc.Stop(5 * time.Second)
		}
	}
	return cells, nil
}

func sideIn(sides []string, s string) bool {
	for _, x := range sides {
		if x == s {
			return true
		}
	}
	return false
}

// startTarget starts the peer others connect to (on side's target host,
// or on the host given) and waits until it has published its record
// (behind a router: with a relay address).
func startTarget(ctx context.Context, lab *natlab.Lab, cfg Config, side string, common []string, boot string, on ...*natlab.Host) *node {
	h := lab.Host(hostName(side, "to"))
	if len(on) > 0 {
		h = on[0]
	}
	mode := "auto"
	if side == Public {
		mode = "public"
	}
	// Targets measure their NAT quickly and prove no TCP lifetime, and
	// cells start once they are done: what crosses the public nodes during
	// a cell is then the connection's, not the target's standby work.
	args := append([]string{"node", "--mode", mode, "--bootstrap", boot,
		"--nat-timeouts", "2s,4s", "--tcp-holds", "none"}, common...)
	p, err := h.Start(ctx, cfg.Binary, args...)
	if err != nil {
		return &node{err: err}
	}
	n := &node{proc: p}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	public, published := false, false
	for {
		var rl readyLine
		if err := p.NextJSON(wctx, &rl); err != nil {
			if published {
				cfg.Logf("%s: target published, NAT survey not over: %v", side, err)
				return n
			}
			n.err = fmt.Errorf("peer never published: %w", err)
			return n
		}
		if rl.PeerID != "" {
			n.id = rl.PeerID
		}
		if rl.Event == "reachability" && rl.Reachability == "public" {
			public = true
		}
		pub := rl.Publish
		if rl.Event == "ready" {
			pub = rl.Status.Publish
		}
		// A peer behind a router is ready once its record names a relay,
		// or direct addresses after a dial-back confirmed them (a port
		// mapping).
		if pub != nil && pub.Error == "" && (side == Public || len(pub.RelayAddrs) > 0 || (public && len(pub.Addrs) > 0)) {
			published = true
		}
		if published && (side == Public || rl.surveyed()) {
			return n
		}
	}
}

type connectLine struct {
	Path     string  `json:"path"`
	Relay    string  `json:"relay"`
	LookupMS float64 `json:"lookup_ms"`
	DialMS   float64 `json:"dial_ms"`
	RTTMS    float64 `json:"rtt_ms"`
	// FirstPath and DirectMS are set when a hole punch replaced the
	// first, relayed, connection.
	FirstPath string          `json:"first_path"`
	DirectMS  float64         `json:"direct_ms"`
	Attempts  json.RawMessage `json:"attempts"`
	LookupRPC int64           `json:"lookup_rpcs"`
	LookupB   int64           `json:"lookup_bytes"`
	Ping      *struct {
		RTTsMS []float64 `json:"rtts_ms"`
	} `json:"ping"`
}

// dataRelayCaps are the caps of the server that volunteers as a data
// relay.
const dataRelayCaps = "1h,64MiB,16"

// directWait is how long a relayed connection is given to become direct.
const directWait = 20 * time.Second

func runCell(ctx context.Context, lab *natlab.Lab, cfg Config, transport, from, to string, target *node, common []string, boot string) Cell {
	c := Cell{Impl: Rendezvous, From: from, To: to, Transport: transport}
	if target.err != nil || target.id == "" {
		c.Reason = fmt.Sprintf("target: %v", target.err)
		return c
	}
	h := lab.Host(hostName(from, "from"))
	peers := []netip.Addr{publicAddr(h), publicAddr(lab.Host(hostName(to, "to")))}
	counters, err := startCounting(ctx, lab, cfg.Servers, peers)
	if err != nil {
		c.Reason = err.Error()
		return c
	}
	defer counters.stop(ctx)

	args := append([]string{"connect", "--mode", "private", "--bootstrap", boot, "--ping", "1",
		"--timeout", cfg.Timeout.String(), "--direct-wait", directWait.String(), "--wait-stdin", "--json"}, common...)
	args = append(args, target.id)
	p, err := h.Start(ctx, cfg.Binary, args...)
	if err != nil {
		c.Reason = err.Error()
		return c
	}
	defer p.Stop(5 * time.Second)
	var cl connectLine
	cctx, cancel := context.WithTimeout(ctx, cfg.Timeout+10*time.Second)
	defer cancel()
	// The peer joins the network, says so, and connects when told: the
	// bytes of the join are counted apart from those of the connection.
	var joined struct {
		Joined bool `json:"joined"`
	}
	err = p.NextJSON(cctx, &joined)
	if err == nil && !joined.Joined {
		err = errors.New("no joined line")
	}
	if err == nil {
		c.JoinBytes, err = counters.read(ctx)
	}
	if err == nil {
		err = p.WriteLine("go")
	}
	if err != nil {
		c.Reason = reason(err, p.Stderr())
		p.Wait(cctx)
		return c
	}
	if err := p.NextJSON(cctx, &cl); err != nil {
		c.Reason = reason(err, p.Stderr())
	} else {
		c.OK = true
		c.Path = cl.Path
		c.Relay = cl.Relay
		c.Attempts = cl.Attempts
		c.LookupRPCs, c.LookupBytes = cl.LookupRPC, cl.LookupB
		c.LookupMS, c.DialMS = cl.LookupMS, cl.DialMS
		// The first byte went over the first connection: its RTT was
		// measured when it was made (the pings may follow a hole punch).
		first := cl.RTTMS
		if first == 0 && cl.Ping != nil && len(cl.Ping.RTTsMS) > 0 {
			first = cl.Ping.RTTsMS[0]
		}
		c.FirstByteMS = cl.LookupMS + cl.DialMS + first
		switch {
		case c.Path == "direct":
			d := c.LookupMS + c.DialMS
			c.DirectMS = &d
		case c.Path == "hole-punched" && cl.DirectMS > 0: // after a relayed one
			d := cl.DirectMS
			c.DirectMS = &d
		case c.Path == "hole-punched": // the first connection
			d := c.LookupMS + c.DialMS
			c.DirectMS = &d
		}
	}
	p.Wait(cctx)
	total, _ := counters.read(ctx)
	c.PublicBytes = total - c.JoinBytes
	return c
}

func reason(err error, stderr string) string {
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	first := strings.TrimPrefix(strings.TrimSpace(lines[0]), "rendezvous: connect: ")
	if first == "" {
		first = err.Error()
	}
	if len(first) > 160 {
		first = first[:160] + "..."
	}
	if last := strings.TrimSpace(lines[len(lines)-1]); len(lines) > 1 && last != "" {
		if len(last) > 200 {
			last = last[:200] + "..."
		}
		first += " / " + last
	}
	return first
}

// publicAddr is the address the internet sees for h: its own if public, else
// the WAN address of its outermost router.
func publicAddr(h *natlab.Host) netip.Addr {
	r := h.Router()
	if r == nil {
		return h.Addr()
	}
	for r.Upstream() != nil {
		r = r.Upstream()
	}
	return r.WANAddr()
}

// counting holds nftables counters on the public servers for traffic to and
// from the given addresses.
type counting struct {
	hosts []*natlab.Host
}

const countTable = "matrixcount"

func startCounting(ctx context.Context, lab *natlab.Lab, servers int, addrs []netip.Addr) (*counting, error) {
	set := make([]string, len(addrs))
	for i, a := range addrs {
		set[i] = a.String()
	}
	elems := "{ " + strings.Join(set, ", ") + " }"
	rules := fmt.Sprintf(`table ip %[1]s {
	chain in {
		type filter hook input priority -300;
		ip saddr %[2]s counter
	}
	chain out {
		type filter hook output priority -300;
		ip daddr %[2]s counter
	}
}
`, countTable, elems)
	c := &counting{}
	for i := range servers {
		h := lab.Host(fmt.Sprintf("server%d", i+1))
		cmd := h.Command(ctx, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(rules)
		if out, err := cmd.CombinedOutput(); err != nil {
			c.stop(ctx)
			return nil, fmt.Errorf("matrix: counters: %v: %s", err, out)
		}
		c.hosts = append(c.hosts, h)
	}
	return c, nil
}

func (c *counting) read(ctx context.Context) (int64, error) {
	var total int64
	for _, h := range c.hosts {
		out, err := h.Command(ctx, "nft", "-j", "list", "table", "ip", countTable).Output()
		if err != nil {
			return 0, err
		}
		var doc struct {
			Nftables []map[string]json.RawMessage `json:"nftables"`
		}
		if err := json.Unmarshal(out, &doc); err != nil {
			return 0, err
		}
		for _, obj := range doc.Nftables {
			raw, ok := obj["rule"]
			if !ok {
				continue
			}
			var rule struct {
				Expr []map[string]json.RawMessage `json:"expr"`
			}
			if json.Unmarshal(raw, &rule) != nil {
				continue
			}
			for _, e := range rule.Expr {
				if cr, ok := e["counter"]; ok {
					var cnt struct {
						Bytes int64 `json:"bytes"`
					}
					if json.Unmarshal(cr, &cnt) == nil {
						total += cnt.Bytes
					}
				}
			}
		}
	}
	return total, nil
}

func (c *counting) stop(ctx context.Context) {
	for _, h := range c.hosts {
		h.Command(ctx, "nft", "delete", "table", "ip", countTable).Run()
	}
}
