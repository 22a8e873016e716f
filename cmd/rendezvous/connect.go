package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"

	"github.com/p2pos/rendezvous/relay"
)

const connectHelp = `
Connect to a peer by its ID and show the path the connection took: direct,
or relayed through one of the peer's relays. The peer's record is looked up
first, then its direct and relay addresses are dialed together.

With --ping N, N pings follow on the connection, relayed or not, and their
round-trip times are summed up. With --direct-wait D, a relayed connection
is given up to D to become direct (both peers run DCUtR, libp2p's hole
punch, over it); the pings then go over the direct one.

The connection is made from a short-lived node (private by default: a DHT
client) that joins the network through the bootstrap peers and stops when done.
`

func cmdConnect(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return exitCode(stderr, "connect", runConnect(ctx, args, os.Stdin, stdout))
}

// connectJSON is the output of connect --json.
type connectJSON struct {
	PeerID     string         `json:"peer_id"`
	Path       relay.PathKind `json:"path"`
	Relay      string         `json:"relay,omitempty"`
	RemoteAddr string         `json:"remote_addr"`
	// Connected is true when the node was connected to the peer already
	// (a bootstrap peer, say), so nothing was looked up or dialed.
	Connected bool    `json:"already_connected,omitempty"`
	LookupMS  float64 `json:"lookup_ms"`
	// LookupRPCs and LookupBytes count the lookup's requests and their
	// bytes (kad messages, not transport overhead).
	LookupRPCs  int64   `json:"lookup_rpcs"`
	LookupBytes int64   `json:"lookup_bytes"`
	DialMS      float64 `json:"dial_ms"`
	// FirstPath is the path of the first connection when a direct one
	// replaced it (--direct-wait); DirectMS is when, from the start.
	FirstPath *relay.PathKind `json:"first_path,omitempty"`
	DirectMS  float64         `json:"direct_ms,omitempty"`
	// Attempts are the ways tried, in the order they ended.
	Attempts []attemptJSON  `json:"attempts,omitempty"`
	RTTMS    float64        `json:"rtt_ms"`
	Ping     *pingStatsJSON `json:"ping,omitempty"`
}

// attemptJSON is one way connect tried.
type attemptJSON struct {
	Kind       string   `json:"kind"`
	Relay      string   `json:"relay,omitempty"`
	TookMS     float64  `json:"took_ms"`
	AnsweredMS float64  `json:"answered_ms,omitempty"`
	Known      []string `json:"known_addrs,omitempty"`
	Answered   []string `json:"answered_addrs,omitempty"`
	Spray      string   `json:"spray,omitempty"`
	Error      string   `json:"error,omitempty"`
}

// pingStatsJSON sums up the pings of connect --ping.
type pingStatsJSON struct {
	Count  int       `json:"count"`
	MinMS  float64   `json:"min_ms"`
	AvgMS  float64   `json:"avg_ms"`
	MaxMS  float64   `json:"max_ms"`
	RTTsMS []float64 `json:"rtts_ms"`
}

