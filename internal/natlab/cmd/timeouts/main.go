// Command timeouts measures, in the NAT lab, how well probe.MeasureTimeout
// finds a router's UDP binding timeout: one port-restricted router per
// configured timeout, all measured at once against one probe server, and
// prints configured vs measured as a Markdown table. It needs root (see
// internal/natlab) and takes about the longest candidate duration.
//
//	go run ./internal/natlab/cmd/timeouts [--timeouts 30s,60s,120s,300s]
package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/p2pos/rendezvous/internal/natlab"
	"github.com/p2pos/rendezvous/internal/natlab/labcmd"
	"github.com/p2pos/rendezvous/nat/probe"
)

func main() { labcmd.Main("timeouts", run) }

func run(ctx context.Context) error {
	list := flag.String("timeouts", "30s,60s,120s,300s", "comma-separated UDP `TIMEOUTS` of the routers")
	flag.Parse()
	var timeouts []time.Duration
	for _, s := range strings.Split(*list, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil || d <= 0 {
			return fmt.Errorf("bad timeout %q", s)
		}
		timeouts = append(timeouts, d)
	}
	if err := natlab.Check(); err != nil {
		return err
	}
	spec := natlab.Spec{Hosts: []natlab.HostSpec{{Name: "server"}}}
	for i, d := range timeouts {
		r := fmt.Sprintf("r%d", i)
		spec.Routers = append(spec.Routers, natlab.RouterSpec{Name: r, Kind: natlab.PortRestricted, UDPTimeout: d})
		spec.Hosts = append(spec.Hosts, natlab.HostSpec{Name: "h" + r[1:], Router: r})
	}
	lab, err := natlab.New(ctx, spec)
	if err != nil {
		return err
	}
	defer lab.Close()

	srvHost := lab.Host("server")
	server := netip.AddrPortFrom(srvHost.Addr(), 3478)
	pc, err := srvHost.ListenUDP(server)
	if err != nil {
		return err
	}
	srv, err := probe.NewServer(pc)
	if err != nil {
		return err
	}
	defer srv.Close()

	cands := probe.DefaultCandidates()
	fmt.Fprintf(os.Stderr, "measuring %d routers at once, %d candidates up to %v...\n", len(timeouts), len(cands), cands[len(cands)-1])
	type row struct {
		res probe.TimeoutResult
		err error
	}
	rows := make([]row, len(timeouts))
	var wg sync.WaitGroup
	for i := range timeouts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := lab.Host(fmt.Sprintf("h%d", i))
			socket := func() (net.PacketConn, error) { return h.ListenUDP(netip.AddrPort{}) }
			rows[i].res, rows[i].err = probe.MeasureTimeout(ctx, server, cands, socket, nil)
		}()
	}
	wg.Wait()

	fmt.Printf("| router UDP timeout | lower | upper | estimate | error | time to answer | bytes | packets |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for i, d := range timeouts {
		r := rows[i]
		if r.err != nil {
			fmt.Printf("| %v | error: %v |||||||\n", d, r.err)
			continue
		}
		e := 100 * (r.res.Estimate.Seconds() - d.Seconds()) / d.Seconds()
		fmt.Printf("| %v | %v | %v | %v | %+.0f%% | %v | %d | %d |\n", d, r.res.Lower, r.res.Upper,
			r.res.Estimate.Round(time.Second), math.Round(e), r.res.Elapsed.Round(time.Second), r.res.Bytes, r.res.Packets)
	}
	return nil
}
