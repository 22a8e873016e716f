package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/p2pos/rendezvous"
	"github.com/p2pos/rendezvous/dht"
	"github.com/p2pos/rendezvous/internal/testnet"
	"github.com/p2pos/rendezvous/relay"
)

const demoHelp = `
Run a small rendezvous network inside this process, on loopback, and show it
at work, step by step with timings:

  network   public peers (DHT servers and relays) and private peers (forced
            private, as behind a NAT: DHT clients holding relay reservations)
  publish   every peer has published its signed address record
  lookup    private peer A finds private peer B by its ID alone
  topic     peers B and C advertise a topic; peer A finds them by its name
  connect   peer A connects to peer B through one of B's relays
  echo      A sends a message to B over that relayed connection, B echoes it

Nothing leaves the machine. Every step that fails stops the demo with exit 1.
`

const (
	demoTopic   = "demo-room"
	demoEcho    = protocol.ID("/rendezvous-demo/echo/1.0.0")
	demoMessage = "hello through the relay"
)

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return exitCode(stderr, "demo", runDemo(ctx, args, stdout))
}

func runDemo(ctx context.Context, args []string, stdout io.Writer) (err error) {
	fs := newFlagSet("demo", "[flags]", demoHelp)
	public := fs.Int("public", 5, "start `N` public peers")
	private := fs.Int("private", 4, "start `N` private peers (at least 3: A, B and C)")
	jsonOut := fs.Bool("json", false, "print one JSON object per step instead of text")
	timeout := fs.Duration("timeout", time.Minute, "give up after `DURATION`")
	verbose := fs.Bool("v", false, "log what the nodes do (debug level) to stderr")
	rest, err := parseArgs(fs, args, stdout)
	if err != nil {
		return err
	}
	switch {
	case len(rest) > 0:
		return usageErrorf("unexpected arguments: %s", strings.Join(rest, " "))
	case *public < 1:
		return usageErrorf("--public: need at least 1 public peer")
	case *private < 3:
		return usageErrorf("--private: need at least 3 private peers")
	case *timeout <= 0:
		return usageErrorf("--timeout must be positive")
	}
	if *verbose {
		if err := setVerbose(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	d := &demo{w: stdout, json: *jsonOut, names: map[peer.ID]string{}}
	start := time.Now()
	if !d.json {
		fmt.Fprintf(stdout, "Starting %s and %s on loopback...\n",
			plural(*public, "public peer"), plural(*private, "private peer"))
	}
	// Loopback has no NAT: with punching on, private peers would connect
	// directly, and the demo shows the relay's path.
	tn, err := testnet.New(ctx, testnet.Config{Public: *public, Private: *private,
		Options: []rendezvous.Option{rendezvous.WithoutHolePunching()}})
	if err != nil {
		return d.fail(ctx, "network", *timeout, err)
	}
	defer func() { err = errors.Join(err, closeError(tn.Close())) }()
	if err := d.network(tn, time.Since(start)); err != nil {
		return err
	}

	a, b, c := tn.Private[0], tn.Private[1], tn.Private[2]
	steps := []struct {
		name string
		run  func(context.Context) error
	}{
		{"publish", func(ctx context.Context) error { return d.publish(ctx, tn, b) }},
		{"lookup", func(ctx context.Context) error { return d.lookup(ctx, a, b) }},
		{"topic", func(ctx context.Context) error { return d.topic(ctx, a, b, c) }},
		{"connect", func(ctx context.Context) error { return d.connect(ctx, a, b) }},
		{"echo", func(ctx context.Context) error { return d.echo(ctx, a, b) }},
	}
	for _, s := range steps {
		if err := s.run(ctx); err != nil {
			return d.fail(ctx, s.name, *timeout, err)
		}
	}
	total := time.Since(start)
	if d.json {
		return writeJSON(stdout, struct {
			Step string  `json:"step"`
			MS   float64 `json:"ms"`
		}{"done", ms(total)})
	}
	_, err = fmt.Fprintf(stdout, "\nDemo finished in %s.\n", fmtMS(total))
	return err
}

// demo runs the steps of the demo and prints them.
type demo struct {
	w     io.Writer
	json  bool
	names map[peer.ID]string // who is who: "A", "B", "relay P2"...
}

// fail says which step failed, and why.
func (d *demo) fail(ctx context.Context, step string, timeout time.Duration, err error) error {
	if ctx.Err() != nil {
		err = timeoutError(ctx, timeout)
	}
	return fmt.Errorf("step %s: %w", step, err)
}

// line prints one step as text: its name, then what it showed.
func (d *demo) line(step, format string, args ...any) {
	fmt.Fprintf(d.w, "%-8s %s\n", step, fmt.Sprintf(format, args...))
}

// detail prints an indented line under a step.
func (d *demo) detail(format string, args ...any) {
	fmt.Fprintf(d.w, "%-8s   %s\n", "", fmt.Sprintf(format, args...))
}

// name returns how the demo calls a peer.
func (d *demo) name(id peer.ID) string {
	if n, ok := d.names[id]; ok {
		return n
	}
	return shortID(id)
}

func (d *demo) network(tn *testnet.Network, took time.Duration) error {
	for i, n := range tn.Public {
		d.names[n.ID()] = fmt.Sprintf("P%d", i+1)
	}
	for i, n := range tn.Private {
		d.names[n.ID()] = string(rune('A' + i))
	}
	reservations := 0
	for _, n := range tn.Private {
		reservations += len(n.Status().Relays)
	}
	if d.json {
		return writeJSON(d.w, struct {
			Step         string  `json:"step"`
			Public       int     `json:"public"`
			Private      int     `json:"private"`
			Reservations int     `json:"relay_reservations"`
			MS           float64 `json:"ms"`
		}{"network", len(tn.Public), len(tn.Private), reservations, ms(took)})
	}
	d.line("network", "up in %s: %s P1..P%d (DHT servers, relays), %s A..%s",
		fmtMS(took), plural(len(tn.Public), "public peer"), len(tn.Public),
		plural(len(tn.Private), "private peer"), d.name(tn.Private[len(tn.Private)-1].ID()))
	d.detail("(forced private, as behind a NAT, hole punching off: DHT clients holding %s)", plural(reservations, "relay reservation"))
	return nil
}

func (d *demo) publish(ctx context.Context, tn *testnet.Network, b *rendezvous.Node) error {
	// A private peer publishes as soon as it holds one reservation, and
	// again once it holds them all: wait for that, so that every step shows
	// the same relays.
	want := min(relay.DefaultReservations, len(tn.Public))
	for _, n := range tn.Private {
		err := testnet.WaitStatus(ctx, n, func(st rendezvous.Status) bool {
			p := st.Publish
			return p != nil && p.Error == "" && len(p.RelayAddrs) >= want && len(p.RelayAddrs) == len(st.Relays)
		})
		if err != nil {
			return err
		}
	}
	published := 0
	for _, n := range tn.All() {
		if p := n.Status().Publish; p != nil && p.Error == "" {
			published++
		}
	}
	pub := b.Status().Publish
	if pub == nil || pub.Error != "" {
		return fmt.Errorf("peer B has not published its record: %+v", pub)
	}
	if d.json {
		return writeJSON(d.w, struct {
			Step       string   `json:"step"`
			Records    int      `json:"records"`
			Peer       string   `json:"peer"`
			PeerID     string   `json:"peer_id"`
			Seq        uint64   `json:"seq"`
			Holders    int      `json:"holders"`
			Addrs      []string `json:"addrs"`
			RelayAddrs []string `json:"relay_addrs"`
			RPCs       int64    `json:"rpcs"`
			Bytes      int64    `json:"bytes"`
		}{"publish", published, "B", b.ID().String(), pub.Seq, pub.Holders,
			append([]string{}, pub.Addrs...), append([]string{}, pub.RelayAddrs...), pub.RPCs, pub.Bytes})
	}
	d.line("publish", "%d of %d peers published their signed records; B's: seq %d on %s,",
		published, len(tn.All()), pub.Seq, plural(pub.Holders, "holder"))
	d.detail("%s, %s (%s, %s)", plural(len(pub.RelayAddrs), "relay address"),
		plural(len(pub.Addrs), "direct address"), plural(int(pub.RPCs), "RPC"), fmtBytes(pub.Bytes))
	return nil
}

func (d *demo) lookup(ctx context.Context, a, b *rendezvous.Node) error {
	res, err := a.DHT().Lookup(ctx, b.ID(), dht.NoCache())
	if err != nil {
		return fmt.Errorf("peer A looking up peer B: %w", err)
	}
	r := res.Record
	if len(r.RelayAddrs) == 0 {
		return errors.New("peer B's record has no relay address")
	}
	if d.json {
		return writeJSON(d.w, struct {
			Step          string     `json:"step"`
			Record        recordJSON `json:"record"`
			RPCs          int64      `json:"rpcs"`
			BytesSent     int64      `json:"bytes_sent"`
			BytesReceived int64      `json:"bytes_received"`
			MS            float64    `json:"ms"`
		}{"lookup", recordOf(r), res.Stats.RPCs, res.Stats.BytesSent, res.Stats.BytesReceived, ms(res.Duration)})
	}
	d.line("lookup", "A found B by ID in %s (%s, %s): B is %s, reachable through %s:",
		fmtMS(res.Duration), plural(int(res.Stats.RPCs), "RPC"), fmtBytes(res.Stats.Bytes()),
		r.NAT.Reachability, plural(len(r.RelayAddrs), "relay"))
	for _, ra := range r.RelayAddrs {
		d.detail("%s (relay %s)", ra, d.name(relay.RelayOf(ra)))
	}
	return nil
}

func (d *demo) topic(ctx context.Context, a *rendezvous.Node, advertisers ...*rendezvous.Node) error {
	start := time.Now()
	for _, n := range advertisers {
		if err := n.Advertise(ctx, demoTopic); err != nil {
			return fmt.Errorf("peer %s advertising %q: %w", d.name(n.ID()), demoTopic, err)
		}
	}
	advertised := time.Since(start)
	start = time.Now()
	found, err := a.FindPeers(ctx, demoTopic, 0)
	if err != nil {
		return fmt.Errorf("peer A searching %q: %w", demoTopic, err)
	}
	searched := time.Since(start)

	type foundJSON struct {
		Peer   string `json:"peer"`
		PeerID string `json:"peer_id"`
		Relays int    `json:"relays"`
	}
	slices.SortFunc(found, func(x, y *dht.Record) int { return strings.Compare(d.name(x.PeerID), d.name(y.PeerID)) })
	var peers []foundJSON
	var names []string
	got := map[peer.ID]bool{}
	for _, r := range found {
		got[r.PeerID] = true
		peers = append(peers, foundJSON{d.name(r.PeerID), r.PeerID.String(), len(r.RelayAddrs)})
		names = append(names, fmt.Sprintf("%s (%s)", d.name(r.PeerID), plural(len(r.RelayAddrs), "relay")))
	}
	for _, n := range advertisers {
		if !got[n.ID()] {
			return fmt.Errorf("peer A found %s advertising %q, but not peer %s",
				plural(len(found), "peer"), demoTopic, d.name(n.ID()))
		}
	}
	if d.json {
		return writeJSON(d.w, struct {
			Step        string      `json:"step"`
			Topic       string      `json:"topic"`
			Found       []foundJSON `json:"found"`
			AdvertiseMS float64     `json:"advertise_ms"`
			FindPeersMS float64     `json:"find_peers_ms"`
			Advertisers int         `json:"advertisers"`
		}{"topic", demoTopic, peers, ms(advertised), ms(searched), len(advertisers)})
	}
	d.line("topic", "B and C advertised %q (%s); A found %s in %s: %s",
		demoTopic, fmtMS(advertised), plural(len(found), "peer"), fmtMS(searched), strings.Join(names, ", "))
	return nil
}

func (d *demo) connect(ctx context.Context, a, b *rendezvous.Node) error {
	c, err := a.Connect(ctx, b.ID())
	if err != nil {
		return fmt.Errorf("peer A connecting to peer B: %w", err)
	}
	if c.Path.Kind != relay.PathRelayed {
		return fmt.Errorf("peer A reached peer B over a %s path, want relayed (B is private)", c.Path.Kind)
	}
	if d.json {
		return writeJSON(d.w, struct {
			Step       string         `json:"step"`
			Path       relay.PathKind `json:"path"`
			Relay      string         `json:"relay"`
			RelayName  string         `json:"relay_name"`
			RemoteAddr string         `json:"remote_addr"`
			LookupMS   float64        `json:"lookup_ms"`
			DialMS     float64        `json:"dial_ms"`
			RTTMS      float64        `json:"rtt_ms"`
		}{"connect", c.Path.Kind, c.Path.Relay.String(), d.name(c.Path.Relay), fmt.Sprint(c.Path.RemoteAddr),
			ms(c.LookupTime), ms(c.Path.DialTime), ms(c.Path.RTT)})
	}
	d.line("connect", "A connected to B %s via relay %s: dial %s, RTT %s",
		c.Path.Kind, d.name(c.Path.Relay), fmtMS(c.Path.DialTime), fmtMS(c.Path.RTT))
	return nil
}

func (d *demo) echo(ctx context.Context, a, b *rendezvous.Node) error {
	b.Host().SetStreamHandler(demoEcho, echoHandler)
	defer b.Host().RemoveStreamHandler(demoEcho)

	start := time.Now()
	s, err := a.NewStream(ctx, b.ID(), demoEcho)
	if err != nil {
		return fmt.Errorf("peer A opening a stream to peer B: %w", err)
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		s.SetDeadline(dl)
	}
	if _, err := io.WriteString(s, demoMessage); err != nil {
		return fmt.Errorf("sending: %w", err)
	}
	if err := s.CloseWrite(); err != nil {
		return fmt.Errorf("sending: %w", err)
	}
	reply, err := io.ReadAll(io.LimitReader(s, 1<<10))
	if err != nil {
		return fmt.Errorf("reading the echo: %w", err)
	}
	took := time.Since(start)
	if string(reply) != demoMessage {
		return fmt.Errorf("peer B echoed %q, want %q", reply, demoMessage)
	}
	path := relay.PathOf(s.Conn())
	if d.json {
		return writeJSON(d.w, struct {
			Step     string         `json:"step"`
			Protocol protocol.ID    `json:"protocol"`
			Sent     string         `json:"sent"`
			Reply    string         `json:"reply"`
			Path     relay.PathKind `json:"path"`
			MS       float64        `json:"ms"`
		}{"echo", demoEcho, demoMessage, string(reply), path.Kind, ms(took)})
	}
	d.line("echo", "A sent %q over the %s connection; B echoed %q (%s round trip)",
		demoMessage, path.Kind, reply, fmtMS(took))
	return nil
}

// echoHandler writes back what it reads, up to 1 KiB.
func echoHandler(s network.Stream) {
	defer s.Close()
	s.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(s, io.LimitReader(s, 1<<10)); err != nil {
		s.Reset()
	}
}
