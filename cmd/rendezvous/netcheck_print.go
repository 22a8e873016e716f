package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/p2pos/rendezvous/nat/probe"
)

// The netcheck screen and its progress bar.

// isTerminal reports whether w is a terminal, where a progress bar may be
// drawn.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progressBar draws a one-line progress bar, redrawn every second and
// whenever a probe finishes, until stop, which erases it.
type progressBar struct {
	w        io.Writer
	start    time.Time
	expected time.Duration
	quit     chan struct{}
	wg       sync.WaitGroup

	mu          sync.Mutex // guards the fields below and writes to w
	done, total int
	width       int // of the line drawn last
}

func startProgress(w io.Writer, total int, expected time.Duration) *progressBar {
	p := &progressBar{w: w, start: time.Now(), expected: expected, total: total, quit: make(chan struct{})}
	p.draw()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-p.quit:
				return
			case <-tick.C:
				p.draw()
			}
		}
	}()
	return p
}

// update is the progress function given to probe.MeasureTimeout.
func (p *progressBar) update(done, total int) {
	p.mu.Lock()
	p.done, p.total = done, total
	p.mu.Unlock()
	p.draw()
}

func (p *progressBar) draw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	line := progressLine(p.done, p.total, time.Since(p.start), p.expected)
	pad := ""
	if n := len(line); n < p.width {
		pad = strings.Repeat(" ", p.width-n)
	}
	p.width = len(line)
	fmt.Fprintf(p.w, "\r%s%s", line, pad)
}

func (p *progressBar) stop() {
	close(p.quit)
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", p.width))
}

// progressBarWidth is the number of cells of the bar.
const progressBarWidth = 20

// progressLine is the progress bar after elapsed of a measurement expected
// to take expected: "[#####...............] 3/10 probes, 2m10s left". The
// bar fills with time, since the longest probe decides when it ends.
func progressLine(done, total int, elapsed, expected time.Duration) string {
	frac := 1.0
	if expected > 0 && elapsed < expected {
		frac = float64(elapsed) / float64(expected)
	}
	if done >= total {
		frac = 1
	}
	filled := int(frac * progressBarWidth)
	left := max(expected-elapsed, 0).Round(time.Second)
	return fmt.Sprintf("[%s%s] %d/%d probes, %v left",
		strings.Repeat("#", filled), strings.Repeat(".", progressBarWidth-filled), done, total, left)
}

// printNetcheck writes the report as one screen of text.
func printNetcheck(w io.Writer, r *netcheckJSON) error {
	var rep reportWriter
	rep.row("Peer ID", r.PeerID)
	rep.row("Scope", r.Scope)
	rep.row("IPv4", addrLines(r.IPv4)...)
	rep.row("IPv6", addrLines(r.IPv6)...)

	pm := r.PortMapping
	if pm.Error != "" {
		rep.row("Port mapping", pm.Error)
	} else {
		rep.row("Port mapping", fmt.Sprintf("gateway %s: UPnP %s, NAT-PMP %s, PCP %s",
			pm.Gateway, serviceText(pm.UPnP), serviceText(pm.NATPMP), serviceText(pm.PCP)))
	}
	if u := pm.UDP; u != nil {
		line := fmt.Sprintf("%s via %s, lifetime %v", u.External, u.Protocol, fmtDuration(pm.mapping.Lifetime))
		if u.Deleted {
			line += " (deleted again)"
		} else {
			line += " (not deleted: " + u.DeleteError + ")"
		}
		rep.row("UDP mapping", line)
	} else {
		rep.row("UDP mapping", "none: "+pm.UDPError)
	}

	switch r.Reachability {
	case "public":
		rep.row("Reachability", "public (confirmed by dial-back)")
	case "private":
		rep.row("Reachability", "private (no peer could dial back an in-scope address)")
	default:
		rep.row("Reachability", fmt.Sprintf("unknown (no dial-back verdict within %v)", reachabilityWait))
	}

	if len(r.ProbeServers) > 0 {
		var addrs []string
		for _, s := range r.ProbeServers {
			addrs = append(addrs, s.Primary)
		}
		rep.row("Probe servers", fmt.Sprintf("%d: %s", len(r.ProbeServers), strings.Join(addrs, ", ")))
	}
	if n := r.NAT; n != nil {
		rep.row("Mapping", behaviourText(n.Mapping, n.MappingAmbiguousWith, n.MappingConfidence))
		rep.row("Filtering", behaviourText(n.Filtering, n.FilteringAmbiguousWith, n.FilteringConfidence))
		rep.row("Port pattern", fmt.Sprintf("%s (confidence %s)", n.PortPattern, pct(n.PortConfidence)))
		rep.row("Hairpin", hairpinText(n.Hairpin))
		rep.row("External addr", n.External)
		servers := plural(n.Servers, "server address")
		if n.MappingAmbiguousWith != "" || n.FilteringAmbiguousWith != "" {
			servers += " (too few to tell every behaviour apart: confidences halved)"
		}
		rep.row("Measured with", servers)
		rep.row("Probe traffic", fmt.Sprintf("%s, %s, %s", plural(n.Packets, "packet"), fmtBytes(int64(n.Bytes)),
			fmtMS(n.elapsed)))
	} else {
		rep.row("NAT", r.NATError)
	}

	switch b := r.Timeout; {
	case r.Quick:
		rep.row("Binding timeout", "not measured (--quick)")
	case b == nil:
		rep.row("Binding timeout", r.TimeoutError)
	default:
		res := b.res
		rep.row("Binding timeout", timeoutText(res))
		keep, rule := keepAlive(res)
		rep.row("Keep-alive", fmt.Sprintf("every %v (%s)", fmtDuration(keep), rule))
		rep.row("Timeout probes", fmt.Sprintf("%s, %s, %s",
			plural(len(b.CandidatesMS), "probe"), fmtDuration(res.Elapsed.Round(100*time.Millisecond)), fmtBytes(int64(res.Bytes))))
	}
	fmt.Fprintln(w, "Report:")
	return rep.flush(w)
}

