// Package standby measures, in the NAT lab, what an idle NATed peer costs:
// every byte that crosses its router's WAN link while it holds its relays
// and its place in the DHT and the application sends nothing. It runs a
// rendezvous node and a vanilla go-libp2p peer (internal/natlab/cmd/vanillapeer)
// side by side, in the same lab, so that the two can be compared.
//
// The lab has public hosts running `rendezvous node --mode public` (DHT
// servers and relays) and, for every UDP binding timeout asked for, two
// port-restricted routers with that timeout, each holding exactly one peer
// so that the router's counters are the peer's: a rendezvous node left on
// --mode auto, and a vanilla peer. A last public host, the prober, checks
// at the end that each peer can still be reached.
//
// A peer is measured once it has settled: a rendezvous node when its
// record is published with the relays it holds (relay.DefaultReservations
// of them) and its NAT survey is done; a vanilla peer when it holds a
// reservation on every public node (its static relays) and its DHT routing
// table is not empty. A peer that has not settled within Config.Settle is
// measured anyway, and the row says what it lacked. Then the window opens
// for every peer at once: the routers' nftables counters and conntrack
// tables are read, the window waits Config.Duration, and they are read
// again. During the window the peers' own reports are watched for lost
// connections: a rendezvous node's relay and reachability events, a
// vanilla peer's libp2p disconnect notifications. "Flows kept" compares the
// router's conntrack entries from the peer's libp2p port to the public
// nodes' (its standing connections; every lab node uses port 4001) at the
// start and at the end of the window: an entry with the same tuple and
// conntrack id is a mapping the router never lost.
//
// The figures are measured and printed, never asserted.
package standby

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/p2pos/rendezvous/internal/natlab"
	"github.com/p2pos/rendezvous/relay"
)

// Implementations measured.
const (
	Rendezvous = "rendezvous"
	Vanilla    = "vanilla go-libp2p"
)

// serverPort is the port every lab node listens on (QUIC), public or not;
// standing connections between them run from this port to this port.
const serverPort = 4001

// Config says what to run. The zero value of each field means its default.
type Config struct {
	// RendezvousBinary is the rendezvous command; VanillaBinary the
	// vanillapeer command. Both are required.
	RendezvousBinary string
	VanillaBinary    string
	// Duration is the idle window. Default one hour.
	Duration time.Duration
	// Settle bounds the wait for a peer to settle before the window.
	// Default 10 minutes.
	Settle time.Duration
	// UDPTimeouts are the routers' UDP binding timeouts, one pair of
	// routers each, whole seconds. Default DefaultUDPTimeouts.
	UDPTimeouts []time.Duration
	// TCPTimeout is the routers' established-TCP timeout. Default 30 min.
	TCPTimeout time.Duration
	// Servers is the number of public nodes. Default 3.
	Servers int
	// Logf, if set, reports progress.
	Logf func(format string, args ...any)
}

// DefaultUDPTimeouts are the routers' UDP timeouts unless Config says
// otherwise: a short one, as some home routers have, and a common one.
func DefaultUDPTimeouts() []time.Duration {
	return []time.Duration{30 * time.Second, 120 * time.Second}
}

