package standby

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/p2pos/rendezvous/internal/natlab"
)

// flow is a conntrack entry: its original direction, its id and how long
// it has left to live without traffic.
type flow struct {
	proto    string
	src, dst netip.AddrPort
	id       string // conntrack's id; "" when the tool did not print it
	ttl      int    // seconds left; -1 when not printed
}

func (f flow) key() string { return f.proto + " " + f.src.String() + " " + f.dst.String() }

// readFlows lists the router's conntrack table with ids.
func readFlows(ctx context.Context, r *natlab.Router) ([]flow, error) {
	out, err := r.Command(ctx, "conntrack", "-L", "-o", "id").Output()
	if err != nil {
		return nil, fmt.Errorf("conntrack -L: %w", err)
	}
	return parseFlows(string(out)), nil
}

// parseFlows parses `conntrack -L -o id` output, one entry a line:
//
//	udp      17 29 src=192.168.1.2 dst=10.77.0.10 sport=4001 dport=4001 src=10.77.0.10 dst=10.77.1.1 sport=4001 dport=4001 [ASSURED] mark=0 use=1 id=3171264945
//
// The third field is the seconds left; the first src, dst, sport and dport
// are the original direction. Lines without a complete original tuple are
// skipped.
func parseFlows(out string) []flow {
	var flows []flow
	for _, line := range strings.Split(out, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		f := flow{proto: fields[0], ttl: -1}
		if len(fields) > 2 {
			if n, err := strconv.Atoi(fields[2]); err == nil && n >= 0 {
				f.ttl = n
			}
		}
		var src, dst netip.Addr
		var sport, dport int = -1, -1
		for _, kv := range fields[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				continue
			}
			switch k {
			case "src":
				if !src.IsValid() {
					src, _ = netip.ParseAddr(v)
				}
			case "dst":
				if !dst.IsValid() {
					dst, _ = netip.ParseAddr(v)
				}
			case "sport":
				if sport < 0 {
					sport = port(v)
				}
			case "dport":
				if dport < 0 {
					dport = port(v)
				}
			case "id":
				f.id = v
			}
		}
		if !src.IsValid() || !dst.IsValid() || sport < 0 || dport < 0 {
			continue
		}
		f.src, f.dst = netip.AddrPortFrom(src, uint16(sport)), netip.AddrPortFrom(dst, uint16(dport))
		flows = append(flows, f)
	}
	return flows
}

// port parses a port number, or returns -2 (never matched, and not -1 so
// that a later field does not replace it).
func port(s string) int {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return -2
	}
	return int(n)
}

// flowCount compares the standing flows (from port, the peer's libp2p
// socket, to one of servers on port) at the start and at the end of the
// window.
type flowCount struct {
	start, kept int
	// lost describes the start's flows not kept: "... gone" or
	// "... replaced" (same tuple, new conntrack entry), with the seconds
	// they had left at the start: a flow with little left was idle
	// already.
	lost []string
	// added are the end's flows that were not there at the start.
	added []string
}

// compareFlows counts the standing flows at the start, and how many of them
// are still there at the end: same tuple and same conntrack id (a flow that
// expired and came back has a new id).
func compareFlows(start, end []flow, servers []netip.Addr, port uint16) flowCount {
	standing := func(f flow) bool {
		return f.src.Port() == port && f.dst.Port() == port && slices.Contains(servers, f.dst.Addr())
	}
	var c flowCount
	ids := map[string]string{}
	for _, f := range end {
		ids[f.key()] = f.id
	}
	before := map[string]bool{}
	for _, f := range start {
		if !standing(f) {
			continue
		}
		before[f.key()] = true
		c.start++
		left := ""
		if f.ttl >= 0 {
			left = fmt.Sprintf(" (%d s left at the start)", f.ttl)
		}
		switch id, ok := ids[f.key()]; {
		case !ok:
			c.lost = append(c.lost, f.key()+" gone"+left)
		case id != f.id:
			c.lost = append(c.lost, f.key()+" replaced"+left)
		default:
			c.kept++
		}
	}
	for _, f := range end {
		if standing(f) && !before[f.key()] {
			c.added = append(c.added, f.key())
		}
	}
	return c
}
