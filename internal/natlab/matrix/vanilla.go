package matrix

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/p2pos/rendezvous/internal/natlab"
)

// The vanilla side of a cell is stock go-libp2p with defaults, as the
// vanillapeer command builds it: hole punching on, autorelay with the lab's
// public servers as static relays, kad-dht in client mode bootstrapped from
// them.
//
// A vanilla target runs on its own host behind its own router of the side's
// kind (so it never shares a NAT mapping table with this library's target),
// listening on the cell's transport. Behind a router it runs with
// --force-private, since nothing in the lab answers AutoNAT v1, and is ready
// once it holds a reservation on every server. On the public side it runs
// without, and is ready once bootstrapped.
//
// Vanilla libp2p cannot look a NATed peer up by its ID: client-mode peers
// publish nothing. The dialer is therefore given, as an application would
// exchange out of band, the target's circuit addresses through the servers
// it holds reservations on (behind a router), or its listen address (public).
// It runs on the cell's source host, right after this library's trial, and
// reports the path, the dial time and the first ping's round trip, and
// whether a direct connection came within directWait of the dial's start.
// Bytes through the public nodes are counted as for this library's cells,
// from the dialer's start to its exit, so they include its handshake with
// the relay (it has no join to count apart).

// vanillaRole names the hosts and routers of vanilla targets.
const vanillaRole = "vto"

// vanillaTarget is a vanillapeer serving behind a side's router.
type vanillaTarget struct {
	proc *natlab.Proc
	id   string
	err  error // why it could not start
	// public: dialers get the listen address, not circuit addresses.
	public  bool
	servers []netip.Addr
	done    chan struct{} // closed when follow returns

	mu    sync.Mutex
	addrs []string // guarded by mu; addresses a dialer is given, without /p2p/<id>
}

// vanillaLine is any line vanillapeer serve prints.
type vanillaLine struct {
	Event        string   `json:"event"`
	PeerID       string   `json:"peer_id"`
	Addrs        []string `json:"addrs"`
	Relays       []string `json:"relays"`
	CircuitAddrs []string `json:"circuit_addrs"`
}

// vanillaReadyWait bounds a vanilla target's start: bootstrap and relay
// reservations.
const vanillaReadyWait = 60 * time.Second

// startVanillaTarget starts side's vanilla target and waits until it can
// be dialed. Its error, if any, is in the target's err.
func startVanillaTarget(ctx context.Context, lab *natlab.Lab, cfg Config, side, transport string, boot []string) *vanillaTarget {
	h := lab.Host(hostName(side, vanillaRole))
	t := &vanillaTarget{public: side == Public, done: make(chan struct{})}
	for i := range cfg.Servers {
		t.servers = append(t.servers, lab.Host(fmt.Sprintf("server%d", i+1)).Addr())
	}
	args := []string{"--listen", listenAddr(transport), "--bootstrap", strings.Join(boot, ","), "--status-every", "1s"}
	if !t.public {
		args = append(args, "--force-private")
	}
	p, err := h.Start(ctx, cfg.VanillaBinary, args...)
	if err != nil {
		t.err = err
		close(t.done)
		return t
	}
	t.proc = p
	wctx, cancel := context.WithTimeout(ctx, vanillaReadyWait)
	defer cancel()
	relays := 0
	for {
		var l vanillaLine
		if err := p.NextJSON(wctx, &l); err != nil {
			if relays > 0 && errors.Is(err, context.DeadlineExceeded) {
				cfg.Logf("%s: vanilla target holds %d of %d relays; going on", side, relays, cfg.Servers)
				break
			}
			t.err = fmt.Errorf("vanilla target not ready: %w", err)
			close(t.done)
			return t
		}
		t.apply(l, h.Addr())
		if l.Event == "status" {
			relays = len(l.Relays)
		}
		t.mu.Lock()
		n := len(t.addrs)
		t.mu.Unlock()
		if t.id != "" && n > 0 && (t.public || relays >= cfg.Servers) {
			break
		}
	}
	go t.follow(ctx, h.Addr())
	return t
}

// apply takes what a line says about the target's addresses.
func (t *vanillaTarget) apply(l vanillaLine, own netip.Addr) {
	var addrs []string
	switch {
	case l.Event == "ready":
		t.id = l.PeerID
		if !t.public {
			return
		}
		for _, a := range l.Addrs {
			if ip, ok := ipOf(a); ok && ip == own {
				addrs = append(addrs, a)
			}
		}
	case l.Event == "status" && !t.public:
		for _, a := range l.CircuitAddrs {
			if ip, ok := ipOf(a); ok && slices.Contains(t.servers, ip) {
				addrs = append(addrs, a)
			}
		}
	default:
		return
	}
	t.mu.Lock()
	t.addrs = addrs
	t.mu.Unlock()
}

// follow keeps the target's addresses up to date until it exits.
func (t *vanillaTarget) follow(ctx context.Context, own netip.Addr) {
	defer close(t.done)
	for {
		var l vanillaLine
		if err := t.proc.NextJSON(ctx, &l); err != nil {
			return
		}
		t.apply(l, own)
	}
}

// dialAddrs are the addresses a dialer is given, each ending in /p2p/<id>.
func (t *vanillaTarget) dialAddrs() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, len(t.addrs))
	for _, a := range t.addrs {
		out = append(out, a+"/p2p/"+t.id)
	}
	return out
}