func (c *Config) setDefaults() error {
	if c.RendezvousBinary == "" || c.VanillaBinary == "" {
		return errors.New("standby: both binaries are required")
	}
	if c.Duration == 0 {
		c.Duration = time.Hour
	}
	if c.Settle == 0 {
		c.Settle = 10 * time.Minute
	}
	if len(c.UDPTimeouts) == 0 {
		c.UDPTimeouts = DefaultUDPTimeouts()
	}
	if c.TCPTimeout == 0 {
		c.TCPTimeout = 30 * time.Minute
	}
	if c.Servers == 0 {
		c.Servers = 3
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	switch {
	case c.Duration < 0 || c.Settle < 0 || c.TCPTimeout < 0 || c.Servers < 0:
		return errors.New("standby: negative duration or count")
	case c.Servers > 20:
		return errors.New("standby: at most 20 public nodes")
	}
	seen := map[time.Duration]bool{}
	for _, d := range c.UDPTimeouts {
		if d < time.Second || d%time.Second != 0 {
			return fmt.Errorf("standby: UDP timeout %v: want whole seconds", d)
		}
		if seen[d] {
			return fmt.Errorf("standby: UDP timeout %v given twice", d)
		}
		seen[d] = true
	}
	if c.TCPTimeout%time.Second != 0 {
		return fmt.Errorf("standby: TCP timeout %v: want whole seconds", c.TCPTimeout)
	}
	return nil
}

// Row is one peer's measurement.
type Row struct {
	Implementation string  `json:"implementation"`
	Host           string  `json:"host"`
	PeerID         string  `json:"peer_id"`
	UDPTimeoutS    float64 `json:"udp_timeout_s"`
	TCPTimeoutS    float64 `json:"tcp_timeout_s"`

	// Settled is false when Config.Settle ran out first; Unsettled then
	// says what the peer lacked. SettleS is the time from its start to
	// settling (or to the limit).
	Settled   bool    `json:"settled"`
	SettleS   float64 `json:"settle_s"`
	Unsettled string  `json:"unsettled,omitempty"`

	// The window, and what crossed the router's WAN link during it.
	WindowS    float64 `json:"window_s"`
	InBytes    uint64  `json:"in_bytes"`
	OutBytes   uint64  `json:"out_bytes"`
	InPackets  uint64  `json:"in_packets"`
	OutPackets uint64  `json:"out_packets"`
	// Per hour: the counts scaled by 3600 s / WindowS.
	InBytesPerHour  float64 `json:"in_bytes_per_hour"`
	OutBytesPerHour float64 `json:"out_bytes_per_hour"`
	PacketsPerHour  float64 `json:"packets_per_hour"`

	// LostConnections counts standing connections lost in the window:
	// relay reservations lost for a rendezvous node (its relay events),
	// connections closed for a vanilla peer (libp2p's disconnect
	// notifications).
	LostConnections int `json:"lost_connections"`
	// ReachabilityChanges counts a rendezvous node's reachability events
	// in the window.
	ReachabilityChanges int `json:"reachability_changes"`
	// Republishes counts a rendezvous node's record publishes in the
	// window.
	Republishes int `json:"republishes"`
	// RelaysStart and RelaysEnd are the relays (peer IDs) held when the
	// window opened and closed.
	RelaysStart []string `json:"relays_start"`
	RelaysEnd   []string `json:"relays_end"`
	RelaysSame  bool     `json:"relays_same"`
	// Events are what the peer reported during the window.
	Events []string `json:"events,omitempty"`
	// Exited says why the peer's program stopped before the end, if it
	// did.
	Exited string `json:"exited,omitempty"`

	// FlowsStart counts the router's conntrack entries from the peer's
	// libp2p port to the public nodes' when the window opened (its
	// standing connections); FlowsKept those still there, same tuple and
	// same conntrack id, when it closed.
	FlowsStart int `json:"flows_start"`
	FlowsKept  int `json:"flows_kept"`
	// FlowsLost describes the others: "udp SRC DST gone" or "replaced"
	// (same tuple, new conntrack entry), with the seconds they had left at
	// the start (little left: the flow was idle already). FlowsNew are
	// standing flows at the end that were not there at the start.
	FlowsLost  []string `json:"flows_lost,omitempty"`
	FlowsNew   []string `json:"flows_new,omitempty"`
	FlowsError string   `json:"flows_error,omitempty"`

	// Reachable says whether the prober reached the peer after the
	// window: `rendezvous connect` by peer ID for a rendezvous node, a dial
	// through one of its relays for a vanilla peer.
	Reachable  bool   `json:"reachable"`
	Path       string `json:"path,omitempty"`
	ReachError string `json:"reach_error,omitempty"`
}

// Result is a whole run.
type Result struct {
	Servers   int       `json:"servers"`
	DurationS float64   `json:"duration_s"`
	SettleS   float64   `json:"settle_limit_s"`
	Started   time.Time `json:"started"`
	Seconds   float64   `json:"seconds"`
	Rows      []Row     `json:"rows"`
}

// labArgs are the flags every rendezvous node gets: the lab's internet is
// public, and nodes listen on QUIC and TCP port serverPort (a private node
// holds its relays over TCP).
func labArgs() []string {
	return []string{"--public-ranges", natlab.InternetPrefix().String(),
		"--listen", fmt.Sprintf("/ip4/0.0.0.0/udp/%d/quic-v1,/ip4/0.0.0.0/tcp/%d", serverPort, serverPort)}
}

const proberHost = "prober"

func serverName(i int) string { return fmt.Sprintf("server%d", i+1) }

// peerName names a peer's host; its router is "r-" + the same.
func peerName(impl string, udp time.Duration) string {
	short := "rdv"
	if impl == Vanilla {
		short = "van"
	}
	return fmt.Sprintf("%s-%d", short, int(udp/time.Second))
}

func spec(cfg Config) natlab.Spec {
	var s natlab.Spec
	for i := range cfg.Servers {
		s.Hosts = append(s.Hosts, natlab.HostSpec{Name: serverName(i)})
	}
	s.Hosts = append(s.Hosts, natlab.HostSpec{Name: proberHost})
	for _, udp := range cfg.UDPTimeouts {
		for _, impl := range []string{Rendezvous, Vanilla} {
			name := peerName(impl, udp)
			s.Routers = append(s.Routers, natlab.RouterSpec{Name: "r-" + name, Kind: natlab.PortRestricted,
				UDPTimeout: udp, TCPTimeout: cfg.TCPTimeout})
			s.Hosts = append(s.Hosts, natlab.HostSpec{Name: name, Router: "r-" + name})
		}
	}
	return s
}

// Run builds the lab, runs the measurement and tears the lab down, also
// when ctx ends early.
func Run(ctx context.Context, cfg Config) (_ *Result, err error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	res := &Result{Servers: cfg.Servers, DurationS: cfg.Duration.Seconds(), SettleS: cfg.Settle.Seconds(), Started: time.Now()}
	lab, err := natlab.New(ctx, spec(cfg), natlab.WithLogf(cfg.Logf))
	if err != nil {
		return nil, fmt.Errorf("standby: lab: %w", err)
	}
	defer func() { err = errors.Join(err, lab.Close()) }()

	// Every goroutine below reads a program's output until runCtx ends.
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()

	boot, servers, err := startServers(runCtx, lab, cfg, &wg)
	if err != nil {
		return nil, err
	}
	cfg.Logf("%d public nodes up", cfg.Servers)

	var peers []*peer
	for _, udp := range cfg.UDPTimeouts {
		for _, impl := range []string{Rendezvous, Vanilla} {
			p, err := startPeer(runCtx, lab, cfg, impl, udp, boot, &wg)
			if err != nil {
				return nil, err
			}
			peers = append(peers, p)
		}
	}
	defer func() {
		for _, p := range peers {
			p.proc.Stop(5 * time.Second)
		}
	}()

	// Settle: each peer gets cfg.Settle from its own start.
	for _, p := range peers {
		ok, missing, err := p.waitSettled(runCtx, p.started.Add(cfg.Settle))
		if err != nil {
			return nil, err
		}
		if ok {
			cfg.Logf("%s settled in %v", p.name, p.settleTime().Round(time.Second))
		} else {
			cfg.Logf("%s not settled after %v: %s", p.name, cfg.Settle, missing)
		}
	}

	// The window.
	starts := make([]snapshot, len(peers))
	for i, p := range peers {
		if starts[i], err = p.snapshot(runCtx, true); err != nil {
			return nil, err
		}
	}
	cfg.Logf("window open for %v", cfg.Duration)
	t := time.NewTimer(cfg.Duration)
	select {
	case <-t.C:
	case <-runCtx.Done():
		t.Stop()
		return nil, runCtx.Err()
	}
	ends := make([]snapshot, len(peers))
	for i, p := range peers {
		if ends[i], err = p.snapshot(runCtx, false); err != nil {
			return nil, err
		}
	}
	cfg.Logf("window closed")

	for i, p := range peers {
		row := p.row(cfg, starts[i], ends[i], servers)
		reachable(runCtx, lab, cfg, p, boot, servers, &row)
		cfg.Logf("%s: %.0f B/h in, %.0f B/h out, lost %d, reachable %v %s", p.name,
			row.InBytesPerHour, row.OutBytesPerHour, row.LostConnections, row.Reachable, row.ReachError)
		res.Rows = append(res.Rows, row)
	}
	res.Seconds = time.Since(res.Started).Seconds()
	return res, nil
}

// startServers runs the public nodes, each bootstrapping from the ones
// before, and returns their bootstrap addresses and host addresses.
func startServers(ctx context.Context, lab *natlab.Lab, cfg Config, wg *sync.WaitGroup) ([]string, []netip.Addr, error) {
	var boot []string
	var addrs []netip.Addr
	for i := range cfg.Servers {
		h := lab.Host(serverName(i))
		args := append([]string{"node", "--json", "--mode", "public"}, labArgs()...)
		if len(boot) > 0 {
			args = append(args, "--bootstrap", strings.Join(boot, ","))
		}
		p, err := h.Start(ctx, cfg.RendezvousBinary, args...)
		if err != nil {
			return nil, nil, err
		}
		var rl struct {
			PeerID string `json:"peer_id"`
		}
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = p.NextJSON(sctx, &rl)
		cancel()
		if err != nil {
			p.Stop(5 * time.Second)
			return nil, nil, fmt.Errorf("standby: %s: %w", h.Name(), err)
		}
		// Its later lines are of no interest, but must be read.
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer p.Stop(5 * time.Second)
			for {
				if _, err := p.Next(ctx); err != nil {
					return
				}
			}
		}()
		boot = append(boot, fmt.Sprintf("/ip4/%s/udp/%d/quic-v1/p2p/%s", h.Addr(), serverPort, rl.PeerID))
		addrs = append(addrs, h.Addr())
	}
	return boot, addrs, nil
}

