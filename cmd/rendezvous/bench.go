package main

import (
	"context"
	"io"
	"strings"
	"time"

	"github.com/p2pos/rendezvous/internal/bench"
	"github.com/p2pos/rendezvous/internal/testnet"
)

const benchHelp = `
Measure the DHT on a network of nodes on loopback and print the figures as
Markdown tables: the size of signed records, lookups of NATed peers' records
made by other NATed peers with the cache bypassed (success rate, DHT requests,
bytes sent and received, latency p50/p95), and the cost of a publish, both as a
first publish and as a republish to the known holders.

Bytes are those of the kad protocol messages with their length prefixes; the
transport's own overhead is not included. All traffic stays on 127.0.0.1.
`

func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return exitCode(stderr, "bench", runBench(ctx, args, stdout))
}

func runBench(ctx context.Context, args []string, stdout io.Writer) error {
	def := bench.DefaultConfig()
	fs := newFlagSet("bench", "[flags]", benchHelp)
	public := fs.Int("public", def.Public, "start `N` public nodes (DHT servers, relays)")
	private := fs.Int("private", def.Private, "start `N` private nodes (DHT clients holding relay reservations)")
	lookups := fs.Int("lookups", def.Lookups, "make `N` lookups")
	publishes := fs.Int("publishes", def.Publishes, "measure `N` publishes")
	transport := fs.String("transport", string(def.Transport), "`quic`, tcp or both")
	seed := fs.Uint64("seed", def.Seed, "random `SEED` choosing who looks up whom")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after `DURATION`")
	rest, err := parseArgs(fs, args, stdout)
	if err != nil {
		return err
	}
	switch {
	case len(rest) > 0:
		return usageErrorf("unexpected arguments: %s", strings.Join(rest, " "))
	case *public < 1 || *private < 2:
		return usageErrorf("need at least 1 public and 2 private nodes")
	case *lookups < 1 || *publishes < 0:
		return usageErrorf("--lookups must be positive and --publishes not negative")
	case *transport != "quic" && *transport != "tcp" && *transport != "both":
		return usageErrorf("--transport must be quic, tcp or both")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	return bench.Run(ctx, bench.Config{
		Public: *public, Private: *private, Lookups: *lookups, Publishes: *publishes,
		Transport: testnet.Transport(*transport), Seed: *seed,
	}, stdout)
}