// stop stops the target and waits for follow to return.
func (t *vanillaTarget) stop() {
	if t.proc != nil {
		t.proc.Stop(5 * time.Second)
	}
	<-t.done
}

// ipOf returns a multiaddr's IPv4 or IPv6 address.
func ipOf(addr string) (netip.Addr, bool) {
	a, err := ma.NewMultiaddr(addr)
	if err != nil {
		return netip.Addr{}, false
	}
	ip, err := manet.ToIP(a)
	if err != nil {
		return netip.Addr{}, false
	}
	ipa, ok := netip.AddrFromSlice(ip)
	return ipa.Unmap(), ok
}

// dialedLine is what vanillapeer --dial prints.
type dialedLine struct {
	Event      string  `json:"event"`
	OK         bool    `json:"ok"`
	Path       string  `json:"path"`
	RemoteAddr string  `json:"remote_addr"`
	DialMS     float64 `json:"dial_ms"`
	RTTMS      float64 `json:"rtt_ms"`
	DirectMS   float64 `json:"direct_ms"`
	PeerDCUtR  bool    `json:"peer_dcutr"`
	Peers      int     `json:"peers"`
	Error      string  `json:"error"`
}

// runVanillaCell dials side to's vanilla target from side from's source
// host with a fresh vanillapeer.
func runVanillaCell(ctx context.Context, lab *natlab.Lab, cfg Config, transport, from, to string, t *vanillaTarget) Cell {
	c := Cell{Impl: Vanilla, From: from, To: to, Transport: transport}
	if t.err != nil {
		c.Reason = fmt.Sprintf("target: %v", t.err)
		return c
	}
	addrs := t.dialAddrs()
	if len(addrs) == 0 {
		c.Reason = "target: no address to give the dialer (no relay held)"
		return c
	}
	h := lab.Host(hostName(from, "from"))
	peers := []netip.Addr{publicAddr(h), publicAddr(lab.Host(hostName(to, vanillaRole)))}
	counters, err := startCounting(ctx, lab, cfg.Servers, peers)
	if err != nil {
		c.Reason = err.Error()
		return c
	}
	defer counters.stop(ctx)

	p, err := h.Start(ctx, cfg.VanillaBinary, "--dial", strings.Join(addrs, ","), "--listen", listenAddr(transport),
		"--timeout", cfg.Timeout.String(), "--direct-wait", directWait.String())
	if err != nil {
		c.Reason = err.Error()
		return c
	}
	defer p.Stop(5 * time.Second)
	cctx, cancel := context.WithTimeout(ctx, cfg.Timeout+directWait+10*time.Second)
	defer cancel()
	var dl dialedLine
	for err == nil && dl.Event != "dialed" {
		err = p.NextJSON(cctx, &dl)
	}
	switch {
	case err != nil:
		c.Reason = reason(err, p.Stderr())
	case !dl.OK:
		c.Reason = dl.Error
	default:
		c.OK, c.Path, c.DialMS = true, dl.Path, dl.DialMS
		c.FirstByteMS = dl.DialMS + dl.RTTMS
		c.Relay = relayOf(dl.RemoteAddr)
		switch dl.Path {
		case "direct":
			d := dl.DialMS
			c.DirectMS = &d
		case "hole-punched":
			d := dl.DirectMS
			c.DirectMS = &d
		}
	}
	if err == nil {
		dcutr := dl.PeerDCUtR
		c.PeerDCUtR = &dcutr
		cfg.Logf("%s %s -> %s vanilla: the dialer ended connected to %d peers", transport, from, to, dl.Peers)
	}
	p.Wait(cctx)
	c.PublicBytes, _ = counters.read(ctx)
	return c
}

// relayOf returns the relay's peer ID in a circuit address, "" for others.
func relayOf(addr string) string {
	a, err := ma.NewMultiaddr(addr)
	if err != nil {
		return ""
	}
	relay := ""
	for _, c := range a {
		switch c.Protocol().Code {
		case ma.P_P2P:
			relay = c.Value()
		case ma.P_CIRCUIT:
			return relay
		}
	}
	return ""
}

// vanillaNote sums up, in one line, what became of the vanilla cells'
// relayed connections among cells, and why, when none could be hole-punched.
func vanillaNote(cells []Cell) string {
	relayed, punched, advertised := 0, 0, 0
	for _, c := range cells {
		if c.Impl != Vanilla || !c.OK || (c.Path != "relayed" && c.Path != "hole-punched") {
			continue
		}
		relayed++
		if c.Path == "hole-punched" {
			punched++
		}
		if c.PeerDCUtR != nil && *c.PeerDCUtR {
			advertised++
		}
	}
	if relayed == 0 {
		return ""
	}
	note := fmt.Sprintf("Vanilla hole punching: %d of %d relayed connections became direct within %v; the target advertised DCUtR on %d.",
		punched, relayed, directWait, advertised)
	if advertised == 0 {
		note += fmt.Sprintf(" go-libp2p registers DCUtR only once the host has a public address, and counts the lab's internet (%s) as private, so no punch could start.",
			natlab.InternetPrefix())
	}
	return note
}
