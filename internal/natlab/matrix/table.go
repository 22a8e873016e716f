package matrix

import (
	"fmt"
	"sort"
	"strings"
)

// Markdown writes the result as tables, one per transport: rows connect to
// columns. With vanilla cells, each cell shows this library's result, then
// vanilla go-libp2p's, and a line under each table says what became of
// vanilla's relayed connections.
func (r *Result) Markdown() string {
	var b strings.Builder
	trials := max(r.Trials, 1)
	fmt.Fprintf(&b, "Connection matrix: %d public servers, one-way delay %.0f ms, %d trial(s) per pair", r.Servers, r.DelayMS, trials)
	if r.VanillaTrials > 0 && r.VanillaTrials < trials {
		fmt.Fprintf(&b, " (vanilla: %d)", r.VanillaTrials)
	}
	fmt.Fprintf(&b, ", %.0f s in all.\n", r.Seconds)
	if trials == 1 {
		fmt.Fprintf(&b, "Cells: path, time to first byte (lookup + dial + first round trip), bytes through public nodes from the lookup on. "+
			"D = direct, H = hole-punched, R = relayed, FAIL = no connection.\n")
	} else {
		fmt.Fprintf(&b, "Cells: paths taken (D = direct, H = hole-punched, R = relayed, F = failed), median time to first byte "+
			"(lookup + dial + first round trip), median bytes through public nodes from the lookup on, and how many "+
			"trials were direct (D or H) within %v.\n", directWait)
	}
	vanilla := false
	byKey := map[string][]Cell{}
	for _, c := range r.Cells {
		k := cellKey(c.Impl, c.Transport, c.From, c.To)
		byKey[k] = append(byKey[k], c)
		vanilla = vanilla || c.Impl == Vanilla
	}
	if vanilla {
		b.WriteString("Each cell shows this library, then after \"vanilla:\" stock go-libp2p with defaults (hole punching on, " +
			"autorelay with the public servers as static relays, kad-dht client; forced private behind a router). " +
			"Vanilla cannot look a NATed peer up by its ID, so its dialer is given the target's addresses as an application " +
			"would exchange them out of band: circuit addresses through the servers it holds reservations on (behind a router), " +
			"its listen address (public). Vanilla's first byte is dial + first round trip (no lookup); its bytes are counted from " +
			"the dialer's start, including its handshake with the relay.\n")
	}
	var fails []Cell
	for _, tr := range r.Transports {
		title := strings.ToUpper(tr)
		if tr == Both {
			title = "QUIC and TCP"
		}
		fmt.Fprintf(&b, "\n### %s\n\n| from \\ to |", title)
		for _, s := range r.Sides {
			fmt.Fprintf(&b, " %s |", s)
		}
		b.WriteString("\n|---|")
		for range r.Sides {
			b.WriteString("---|")
		}
		b.WriteString("\n")
		for i, from := range r.Sides {
			fmt.Fprintf(&b, "| **%s** |", from)
			for j, to := range r.Sides {
				if j < i {
					b.WriteString(" |")
					continue
				}
				cs := byKey[cellKey(Rendezvous, tr, from, to)]
				vs := byKey[cellKey(Vanilla, tr, from, to)]
				for _, c := range append(cs, vs...) {
					if !c.OK {
						fails = append(fails, c)
					}
				}
				text := cellText(cs, trials)
				if vanilla {
					text += " · vanilla: " + cellText(vs, trials)
				}
				b.WriteString(" " + text + " |")
			}
			b.WriteString("\n")
		}
		relayed, viaData := 0, 0
		for _, c := range r.Cells {
			if c.Transport == tr && implName(c.Impl) == Rendezvous && c.OK && c.Path == "relayed" {
				relayed++
				if c.ViaDataRelay {
					viaData++
				}
			}
		}
		if relayed > 0 {
			fmt.Fprintf(&b, "\nRelayed connections through the server that volunteers as a data relay: %d of %d.\n", viaData, relayed)
		}
		if vanilla {
			var cs []Cell
			for _, c := range r.Cells {
				if c.Transport == tr {
					cs = append(cs, c)
				}
			}
			if note := vanillaNote(cs); note != "" {
				b.WriteString("\n" + note + "\n")
			}
		}
	}
	if len(fails) > 0 {
		sort.SliceStable(fails, func(i, j int) bool { return fails[i].Transport < fails[j].Transport })
		b.WriteString("\nFailures:\n\n")
		if vanilla {
			b.WriteString("| transport | impl | from | to | trial | reason |\n|---|---|---|---|---:|---|\n")
		} else {
			b.WriteString("| transport | from | to | trial | reason |\n|---|---|---|---:|---|\n")
		}
		for _, c := range fails {
			impl := ""
			if vanilla {
				impl = " " + implName(c.Impl) + " |"
			}
			fmt.Fprintf(&b, "| %s |%s %s | %s | %d | %s |\n", c.Transport, impl, c.From, c.To, c.Trial, strings.ReplaceAll(c.Reason, "|", "/"))
		}
	}
	return b.String()
}

// cellKey groups the cells of one implementation, transport and pair.
func cellKey(impl, transport, from, to string) string {
	return implName(impl) + "|" + transport + "|" + from + "|" + to
}

// implName is a cell's implementation; results from before vanilla cells
// existed name none.
func implName(impl string) string {
	if impl == "" {
		return Rendezvous
	}
	return impl
}

// cellText sums up a pair's trials.
func cellText(cs []Cell, trials int) string {
	if len(cs) == 0 {
		return "-"
	}
	if trials == 1 && len(cs) == 1 {
		c := cs[0]
		if !c.OK {
			return "FAIL"
		}
		return fmt.Sprintf("%s %.0f ms %.1f KB", pathLetter(c.Path), c.FirstByteMS, float64(c.PublicBytes)/1000)
	}
	counts := map[string]int{}
	var firsts, bytes []float64
	direct := 0
	for _, c := range cs {
		if !c.OK {
			counts["F"]++
			continue
		}
		counts[pathLetter(c.Path)]++
		firsts = append(firsts, c.FirstByteMS)
		bytes = append(bytes, float64(c.PublicBytes)/1000)
		if c.DirectMS != nil && *c.DirectMS <= float64(directWait.Milliseconds()) {
			direct++
		}
	}
	var paths []string
	for _, l := range []string{"D", "H", "R", "F"} {
		if counts[l] > 0 {
			paths = append(paths, fmt.Sprintf("%s%d", l, counts[l]))
		}
	}
	if len(firsts) == 0 {
		return strings.Join(paths, " ")
	}
	return fmt.Sprintf("%s, %.0f ms, %.1f KB, direct %d/%d", strings.Join(paths, " "), median(firsts), median(bytes), direct, len(cs))
}

// median returns the middle value of xs (the mean of the two middle ones
// for an even count).
func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func pathLetter(p string) string {
	switch p {
	case "direct":
		return "D"
	case "hole-punched":
		return "H"
	case "relayed":
		return "R"
	}
	return p
}
