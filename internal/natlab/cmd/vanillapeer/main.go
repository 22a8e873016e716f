// Command vanillapeer is a peer built from stock go-libp2p and kad-dht the
// way a typical application puts them together. The NAT lab's standby
// measurement (internal/natlab/standby) runs it behind a router beside a
// rendezvous node, to compare what an idle NATed peer costs each way.
//
// "Vanilla" means, here:
//
//   - libp2p.New with its defaults: transports (TCP, QUIC, WebSocket,
//     WebTransport, WebRTC direct), security (TLS, Noise), muxer (yamux),
//     identify, ping, resource manager and connection manager (160/192);
//   - listening on /ip4/0.0.0.0/udp/4001/quic-v1 and /ip4/0.0.0.0/tcp/4001
//     (--listen);
//   - EnableRelay, EnableAutoRelayWithStaticRelays with the bootstrap peers
//     and default autorelay options (so it reserves a slot on every one of
//     them), EnableHolePunching;
//   - no NATPortMap: the gateway is never asked for a port mapping;
//   - kad-dht in client mode under the protocol prefix /p2pos, the
//     rendezvous network's, bootstrapped from the same peers, with the
//     default routing-table refresh (every 10 minutes).
//
// One departure is offered for the lab: --force-private tells the host it
// is behind a NAT (libp2p.ForceReachabilityPrivate). On the internet
// AutoNAT v1 finds that out within about 17 s, and autorelay starts
// reserving only then; in the lab no peer serves AutoNAT v1 and its dial
// policy skips the lab's addresses (a private range), so without the flag
// the peer would never reserve a relay slot. With it, the peer sends no
// AutoNAT probes at all (about one every 15 minutes on the internet).
//
// Two more things go-libp2p does differently in a lab whose internet is a
// private range, neither of which changes what an idle peer sends: autorelay
// keeps the reservations but drops the relay addresses from Addrs(), and
// hole punching never starts. The status line therefore reports the relays
// it holds reservations on (the peers autorelay protects) and the circuit
// addresses through them, besides the relay addresses in Addrs().
//
// Output, one JSON object per line on stdout:
//
//	{"event":"ready","peer_id":...,"addrs":[...]}          once bootstrapped
//	{"event":"status","connections":N,"relays":[...],...}  every --status-every
//	{"event":"connected"|"disconnected","peer":...,"remote_addr":...}
//	{"event":"stopped"}
//
// With --dial ADDRS it is instead a one-shot dialer: a host with go-libp2p's
// defaults plus EnableHolePunching (listening on --listen when given, else
// on an ephemeral QUIC port) connects to the peer at ADDRS (one or more
// addresses of the same peer, /p2p-circuit addresses say, as an application
// would have exchanged them out of band), pings it once over the
// connection, relayed or not, prints
//
//	{"event":"dialed","ok":...,"path":...,"dial_ms":...,"rtt_ms":...}
//
// and exits (status 1 when it failed). With --direct-wait D and a relayed
// first connection it then waits until D after the dial began for a
// connection that is not limited (one DCUtR punched) and reports when it
// came (direct_ms, path "hole-punched", first_path "relayed"), and whether
// each side had the DCUtR protocol: go-libp2p registers it only once the host
// has a public address, so in a network whose internet is a private range
// neither side has it and no punch starts.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p"
	kaddht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// autorelayTag is the connection-manager tag go-libp2p's autorelay protects