// startPeer starts the peer of impl behind its router, and the goroutine
// that follows its output.
func startPeer(ctx context.Context, lab *natlab.Lab, cfg Config, impl string, udp time.Duration, boot []string, wg *sync.WaitGroup) (*peer, error) {
	name := peerName(impl, udp)
	h := lab.Host(name)
	p := &peer{name: name, impl: impl, udp: udp, host: h, router: lab.Router("r-" + name), wake: make(chan struct{})}
	var bin string
	var args []string
	switch impl {
	case Rendezvous:
		bin = cfg.RendezvousBinary
		args = append([]string{"node", "--json", "--mode", "auto", "--no-portmap", "--bootstrap", strings.Join(boot, ",")}, labArgs()...)
		p.t = &rdvTracker{want: min(relay.DefaultReservations, cfg.Servers)}
	case Vanilla:
		bin = cfg.VanillaBinary
		args = []string{"--bootstrap", strings.Join(boot, ","), "--force-private", "--status-every", "5s"}
		p.t = &vanillaTracker{want: cfg.Servers}
	}
	p.started = time.Now()
	proc, err := h.Start(ctx, bin, args...)
	if err != nil {
		return nil, err
	}
	p.proc = proc
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.follow(ctx)
	}()
	return p, nil
}

// row computes a peer's measurement from the window's two snapshots.
func (p *peer) row(cfg Config, start, end snapshot, servers []netip.Addr) Row {
	r := Row{
		Implementation: p.impl, Host: p.name,
		UDPTimeoutS: p.udp.Seconds(), TCPTimeoutS: cfg.TCPTimeout.Seconds(),
	}
	p.mu.Lock()
	r.PeerID = p.t.peerID()
	r.Settled = !p.settledAt.IsZero()
	if r.Settled {
		r.SettleS = p.settledAt.Sub(p.started).Seconds()
	} else {
		r.SettleS = cfg.Settle.Seconds()
		_, r.Unsettled = p.t.settled()
	}
	w := p.t.window()
	if p.exitErr != nil {
		r.Exited = p.exitErr.Error()
	}
	p.mu.Unlock()

	win := end.at.Sub(start.at)
	r.WindowS = win.Seconds()
	r.InBytes = end.counters.InBytes - start.counters.InBytes
	r.OutBytes = end.counters.OutBytes - start.counters.OutBytes
	r.InPackets = end.counters.InPackets - start.counters.InPackets
	r.OutPackets = end.counters.OutPackets - start.counters.OutPackets
	if win > 0 {
		scale := float64(time.Hour) / float64(win)
		r.InBytesPerHour = float64(r.InBytes) * scale
		r.OutBytesPerHour = float64(r.OutBytes) * scale
		r.PacketsPerHour = float64(r.InPackets+r.OutPackets) * scale
	}
	r.LostConnections, r.ReachabilityChanges, r.Republishes = w.lost, w.reachChanges, w.republishes
	r.RelaysStart, r.RelaysEnd = nonNil(w.relaysStart), nonNil(w.relaysEnd)
	r.RelaysSame = slices.Equal(r.RelaysStart, r.RelaysEnd)
	r.Events = w.events

	switch {
	case start.flowsErr != nil:
		r.FlowsError = start.flowsErr.Error()
	case end.flowsErr != nil:
		r.FlowsError = end.flowsErr.Error()
	default:
		c := compareFlows(start.flows, end.flows, servers, serverPort)
		r.FlowsStart, r.FlowsKept, r.FlowsLost, r.FlowsNew = c.start, c.kept, c.lost, c.added
	}
	return r
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
