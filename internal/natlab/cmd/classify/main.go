// Command classify measures, in the NAT lab, how well nodes classify the NAT
// in front of them: for a public host and every router kind it runs
// `rendezvous netcheck --quick --json` --runs times, in a network of one
// public peer and in one of three, and prints one Markdown table: what the
// lab built, how many runs reported it, what the others saw, and how long
// classifying took. It needs root, and nftables, conntrack and miniupnpd;
// everything it creates lives in network namespaces it removes when done,
// also on failure or interrupt. Run it from the module's root.
//
//	go run ./internal/natlab/cmd/classify [--runs 10] [--peers 1,3] [--kinds full-cone,symmetric] [--json out.json] [-v]
package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/p2pos/rendezvous/internal/natlab/classify"
	"github.com/p2pos/rendezvous/internal/natlab/labcmd"
)

func main() { labcmd.Main("classify", run) }

func run(ctx context.Context) error {
	runs := flag.Int("runs", 10, "`N` netchecks per kind and network")
	peers := flag.String("peers", "1,3", "comma-separated sizes of the networks: `COUNTS` of public peers")
	kinds := flag.String("kinds", strings.Join(classify.DefaultKinds(), ","), "comma-separated `KINDS`: public and router kinds")
	parallel := flag.Int("parallel", 4, "`N` netchecks at once at most")
	timeout := flag.Duration("timeout", 60*time.Second, "bound on one netcheck")
	jsonOut := flag.String("json", "", "also write every run as JSON to `FILE`")
	verbose := flag.Bool("v", false, "report every run on stderr")
	second := flag.Bool("second-addr", false, "give every public peer a second address (RFC 5780 servers have two)")
	flag.Parse()

	cfg := classify.Config{
		Kinds:    strings.Split(*kinds, ","),
		Runs:     *runs,
		Parallel: *parallel,
		Timeout:  *timeout,

		SecondAddr: *second,
	}
	for _, s := range strings.Split(*peers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("--peers: %q is not a number", s)
		}
		cfg.Peers = append(cfg.Peers, n)
	}
	cfg.Logf = labcmd.Logf(*verbose)
	dir, cleanup, err := labcmd.Workspace(ctx, "classify")
	if err != nil {
		return err
	}
	defer cleanup()
	if cfg.Binary, err = labcmd.Build(ctx, dir, "./cmd/rendezvous"); err != nil {
		return err
	}
	res, err := classify.Measure(ctx, cfg)
	if err != nil {
		return err
	}
	if *second {
		fmt.Print("Every public peer has two addresses.\n\n")
	}
	fmt.Print(res.Markdown())
	fmt.Printf("\n%d netchecks in %v\n", len(res.Runs), res.Elapsed.Round(time.Second))
	return labcmd.WriteJSON(*jsonOut, res)
}