// the connections to its relays with (p2p/host/autorelay/relay_finder.go).
const autorelayTag = "autorelay"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "vanillapeer:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("vanillapeer", flag.ContinueOnError)
	listen := fs.String("listen", "/ip4/0.0.0.0/udp/4001/quic-v1,/ip4/0.0.0.0/tcp/4001", "listen on `ADDRS`, comma-separated")
	bootstrap := fs.String("bootstrap", "", "DHT bootstrap peers and static relays: comma-separated /.../p2p/<id> `ADDRS`")
	forcePrivate := fs.Bool("force-private", false, "tell the host it is behind a NAT instead of asking AutoNAT v1 (for labs)")
	every := fs.Duration("status-every", 10*time.Second, "print a status line every `DURATION`")
	dial := fs.String("dial", "", "one-shot: connect to the peer at `ADDRS` (comma-separated, each ending in /p2p/<id>), ping once, print the outcome and exit")
	timeout := fs.Duration("timeout", 30*time.Second, "with --dial: give up on the connection and ping after `DURATION`")
	directWait := fs.Duration("direct-wait", 0, "with --dial: when the connection is relayed, wait until `DURATION` after the dial began for a direct one")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	out := &printer{w: stdout}
	if *dial != "" {
		dialListen := []string{"/ip4/0.0.0.0/udp/0/quic-v1"}
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "listen" {
				dialListen = splitList(*listen)
			}
		})
		return dialOnce(ctx, out, dialConfig{addrs: *dial, listen: dialListen, timeout: *timeout, directWait: *directWait})
	}
	if *every <= 0 {
		return errors.New("--status-every must be positive")
	}
	boot, err := parsePeers(*bootstrap)
	if err != nil {
		return err
	}
	if len(boot) == 0 {
		return errors.New("no --bootstrap peers")
	}
	return serve(ctx, out, splitList(*listen), boot, *forcePrivate, *every)
}

// serve runs the peer until ctx ends.
func serve(ctx context.Context, out *printer, listen []string, boot []peer.AddrInfo, forcePrivate bool, every time.Duration) error {
	opts := []libp2p.Option{
		libp2p.ListenAddrStrings(listen...),
		libp2p.EnableRelay(),
		libp2p.EnableAutoRelayWithStaticRelays(boot),
		libp2p.EnableHolePunching(),
	}
	if forcePrivate {
		opts = append(opts, libp2p.ForceReachabilityPrivate())
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return err
	}
	defer h.Close()

	// Reachability as AutoNAT (or --force-private) reports it; the
	// subscription is stateful, so the current value comes first.
	sub, err := h.EventBus().Subscribe(new(event.EvtLocalReachabilityChanged))
	if err != nil {
		return err
	}
	var mu sync.Mutex
	reach := network.ReachabilityUnknown // guarded by mu
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range sub.Out() {
			mu.Lock()
			reach = e.(event.EvtLocalReachabilityChanged).Reachability
			mu.Unlock()
		}
	}()
	defer func() {
		sub.Close() // ends the goroutine above
		<-done
	}()

	h.Network().Notify(&network.NotifyBundle{
		ConnectedF: func(_ network.Network, c network.Conn) {
			out.write(connLine{Event: "connected", Time: time.Now().UTC(), Peer: c.RemotePeer().String(),
				RemoteAddr: c.RemoteMultiaddr().String(), Limited: c.Stat().Limited})
		},
		DisconnectedF: func(_ network.Network, c network.Conn) {
			out.write(connLine{Event: "disconnected", Time: time.Now().UTC(), Peer: c.RemotePeer().String(),
				RemoteAddr: c.RemoteMultiaddr().String(), Limited: c.Stat().Limited})
		},
	})

	d, err := kaddht.New(h, kaddht.Mode(kaddht.ModeClient), kaddht.ProtocolPrefix("/p2pos"), kaddht.BootstrapPeers(boot...))
	if err != nil {
		return err
	}
	defer d.Close()
	// As applications usually do: connect to the bootstrap peers, then
	// bootstrap the DHT.
	connected := 0
	for _, ai := range boot {
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		if err := h.Connect(cctx, ai); err == nil {
			connected++
		}
		cancel()
	}
	if connected == 0 {
		return errors.New("no bootstrap peer reachable")
	}
	if err := d.Bootstrap(ctx); err != nil {
		return err
	}
	out.write(readyLine{Event: "ready", Time: time.Now().UTC(), PeerID: h.ID().String(), Addrs: addrStrings(h.Addrs())})

	t := time.NewTicker(every)
	defer t.Stop()
	for {
		mu.Lock()
		r := reach
		mu.Unlock()
		out.write(status(h, d, r))
		select {
		case <-ctx.Done():
			out.write(struct {
				Event string    `json:"event"`
				Time  time.Time `json:"time"`
			}{"stopped", time.Now().UTC()})
			return nil
		case <-t.C:
		}
	}
}

