package standby

import (
	"fmt"
	"strings"
	"time"
)

// Markdown writes the result as a table, one row per peer, followed by
// notes on each peer.
func (r *Result) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Standby cost of an idle NATed peer: %d public nodes, one peer per port-restricted router, "+
		"window %v after the peer settled (limit %v); %.0f s in all.\n",
		r.Servers, seconds(r.DurationS), seconds(r.SettleS), r.Seconds)
	b.WriteString("Bytes and packets crossed the router's WAN link, scaled to one hour. " +
		"Lost connections: relay reservations lost (rendezvous), connections closed (vanilla). " +
		"Flows kept: the router's conntrack entries between the peer's libp2p port and the public nodes' " +
		"(its standing connections) at the start still there, unchanged, at the end, and those that appeared.\n\n")
	b.WriteString("| implementation | UDP timeout | TCP timeout | window | bytes in/h | bytes out/h | total KB/h | packets/h | lost connections | reachable at end | flows kept |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n")
	for _, row := range r.Rows {
		reach := "yes, " + row.Path
		if !row.Reachable {
			reach = "no: " + cell(row.ReachError, 60)
		}
		flows := fmt.Sprintf("%d/%d", row.FlowsKept, row.FlowsStart)
		if len(row.FlowsNew) > 0 {
			flows += fmt.Sprintf(" +%d new", len(row.FlowsNew))
		}
		if row.FlowsError != "" {
			flows = "?"
		}
		fmt.Fprintf(&b, "| %s | %v | %v | %v | %.0f | %.0f | %.1f | %.0f | %d | %s | %s |\n",
			row.Implementation, seconds(row.UDPTimeoutS), seconds(row.TCPTimeoutS), seconds(row.WindowS).Round(time.Second),
			row.InBytesPerHour, row.OutBytesPerHour, (row.InBytesPerHour+row.OutBytesPerHour)/1000, row.PacketsPerHour,
			row.LostConnections, reach, flows)
	}
	b.WriteString("\nNotes:\n\n")
	for _, row := range r.Rows {
		fmt.Fprintf(&b, "- %s, UDP timeout %v (%s): ", row.Implementation, seconds(row.UDPTimeoutS), row.Host)
		if row.Settled {
			fmt.Fprintf(&b, "settled in %.0f s", row.SettleS)
		} else {
			fmt.Fprintf(&b, "NOT settled within %.0f s (%s)", row.SettleS, row.Unsettled)
		}
		fmt.Fprintf(&b, "; %d B in, %d B out, %d packets in the window", row.InBytes, row.OutBytes, row.InPackets+row.OutPackets)
		same := "the same at the end"
		if !row.RelaysSame {
			same = fmt.Sprintf("%d at the end, changed", len(row.RelaysEnd))
		}
		fmt.Fprintf(&b, "; %d relays held at the start, %s", len(row.RelaysStart), same)
		if row.Implementation == Rendezvous {
			fmt.Fprintf(&b, "; %d republishes, %d reachability changes", row.Republishes, row.ReachabilityChanges)
		}
		if row.FlowsError != "" {
			fmt.Fprintf(&b, "; flows unknown: %s", row.FlowsError)
		}
		if len(row.FlowsLost) > 0 {
			fmt.Fprintf(&b, "; flows not kept: %s", strings.Join(row.FlowsLost, ", "))
		}
		if len(row.FlowsNew) > 0 {
			fmt.Fprintf(&b, "; new flows: %s", strings.Join(row.FlowsNew, ", "))
		}
		if row.Exited != "" {
			fmt.Fprintf(&b, "; STOPPED: %s", row.Exited)
		}
		if len(row.Events) > 0 {
			fmt.Fprintf(&b, "; events: %s", strings.Join(row.Events, "; "))
		}
		b.WriteString(".\n")
	}
	return b.String()
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// cell makes s fit in a table cell.
func cell(s string, max int) string {
	s = strings.ReplaceAll(strings.ReplaceAll(s, "|", "/"), "\n", " ")
	if len(s) > max {
		s = s[:max] + "..."
	}
	return s
}
