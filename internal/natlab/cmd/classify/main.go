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
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/p2pos/rendezvous/internal/natlab"
	"github.com/p2pos/rendezvous/internal/natlab/classify"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "classify:", err)
		os.Exit(1)
	}
}

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
	if *verbose {
		cfg.Logf = func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	}

	if err := natlab.Check(); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "rendezvous-classify-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	if cfg.Binary, err = natlab.BuildCommand(ctx, wd, "./cmd/rendezvous", dir); err != nil {
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
	if *jsonOut != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Clean(*jsonOut), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