type readyLine struct {
	Event  string    `json:"event"`
	Time   time.Time `json:"time"`
	PeerID string    `json:"peer_id"`
	Addrs  []string  `json:"addrs"`
}

type connLine struct {
	Event      string    `json:"event"`
	Time       time.Time `json:"time"`
	Peer       string    `json:"peer"`
	RemoteAddr string    `json:"remote_addr"`
	Limited    bool      `json:"limited,omitempty"`
}

// statusLine is what the peer holds.
type statusLine struct {
	Event        string    `json:"event"`
	Time         time.Time `json:"time"`
	Reachability string    `json:"reachability"`
	Connections  int       `json:"connections"`
	Peers        int       `json:"peers"`
	RoutingTable int       `json:"routing_table"`
	// Relays are the peers autorelay holds reservations on.
	Relays []string `json:"relays"`
	// RelayAddrs are the relay addresses among the host's Addrs().
	RelayAddrs []string `json:"relay_addrs"`
	// CircuitAddrs are addresses through the relays held, built from the
	// relays' known addresses (loopback left out).
	CircuitAddrs []string `json:"circuit_addrs"`
}

func status(h host.Host, d *kaddht.IpfsDHT, r network.Reachability) statusLine {
	st := statusLine{
		Event: "status", Time: time.Now().UTC(), Reachability: r.String(),
		Connections: len(h.Network().Conns()), Peers: len(h.Network().Peers()),
		RoutingTable: d.RoutingTable().Size(),
		Relays:       []string{}, RelayAddrs: []string{}, CircuitAddrs: []string{},
	}
	for _, p := range h.Network().Peers() {
		if !h.ConnManager().IsProtected(p, autorelayTag) {
			continue
		}
		st.Relays = append(st.Relays, p.String())
		for _, a := range h.Peerstore().Addrs(p) {
			if manet.IsIPLoopback(a) || manet.IsIPUnspecified(a) || isCircuit(a) {
				continue
			}
			st.CircuitAddrs = append(st.CircuitAddrs, a.String()+"/p2p/"+p.String()+"/p2p-circuit")
		}
	}
	for _, a := range h.Addrs() {
		if isCircuit(a) {
			st.RelayAddrs = append(st.RelayAddrs, a.String())
		}
	}
	slices.Sort(st.Relays)
	slices.Sort(st.CircuitAddrs)
	return st
}

