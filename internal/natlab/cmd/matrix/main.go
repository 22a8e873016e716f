// Command matrix runs the NAT lab's connection matrix and prints it as
// Markdown tables (and, with --json FILE, as JSON). It needs root, and
// nftables, conntrack and miniupnpd; everything it creates lives in network
// namespaces it removes when done, also on failure or interrupt. Run it from
// the module's root: it builds the commands it runs.
//
// With --vanilla each cell also shows stock go-libp2p with defaults (the
// vanillapeer command), measured right after this library's trial. It is
// off by default: vanilla's relayed connections never become direct in the
// lab, so each such trial waits the whole 20 s direct wait, which about
// doubles the run time of the full matrix.
//
//	go run ./internal/natlab/cmd/matrix [--transports quic,tcp] [--sides public,symmetric] [--trials 10] [--delay 20ms] [--vanilla] [--json out.json]
package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/p2pos/rendezvous/internal/natlab/labcmd"
	"github.com/p2pos/rendezvous/internal/natlab/matrix"
)

func main() { labcmd.Main("matrix", run) }

func run(ctx context.Context) error {
	sides := flag.String("sides", strings.Join(matrix.DefaultSides(), ","), "comma-separated `SIDES`: public, router kinds, broken")
	transports := flag.String("transports", "quic,tcp", "comma-separated `TRANSPORTS`: quic, tcp, both (every peer on QUIC and TCP)")
	servers := flag.Int("servers", 3, "`N` public DHT servers")
	delay := flag.Duration("delay", 0, "one-way `DELAY` on the internet")
	timeout := flag.Duration("timeout", 30*time.Second, "bound on one connection attempt")
	trials := flag.Int("trials", 1, "`N` connections per pair, each from a fresh peer")
	vanilla := flag.Bool("vanilla", false, "also measure each cell for vanilla go-libp2p with defaults, beside this library")
	vanillaTrials := flag.Int("vanilla-trials", 0, "with --vanilla, `N` of the trials are also made with vanilla go-libp2p (default: all)")
	jsonOut := flag.String("json", "", "also write the result as JSON to `FILE`")
	pairs := flag.String("pairs", "", "comma-separated `PAIRS` from:to, to measure only those cells (each from before to in --sides)")
	verbose := flag.Bool("v", false, "report progress on stderr")
	flag.Parse()

	dir, cleanup, err := labcmd.Workspace(ctx, "matrix")
	if err != nil {
		return err
	}
	defer cleanup()
	bin, err := labcmd.Build(ctx, dir, "./cmd/rendezvous")
	if err != nil {
		return err
	}
	var van string
	if *vanilla {
		if van, err = labcmd.Build(ctx, dir, "./internal/natlab/cmd/vanillapeer"); err != nil {
			return err
		}
	}
	cfg := matrix.Config{
		Binary:        bin,
		VanillaBinary: van,
		Sides:         strings.Split(*sides, ","),
		Transports:    strings.Split(*transports, ","),
		Servers:       *servers,
		Delay:         *delay,
		Timeout:       *timeout,
		Trials:        *trials,
		VanillaTrials: *vanillaTrials,
	}
	if *pairs != "" {
		cfg.Pairs = strings.Split(*pairs, ",")
	}
	cfg.Logf = labcmd.Logf(*verbose)
	res, err := matrix.Run(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Print(res.Markdown())
	return labcmd.WriteJSON(*jsonOut, res)
}
