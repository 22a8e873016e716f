// Command matrix runs the NAT lab's connection matrix and prints it as
// Markdown tables (and, with --json FILE, as JSON). It needs root, and
// nftables, conntrack and miniupnpd; everything it creates lives in network
// namespaces it removes when done, also on failure or interrupt.
//
//	go run ./internal/natlab/cmd/matrix [--transports quic,tcp] [--sides public,symmetric] [--json out.json]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/p2pos/rendezvous/internal/natlab"
	"github.com/p2pos/rendezvous/internal/natlab/matrix"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "matrix:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	sides := flag.String("sides", strings.Join(matrix.DefaultSides(), ","), "comma-separated `SIDES`: public, router kinds, broken")
	transports := flag.String("transports", "quic,tcp", "comma-separated `TRANSPORTS`")
	servers := flag.Int("servers", 3, "`N` public DHT servers")
	delay := flag.Duration("delay", 0, "one-way `DELAY` on the internet")
	timeout := flag.Duration("timeout", 30*time.Second, "bound on one connection attempt")
	jsonOut := flag.String("json", "", "also write the result as JSON to `FILE`")
	verbose := flag.Bool("v", false, "report progress on stderr")
	flag.Parse()

	if err := natlab.Check(); err != nil {
		return err
	}
	if err := natlab.CleanStale(ctx); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "rendezvous-matrix-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	bin, err := natlab.BuildCommand(ctx, wd, "./cmd/rendezvous", dir)
	if err != nil {
		return err
	}
	cfg := matrix.Config{
		Binary:     bin,
		Sides:      strings.Split(*sides, ","),
		Transports: strings.Split(*transports, ","),
		Servers:    *servers,
		Delay:      *delay,
		Timeout:    *timeout,
	}
	if *verbose {
		cfg.Logf = func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	}
	res, err := matrix.Run(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Print(res.Markdown())
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