func isCircuit(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

// dialLine is the outcome of --dial. Times are from the start of the dial.
type dialLine struct {
	Event  string `json:"event"`
	OK     bool   `json:"ok"`
	PeerID string `json:"peer_id"`
	// Path is "direct", "relayed", or "hole-punched" when a relayed
	// connection (FirstPath) was followed by a direct one within
	// --direct-wait.
	Path       string  `json:"path,omitempty"`
	FirstPath  string  `json:"first_path,omitempty"`
	RemoteAddr string  `json:"remote_addr,omitempty"`
	DialMS     float64 `json:"dial_ms,omitempty"`
	RTTMS      float64 `json:"rtt_ms,omitempty"`
	DirectMS   float64 `json:"direct_ms,omitempty"`
	// PeerDCUtR and OwnDCUtR tell whether the peer advertised the DCUtR
	// protocol and whether this host had registered it, when the dialer
	// was done.
	PeerDCUtR bool `json:"peer_dcutr"`
	OwnDCUtR  bool `json:"own_dcutr"`
	// Peers is how many peers the host was connected to when done: the
	// target and the relays it dialed.
	Peers int    `json:"peers"`
	Error string `json:"error,omitempty"`
}

// dialConfig is what --dial does.
type dialConfig struct {
	addrs      string   // of one peer, comma-separated
	listen     []string // the dialing host's listen addresses
	timeout    time.Duration
	directWait time.Duration
}

// dialOnce connects to a peer from a throwaway host with go-libp2p's
// defaults and hole punching, pings the peer once, and with a direct wait
// waits for a direct connection if the first was relayed.
func dialOnce(ctx context.Context, out *printer, cfg dialConfig) error {
	infos, err := parsePeers(cfg.addrs)
	if err != nil {
		return fmt.Errorf("--dial: %w", err)
	}
	if len(infos) != 1 {
		return fmt.Errorf("--dial: addresses of %d peers, want one", len(infos))
	}
	ai := infos[0]
	res := dialLine{Event: "dialed", PeerID: ai.ID.String()}
	err = func() error {
		h, err := libp2p.New(libp2p.ListenAddrStrings(cfg.listen...), libp2p.EnableHolePunching())
		if err != nil {
			return err
		}
		defer h.Close()
		defer func() {
			res.OwnDCUtR = slices.Contains(h.Mux().Protocols(), holepunch.Protocol)
			ps, _ := h.Peerstore().SupportsProtocols(ai.ID, holepunch.Protocol)
			res.PeerDCUtR = len(ps) > 0
			res.Peers = len(h.Network().Peers())
		}()
		// Signalled when a connection to the peer that is not limited
		// appears, whoever opened it.
		type directConn struct {
			c  network.Conn
			at time.Time
		}
		direct := make(chan directConn, 1)
		h.Network().Notify(&network.NotifyBundle{
			ConnectedF: func(_ network.Network, c network.Conn) {
				if c.RemotePeer() != ai.ID || c.Stat().Limited || isCircuit(c.RemoteMultiaddr()) {
					return
				}
				select {
				case direct <- directConn{c, time.Now()}:
				default:
				}
			},
		})

		start := time.Now()
		dctx, cancel := context.WithTimeout(ctx, cfg.timeout)
		defer cancel()
		if err := h.Connect(dctx, ai); err != nil {
			return err
		}
		res.DialMS = msSince(start)
		conns := h.Network().ConnsToPeer(ai.ID)
		if len(conns) == 0 {
			return errors.New("connected, then the connection closed")
		}
		relayed := conns[0].Stat().Limited || isCircuit(conns[0].RemoteMultiaddr())
		res.Path = "direct"
		if relayed {
			res.Path = "relayed"
		}
		res.RemoteAddr = conns[0].RemoteMultiaddr().String()
		pctx, pcancel := context.WithCancel(network.WithAllowLimitedConn(dctx, "ping"))
		r, ok := <-ping.Ping(pctx, h, ai.ID)
		pcancel()
		switch {
		case !ok:
			return errors.New("ping: no answer")
		case r.Error != nil:
			return fmt.Errorf("ping: %w", r.Error)
		}
		res.RTTMS = float64(r.RTT.Microseconds()) / 1000
		if !relayed || cfg.directWait <= 0 {
			return nil
		}
		wctx, wcancel := context.WithDeadline(ctx, start.Add(cfg.directWait))
		defer wcancel()
		select {
		case d := <-direct:
			res.DirectMS = float64(d.at.Sub(start).Microseconds()) / 1000
			res.FirstPath, res.Path, res.RemoteAddr = "relayed", "hole-punched", d.c.RemoteMultiaddr().String()
		case <-wctx.Done():
		}
		return nil
	}()
	if err != nil {
		res.Error = err.Error()
	} else {
		res.OK = true
	}
	out.write(res)
	return err
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }

// printer writes JSON lines; it is safe for concurrent use.
type printer struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *printer) write(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.w.Write(append(b, '\n'))
}

func parsePeers(s string) ([]peer.AddrInfo, error) {
	var addrs []ma.Multiaddr
	for _, f := range splitList(s) {
		a, err := ma.NewMultiaddr(f)
		if err != nil {
			return nil, fmt.Errorf("--bootstrap %q: %w", f, err)
		}
		addrs = append(addrs, a)
	}
	return peer.AddrInfosFromP2pAddrs(addrs...)
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func addrStrings(addrs []ma.Multiaddr) []string {
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, a.String())
	}
	return out
}
