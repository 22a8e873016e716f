package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2pos/rendezvous"
	"github.com/p2pos/rendezvous/plugin"
	"github.com/p2pos/rendezvous/relay"
	"github.com/p2pos/rendezvous/scope"
)

const nodeHelp = `
Start a node and run it until interrupted (SIGINT or SIGTERM).

The node joins the network through the bootstrap peers, publishes its signed
address record, and keeps it up to date. A publicly reachable node serves the
DHT and relays connection setup for NATed peers; a private one holds relay
reservations and publishes its relay addresses.

It prints its peer ID and the addresses other machines can bootstrap from,
a "ready" line once its record is published (at once for the first node of a
network, which has no one to publish to yet), then one line per change:
records published, relays changed, reachability. With --json, every line is a
JSON object: {"event":"ready",...}, the events, and {"event":"stopped"}.
`

func cmdNode(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return exitCode(stderr, "node", runNode(ctx, args, stdout))
}

func runNode(ctx context.Context, args []string, stdout io.Writer) (err error) {
	fs := newFlagSet("node", "[flags]", nodeHelp)
	var nf nodeFlags
	nf.register(fs, "auto")
	jsonOut := fs.Bool("json", false, "print JSON lines instead of text")
	plugins := fs.String("plugins", "", "serve plugins as the JSON configuration in `FILE` allows (tokens, services),\non the Unix socket plugins.sock in --data-dir")
	rest, err := parseArgs(fs, args, stdout)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("unexpected arguments: %s", strings.Join(rest, " "))
	}
	opts, err := nf.options(false)
	if err != nil {
		return err
	}
	sc, err := nf.scope()
	if err != nil {
		return err
	}
	var pcfg *plugin.Config
	if *plugins != "" {
		if nf.dataDir == "" {
			return usageErrorf("--plugins needs --data-dir, where the socket goes")
		}
		if pcfg, err = plugin.LoadConfig(*plugins); err != nil {
			return usageError{err}
		}
	}

	n, err := rendezvous.New(ctx, opts...)
	if err != nil {
		return startError(err)
	}
	var srv *plugin.Server
	if pcfg != nil {
		if srv, err = plugin.Listen(n, filepath.Join(nf.dataDir, "plugins.sock"), pcfg); err != nil {
			return errors.Join(err, n.Close())
		}
	}
	p := &nodePrinter{w: stdout, json: *jsonOut, node: n, boot: bootstrapAddrs(n, sc)}
	if srv != nil {
		p.plugins = srv.Path()
	}
	// The first node of a network has no one to publish its record to:
	// it is ready as soon as it runs.
	first := len(nf.bootstrapAddrs()) == 0
	err = p.follow(ctx, first)
	if srv != nil {
		srv.Close() // the plugins' streams end before the node's
	}
	if cerr := n.Close(); cerr != nil {
		return errors.Join(err, closeError(cerr))
	}
	if err != nil {
		return err
	}
	return p.stopped()
}

// follow prints the node's start, its ready line and then its events, until
// ctx ends.
func (p *nodePrinter) follow(ctx context.Context, first bool) error {
	events, unsubscribe := p.node.Subscribe()
	defer unsubscribe()
	if err := p.started(); err != nil {
		return err
	}
	if !first {
	wait:
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-p.node.Ready():
				break wait
			case ev, ok := <-events:
				if !ok {
					return errors.New("node stopped before it was ready")
				}
				// The status in the ready line sums up what happened
				// so far; only failures are worth a line of their own.
				if !p.json && ev.Publish != nil && ev.Publish.Error != "" {
					if err := p.event(ev); err != nil {
						return err
					}
				}
			}
		}
	}
	if err := p.ready(first); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				return errors.New("node stopped")
			}
			if p.shown(ev) {
				continue
			}
			if err := p.event(ev); err != nil {
				return err
			}
		}
	}
}

// nodePrinter writes what a running node does, as text or JSON lines.
type nodePrinter struct {
	w    io.Writer
	json bool
	node *rendezvous.Node
	boot []string // addresses to bootstrap from this node
	// plugins is the plugin socket's path, if the node serves plugins.
	plugins string
	// readyPub is the publish the ready line reported.
	readyPub *rendezvous.PublishStatus
}

// shown reports whether ev is the publish the ready line reported already.
func (p *nodePrinter) shown(ev rendezvous.Event) bool {
	return ev.Publish != nil && p.readyPub != nil && ev.Publish.Time.Equal(p.readyPub.Time)
}

// started prints who the node is and where it listens (text only; the JSON
// ready line carries the same).
func (p *nodePrinter) started() error {
	if p.json {
		return nil
	}
	st := p.node.Status()
	t := newTable(p.w)
	t.row("peer ID", st.PeerID)
	t.row("listening on", st.Addrs...)
	t.row("reachability", describeRole(st))
	switch {
	case p.node.Reachability() == rendezvous.ReachabilityPrivate:
		t.row("bootstrap with", "another node: a private node does not serve the DHT")
	case len(p.boot) == 0:
		t.row("bootstrap with", "none: no address is public in the node's scope",
			"(on a private network, give its ranges with --public-ranges)")
	default:
		t.row("bootstrap with", p.boot...)
	}
	if p.plugins != "" {
		t.row("plugins", "served on "+p.plugins)
	}
	return t.flush()
}

