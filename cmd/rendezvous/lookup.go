package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2pos/rendezvous"
	"github.com/p2pos/rendezvous/dht"
)

const lookupHelp = `
Find the signed address record of a peer by its ID, and print it once it is
verified: sequence number, validity, direct addresses, relay addresses, what
the peer knows of its NAT, and what the lookup cost (time, DHT requests, bytes).

The lookup runs on a short-lived node (private by default: a DHT client) that
joins the network through the bootstrap peers and stops when done.
`

func cmdLookup(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return exitCode(stderr, "lookup", runLookup(ctx, args, stdout))
}

// clientFlags are the flags of the commands that start a short-lived node to
// reach one peer.
type clientFlags struct {
	nodeFlags
	json    bool
	timeout time.Duration
}

func (cf *clientFlags) register(fs *flag.FlagSet) {
	cf.nodeFlags.register(fs, "private")
	fs.BoolVar(&cf.json, "json", false, "print a JSON object instead of text")
	fs.DurationVar(&cf.timeout, "timeout", defaultTimeout, "give up after `DURATION`, joining the network included")
}

// start starts the short-lived node of a command, bounded by ctx.
func (cf *clientFlags) start(ctx context.Context) (*rendezvous.Node, error) {
	if cf.timeout <= 0 {
		return nil, usageErrorf("--timeout must be positive")
	}
	opts, err := cf.options(true)
	if err != nil {
		return nil, err
	}
	// A client only reaches out: no record, reservations or NAT survey.
	opts = append(opts, rendezvous.WithoutPublishing())
	n, err := rendezvous.New(ctx, opts...)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, rendezvous.ErrBootstrap) {
			return nil, fmt.Errorf("no bootstrap peer reachable: %w", timeoutError(ctx, cf.timeout))
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("joining the network: %w", timeoutError(ctx, cf.timeout))
		}
		return nil, startError(err)
	}
	return n, nil
}

// lookupJSON is the output of lookup --json.
type lookupJSON struct {
	recordJSON
	Cached        bool    `json:"cached"`
	LookupMS      float64 `json:"lookup_ms"`
	RPCs          int64   `json:"rpcs"`
	BytesSent     int64   `json:"bytes_sent"`
	BytesReceived int64   `json:"bytes_received"`
}

func runLookup(ctx context.Context, args []string, stdout io.Writer) (err error) {
	fs := newFlagSet("lookup", "[flags] PEERID", lookupHelp)
	var cf clientFlags
	cf.register(fs)
	rest, err := parseArgs(fs, args, stdout)
	if err != nil {
		return err
	}
	id, err := onePeerID(rest)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	n, err := cf.start(ctx)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeError(n.Close())) }()

	res, err := n.DHT().Lookup(ctx, id, dht.NoCache())
	if err != nil {
		return lookupError(ctx, id, cf.timeout, err)
	}
	if cf.json {
		return writeJSON(stdout, lookupJSON{
			recordJSON:    recordOf(res.Record),
			Cached:        res.Cached,
			LookupMS:      ms(res.Duration),
			RPCs:          res.Stats.RPCs,
			BytesSent:     res.Stats.BytesSent,
			BytesReceived: res.Stats.BytesReceived,
		})
	}
	return printRecord(stdout, res)
}

func printRecord(w io.Writer, res dht.LookupResult) error {
	r := res.Record
	now := time.Now()
	t := newTable(w)
	t.row("peer ID", r.PeerID.String())
	t.row("seq", fmt.Sprint(r.Seq))
	t.row("issued", fmtTime(r.Issued, now))
	t.row("expires", fmtTime(r.Expires, now))
	t.row("NAT", r.NAT.String())
	t.row("direct", addrStrings(r.Addrs)...)
	t.row("via relay", addrStrings(r.RelayAddrs)...)
	if d := r.DataRelay; !d.IsZero() {
		t.row("data relay", fmt.Sprintf("offers relayed connections of up to %s and %s each way, %d per peer",
			d.Duration, fmtBytes(d.Data), d.Circuits))
	}
	t.row("lookup", fmt.Sprintf("%s, %s, %s (%s sent, %s received)",
		fmtMS(res.Duration), plural(int(res.Stats.RPCs), "RPC"), fmtBytes(res.Stats.Bytes()),
		fmtBytes(res.Stats.BytesSent), fmtBytes(res.Stats.BytesReceived)))
	return t.flush()
}

// lookupError explains why finding id's record failed; ctx is the context
// of the lookup, bounded by timeout.
func lookupError(ctx context.Context, id peer.ID, timeout time.Duration, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("lookup of %s: %w", id, timeoutError(ctx, timeout))
	case errors.Is(err, dht.ErrNotFound):
		// The reasons a record found in the DHT may be refused.
		rejections := []error{
			dht.ErrOutOfScope, dht.ErrExpired, dht.ErrFromFuture, dht.ErrBadSignature,
			dht.ErrSignerMismatch, dht.ErrMalformed, dht.ErrUnsupportedVersion,
			dht.ErrTooLarge, dht.ErrTooManyAddrs,
		}
		for _, r := range rejections {
			if !errors.Is(err, r) {
				continue
			}
			msg := fmt.Sprintf("no record for %s: one was found but refused: %v", id, r)
			if r == dht.ErrOutOfScope {
				msg += " (is --public-ranges the same as the network's?)"
			}
			return errors.New(msg)
		}
		return fmt.Errorf("no record for %s", id)
	case errors.Is(err, dht.ErrNoPeers):
		return errors.New("no DHT server to ask: the bootstrap peers are not DHT servers, " +
			"or their addresses are outside this node's scope (see --public-ranges)")
	}
	return err
}

// timeoutError says why ctx ended: the timeout, or an interrupt.
func timeoutError(ctx context.Context, timeout time.Duration) error {
	return &endedError{timeout: timeout, cause: ctx.Err()}
}

// endedError is the end of a command's context, said for people.
type endedError struct {
	timeout time.Duration
	cause   error // context.DeadlineExceeded or context.Canceled
}

func (e *endedError) Error() string {
	if errors.Is(e.cause, context.DeadlineExceeded) {
		return fmt.Sprintf("timed out after %v (see --timeout)", e.timeout)
	}
	return "interrupted"
}

func (e *endedError) Unwrap() error { return e.cause }