func runConnect(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) (err error) {
	fs := newFlagSet("connect", "[flags] PEERID", connectHelp)
	var cf clientFlags
	cf.register(fs)
	pings := fs.Int("ping", 0, "ping the peer `N` times once connected")
	directWait := fs.Duration("direct-wait", 0, "when the connection is relayed, wait up to `D` for a direct one (a hole punch)")
	waitStdin := fs.Bool("wait-stdin", false, "for measurements: once joined, print {\"joined\":true} and wait for a line on\nstandard input before connecting")
	rest, err := parseArgs(fs, args, stdout)
	if err != nil {
		return err
	}
	id, err := onePeerID(rest)
	if err != nil {
		return err
	}
	if *pings < 0 {
		return usageErrorf("--ping must not be negative")
	}
	ctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	n, err := cf.start(ctx)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeError(n.Close())) }()

	if *waitStdin {
		// Joined means settled: identify done with every peer joined.
		if idh, ok := n.Host().(interface{ IDService() identify.IDService }); ok {
			for _, c := range n.Host().Network().Conns() {
				select {
				case <-idh.IDService().IdentifyWait(c):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		// Warm the connections as a running node's would be: QUIC probes
		// the path MTU once per connection, with large packets a few
		// round trips apart, when it next sends; a node up for a while
		// has done so on its keep-alives.
		var wg sync.WaitGroup
		for _, p := range n.Host().Network().Peers() {
			wg.Go(func() { pingPeer(ctx, n.Host(), p, warmPings) })
		}
		wg.Wait()
		if err := writeJSON(stdout, map[string]bool{"joined": true}); err != nil {
			return err
		}
		if err := waitLine(ctx, stdin); err != nil {
			return err
		}
	}
	start := time.Now()
	c, err := n.Connect(ctx, id)
	if err != nil {
		var de *relay.DialError
		if errors.As(err, &de) {
			if ctx.Err() != nil {
				return fmt.Errorf("record found, but dialing %s %w: %v", id, timeoutError(ctx, cf.timeout), de.Err)
			}
			return err
		}
		return lookupError(ctx, id, cf.timeout, err)
	}
	var firstPath *relay.PathKind
	var directAt time.Duration
	if c.Path.Kind == relay.PathRelayed && *directWait > 0 {
		wctx, cancel := context.WithTimeout(ctx, *directWait)
		d, err := n.WaitDirect(wctx, id)
		cancel()
		if err == nil {
			directAt = time.Since(start)
			k := c.Path.Kind
			firstPath = &k
			d.Record, d.LookupTime, d.LookupStats, d.Attempts = c.Record, c.LookupTime, c.LookupStats, c.Attempts
			d.Path.DialTime, d.Path.RTT = c.Path.DialTime, c.Path.RTT
			c = d
		}
	}
	var rtts []time.Duration
	if *pings > 0 {
		if rtts, err = pingPeer(ctx, n.Host(), id, *pings); err != nil {
			if ctx.Err() != nil {
				err = timeoutError(ctx, cf.timeout)
			}
			return fmt.Errorf("connected over a %s path, then ping: %w", c.Path.Kind, err)
		}
	}

	out := connectJSON{
		PeerID:      id.String(),
		Path:        c.Path.Kind,
		RemoteAddr:  fmt.Sprint(c.Path.RemoteAddr),
		Connected:   c.Record == nil,
		LookupMS:    ms(c.LookupTime),
		LookupRPCs:  c.LookupStats.RPCs,
		LookupBytes: c.LookupStats.Bytes(),
		DialMS:      ms(c.Path.DialTime),
		RTTMS:       ms(c.Path.RTT),
		Ping:        pingStats(rtts),
		FirstPath:   firstPath,
		DirectMS:    ms(directAt),
	}
	if c.Path.Relay != "" {
		out.Relay = c.Path.Relay.String()
	}
	for _, a := range c.Attempts {
		aj := attemptJSON{Kind: a.Kind, TookMS: ms(a.Took), AnsweredMS: ms(a.Answered),
			Known: addrStrings(a.Known), Answered: addrStrings(a.AnsweredAddrs), Spray: a.Spray}
		if a.Relay != "" {
			aj.Relay = a.Relay.String()
		}
		if a.Err != nil {
			aj.Error = a.Err.Error()
		}
		out.Attempts = append(out.Attempts, aj)
	}
	if cf.json {
		return writeJSON(stdout, out)
	}

	t := newTable(stdout)
	t.row("peer ID", out.PeerID)
	t.row("path", out.Path.String())
	if out.Relay != "" {
		t.row("via relay", out.Relay)
	}
	t.row("remote addr", out.RemoteAddr)
	if out.Connected {
		t.row("lookup", "none: connected already")
	} else {
		t.row("lookup", fmtMS(c.LookupTime))
		t.row("dial", fmtMS(c.Path.DialTime))
	}
	if firstPath != nil {
		t.row("direct after", fmt.Sprintf("%s (first %s)", fmtMS(directAt), firstPath))
	}
	if c.Path.RTT > 0 {
		t.row("RTT", fmtMS(c.Path.RTT))
	}
	if p := out.Ping; p != nil {
		t.row("ping", fmt.Sprintf("%d answered: min %s, avg %s, max %s", p.Count,
			fmtMS(slices.Min(rtts)), fmtMS(mean(rtts)), fmtMS(slices.Max(rtts))))
	}
	return t.flush()
}

// pingPeer pings id count times over the node's connection, relayed or
// not, and returns the round-trip times.
func pingPeer(ctx context.Context, h host.Host, id peer.ID, count int) ([]time.Duration, error) {
	ctx, cancel := context.WithCancel(network.WithAllowLimitedConn(ctx, "ping"))
	defer cancel()
	var rtts []time.Duration
	for res := range ping.Ping(ctx, h, id) {
		if res.Error != nil {
			return rtts, res.Error
		}
		rtts = append(rtts, res.RTT)
		if len(rtts) == count {
			return rtts, nil
		}
	}
	return rtts, fmt.Errorf("%d of %d pings answered", len(rtts), count)
}

func pingStats(rtts []time.Duration) *pingStatsJSON {
	if len(rtts) == 0 {
		return nil
	}
	p := &pingStatsJSON{
		Count: len(rtts),
		MinMS: ms(slices.Min(rtts)),
		AvgMS: ms(mean(rtts)),
		MaxMS: ms(slices.Max(rtts)),
	}
	for _, d := range rtts {
		p.RTTsMS = append(p.RTTsMS, ms(d))
	}
	return p
}

func mean(ds []time.Duration) time.Duration {
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return sum / time.Duration(len(ds))
}

// warmPings is how many pings --wait-stdin sends each peer joined before
// it says it joined: enough round trips for QUIC's path MTU search.
const warmPings = 30

// waitLine waits for a line on r, or for ctx.
func waitLine(ctx context.Context, r io.Reader) error {
	got := make(chan error, 1)
	go func() { // ends with the read; the process ends soon after
		_, err := bufio.NewReader(r).ReadString('\n')
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			return fmt.Errorf("waiting for a line on standard input: %w", err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