// readyLine is the first JSON line of a node.
type readyLine struct {
	Event  string    `json:"event"`
	Time   time.Time `json:"time"`
	PeerID string    `json:"peer_id"`
	Addrs  []string  `json:"addrs"`
	// Plugins is the plugin socket's path, if the node serves plugins.
	Plugins string            `json:"plugins,omitempty"`
	First   bool              `json:"first_node,omitempty"`
	Status  rendezvous.Status `json:"status"`
}

func (p *nodePrinter) ready(first bool) error {
	st := p.node.Status()
	p.readyPub = st.Publish
	if p.json {
		return writeJSON(p.w, readyLine{
			Event: "ready", Time: time.Now().UTC(), PeerID: st.PeerID, Plugins: p.plugins,
			Addrs: append([]string{}, p.boot...), First: first, Status: st,
		})
	}
	if first {
		_, err := fmt.Fprintf(p.w, "%s ready: first node of the network (no bootstrap peers); "+
			"its record is published once other nodes join\n", clock())
		return err
	}
	line := "ready"
	if pub := st.Publish; pub != nil {
		line += ": " + describePublish(pub)
	}
	_, err := fmt.Fprintf(p.w, "%s %s\n", clock(), line)
	return err
}

func (p *nodePrinter) event(ev rendezvous.Event) error {
	if p.json {
		// Every event line carries the node's whole status too: its
		// reachability, NAT, keep-alive and port mappings, as netcheck
		// reports them.
		return writeJSON(p.w, struct {
			rendezvous.Event
			Status rendezvous.Status `json:"status"`
		}{ev, p.node.Status()})
	}
	var line string
	switch ev.Type {
	case rendezvous.EventPublished:
		if ev.Publish == nil {
			return nil
		}
		line = describePublish(ev.Publish)
	case rendezvous.EventRelays:
		if len(ev.Relays) == 0 {
			line = "relays changed: none held"
			break
		}
		var rs []string
		for _, r := range ev.Relays {
			rs = append(rs, fmt.Sprintf("%s at %s", r.Relay, r.Addr))
		}
		line = fmt.Sprintf("relays changed: %s held: %s", plural(len(ev.Relays), "reservation"), strings.Join(rs, ", "))
	case rendezvous.EventReachability:
		line = "reachability: " + ev.Reachability
	default:
		line = string(ev.Type)
	}
	_, err := fmt.Fprintf(p.w, "%s %s\n", ev.Time.Local().Format(time.TimeOnly), line)
	return err
}

func (p *nodePrinter) stopped() error {
	if p.json {
		return writeJSON(p.w, struct {
			Event string    `json:"event"`
			Time  time.Time `json:"time"`
		}{"stopped", time.Now().UTC()})
	}
	_, err := fmt.Fprintf(p.w, "%s stopped\n", clock())
	return err
}

func clock() string { return time.Now().Format(time.TimeOnly) }

// describePublish says how a publish went, in one line.
func describePublish(p *rendezvous.PublishStatus) string {
	if p.Error != "" {
		return "publish failed: " + strings.TrimPrefix(p.Error, "rendezvous: ")
	}
	how := "to the known holders"
	if p.Fresh {
		how = "after a lookup of the closest servers"
	}
	return fmt.Sprintf("record published seq=%d holders=%d relays=%d direct=%d (%s, %s, %s)",
		p.Seq, p.Holders, len(p.RelayAddrs), len(p.Addrs), how, plural(int(p.RPCs), "RPC"), fmtBytes(p.Bytes))
}

// describeRole says what the node does in the network.
func describeRole(st rendezvous.Status) string {
	s := fmt.Sprintf("%s, DHT %s", st.Reachability, st.DHTMode)
	if st.RelayService {
		s += ", relay service on"
	}
	return s
}

// bootstrapAddrs are the node's addresses that other peers of its network
// can reach (public in its scope, not through a relay), with /p2p/<id>.
func bootstrapAddrs(n *rendezvous.Node, sc scope.Scope) []string {
	var direct []ma.Multiaddr
	for _, a := range sc.Filter(n.Addrs()) {
		if !relay.IsRelayed(a) {
			direct = append(direct, a)
		}
	}
	full, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: n.ID(), Addrs: direct})
	if err != nil {
		return nil
	}
	return addrStrings(full)
}

// startError explains why a node could not start.
func startError(err error) error {
	var be *rendezvous.BootstrapError
	if !errors.As(err, &be) {
		return err
	}
	ids := make([]peer.ID, 0, len(be.Errs))
	for id := range be.Errs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var parts []string
	for _, id := range ids {
		parts = append(parts, fmt.Sprintf("%s: %v", id, be.Errs[id]))
	}
	return fmt.Errorf("no bootstrap peer reachable: %s", strings.Join(parts, "; "))
}

// closeError wraps an error of closing a node.
func closeError(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("close: %w", err)
}
