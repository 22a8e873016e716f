package classify

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Row sums up the runs of one kind in one network.
type Row struct {
	Kind     string
	Expected string
	Peers    int
	Matched  int
	Runs     int
	// Seen counts what was seen in the runs that did not match.
	Seen map[string]int
	// MedianClassify is the median time the NAT classification took, over
	// the runs that classified; MedianNetcheck that of the whole netcheck.
	MedianClassify, MedianNetcheck time.Duration
}

// Rows sums the runs up by network, then kind, in the order they ran.
func (r *Result) Rows() []Row {
	var rows []Row
	index := map[[2]any]int{}
	classify := map[int][]float64{}
	netcheck := map[int][]float64{}
	for _, run := range r.Runs {
		key := [2]any{run.Peers, run.Kind}
		i, ok := index[key]
		if !ok {
			i = len(rows)
			index[key] = i
			rows = append(rows, Row{Kind: run.Kind, Expected: expectations[run.Kind].text, Peers: run.Peers, Seen: map[string]int{}})
		}
		row := &rows[i]
		row.Runs++
		switch {
		case run.Matched:
			row.Matched++
		case run.Error != "":
			row.Seen["error: "+run.Error]++
		default:
			row.Seen[run.Seen]++
		}
		if run.ClassifyMS > 0 {
			classify[i] = append(classify[i], run.ClassifyMS)
		}
		if run.NetcheckMS > 0 {
			netcheck[i] = append(netcheck[i], run.NetcheckMS)
		}
	}
	for i := range rows {
		rows[i].MedianClassify = median(classify[i])
		rows[i].MedianNetcheck = median(netcheck[i])
	}
	return rows
}

// median returns the median of ms, in milliseconds, as a duration; 0 for
// none.
func median(ms []float64) time.Duration {
	if len(ms) == 0 {
		return 0
	}
	s := slices.Clone(ms)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return time.Duration(m * float64(time.Millisecond))
}

// Markdown renders the rows as one Markdown table.
func (r *Result) Markdown() string {
	var b strings.Builder
	b.WriteString("| kind | expected | public peers | matched / runs | seen when not matched | median classify | median netcheck |\n")
	b.WriteString("|---|---|---:|---:|---|---:|---:|\n")
	for _, row := range r.Rows() {
		fmt.Fprintf(&b, "| %s | %s | %d | %d / %d | %s | %s | %s |\n", row.Kind, row.Expected, row.Peers,
			row.Matched, row.Runs, seenText(row.Seen), fmtMS(row.MedianClassify), fmtMS(row.MedianNetcheck))
	}
	return b.String()
}

// seenText lists what was seen, most frequent first.
func seenText(seen map[string]int) string {
	if len(seen) == 0 {
		return ""
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if c := seen[b] - seen[a]; c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d× %s", seen[k], strings.ReplaceAll(k, "|", "/"))
	}
	return strings.Join(parts, "; ")
}

func fmtMS(d time.Duration) string {
	if d == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}