// timeoutText describes the bounds of a binding timeout.
func timeoutText(res probe.TimeoutResult) string {
	var s string
	switch {
	case res.Lower > 0 && res.Upper > 0:
		s = fmt.Sprintf("between %v and %v, about %v", fmtDuration(res.Lower), fmtDuration(res.Upper), fmtDuration(res.Estimate))
	case res.Lower > 0:
		s = fmt.Sprintf("at least %v (every probe survived)", fmtDuration(res.Lower))
	default:
		s = fmt.Sprintf("under %v (no probe survived), about %v", fmtDuration(res.Upper), fmtDuration(res.Estimate))
	}
	if !res.Consistent {
		s += "; inconsistent: a probe expired below one that survived (a lost answer?)"
	}
	if n := len(res.Unacknowledged); n > 0 {
		s += fmt.Sprintf("; %s unacknowledged", plural(n, "probe"))
	}
	return s
}

func addrLines(addrs []addrJSON) []string {
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		if a.InScope {
			out = append(out, a.Addr+" (in scope)")
		} else {
			out = append(out, a.Addr+" (out of scope)")
		}
	}
	return out
}

func serviceText(s *serviceJSON) string {
	switch {
	case s.OK && s.External != "":
		return "yes (external " + s.External + ")"
	case s.OK:
		return "yes"
	case s.Error == "" || s.ErrorKind == "not_supported":
		return "no"
	}
	return "no (" + s.Error + ")"
}

func hairpinText(h *bool) string {
	switch {
	case h == nil:
		return "not tested"
	case *h:
		return "yes"
	}
	return "no"
}

func pct(f float64) string { return fmt.Sprintf("%.0f%%", f*100) }

// reportWriter writes the netcheck report: "\t* Key: value" lines with
// the values aligned, a value of several lines one under the other.
type reportWriter struct {
	keys   []string
	values [][]string
}

func (rw *reportWriter) row(key string, values ...string) {
	if len(values) == 0 {
		values = []string{"none"}
	}
	rw.keys = append(rw.keys, key)
	rw.values = append(rw.values, values)
}

func (rw *reportWriter) flush(w io.Writer) error {
	width := 0
	for _, k := range rw.keys {
		width = max(width, len(k)+1)
	}
	var b strings.Builder
	for i, k := range rw.keys {
		for j, v := range rw.values[i] {
			if j == 0 {
				fmt.Fprintf(&b, "\t* %-*s %s\n", width, k+":", v)
			} else {
				fmt.Fprintf(&b, "\t  %-*s %s\n", width, "", v)
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// behaviourText describes a measured behaviour, or the two it could not be
// told apart from.
func behaviourText(b, ambiguousWith string, confidence float64) string {
	if ambiguousWith != "" {
		return fmt.Sprintf("undetermined: %s or %s (confidence %s)", b, ambiguousWith, pct(confidence))
	}
	return fmt.Sprintf("%s (confidence %s)", b, pct(confidence))
}
