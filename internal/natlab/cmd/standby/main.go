// Command standby measures, in the NAT lab, what an idle NATed peer costs
// in bytes and packets at its router, for a rendezvous node and for a
// vanilla go-libp2p peer side by side (see internal/natlab/standby), and
// prints a Markdown table (and, with --json FILE, JSON). It needs root, and
// nftables and conntrack; everything it creates lives in network namespaces
// it removes when done, also on failure or interrupt. Run it from the
// module's root: it builds the rendezvous and vanillapeer commands.
//
//	go run ./internal/natlab/cmd/standby [--duration 1h] [--settle 10m] [--udp-timeouts 30s,120s] [--tcp-timeout 30m] [--json out.json] [-v]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/p2pos/rendezvous/internal/natlab/labcmd"
	"github.com/p2pos/rendezvous/internal/natlab/standby"
)

func main() { labcmd.Main("standby", run) }

func run(ctx context.Context) error {
	duration := flag.Duration("duration", time.Hour, "length of the idle `WINDOW` measured")
	settle := flag.Duration("settle", 10*time.Minute, "wait at most `DURATION` for each peer to settle before the window")
	udpList := flag.String("udp-timeouts", "30s,120s", "comma-separated UDP `TIMEOUTS` of the routers: two routers (one per implementation) each")
	tcpTimeout := flag.Duration("tcp-timeout", 30*time.Minute, "established-TCP `TIMEOUT` of the routers")
	servers := flag.Int("servers", 3, "`N` public nodes (DHT servers and relays)")
	jsonOut := flag.String("json", "", "also write the result as JSON to `FILE`")
	verbose := flag.Bool("v", false, "report progress on stderr")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(flag.Args(), " "))
	}
	var udp []time.Duration
	for _, s := range strings.Split(*udpList, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil || d <= 0 {
			return fmt.Errorf("bad UDP timeout %q", s)
		}
		udp = append(udp, d)
	}
	if *duration <= 0 || *settle <= 0 || *tcpTimeout <= 0 || *servers <= 0 {
		return fmt.Errorf("--duration, --settle, --tcp-timeout and --servers must be positive")
	}

	dir, cleanup, err := labcmd.Workspace(ctx, "standby")
	if err != nil {
		return err
	}
	defer cleanup()
	rdv, err := labcmd.Build(ctx, dir, "./cmd/rendezvous")
	if err != nil {
		return err
	}
	van, err := labcmd.Build(ctx, dir, "./internal/natlab/cmd/vanillapeer")
	if err != nil {
		return err
	}
	cfg := standby.Config{
		RendezvousBinary: rdv,
		VanillaBinary:    van,
		Duration:         *duration,
		Settle:           *settle,
		UDPTimeouts:      udp,
		TCPTimeout:       *tcpTimeout,
		Servers:          *servers,
	}
	if *verbose {
		cfg.Logf = func(f string, a ...any) {
			fmt.Fprintf(os.Stderr, "%s "+f+"\n", append([]any{time.Now().Format(time.TimeOnly)}, a...)...)
		}
	}
	res, err := standby.Run(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Print(res.Markdown())
	return labcmd.WriteJSON(*jsonOut, res)
}
