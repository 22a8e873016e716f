package matrix

import (
	"strings"
	"testing"
)

func TestCellText(t *testing.T) {
	d := func(v float64) *float64 { return &v }
	cs := []Cell{
		{OK: true, Path: "hole-punched", FirstByteMS: 200, PublicBytes: 9000, DirectMS: d(150)},
		{OK: true, Path: "hole-punched", FirstByteMS: 240, PublicBytes: 11000, DirectMS: d(190)},
		{OK: true, Path: "relayed", FirstByteMS: 500, PublicBytes: 40000},
		{OK: false, Reason: "timed out"},
	}
	if got, want := cellText(cs, 4), "H2 R1 F1, 240 ms, 11.0 KB, direct 2/4"; got != want {
		t.Errorf("cellText = %q, want %q", got, want)
	}
	if got := cellText(cs[3:], 1); got != "FAIL" {
		t.Errorf("one failed trial: %q", got)
	}
	if got := cellText(cs[:1], 1); got != "H 200 ms 9.0 KB" {
		t.Errorf("one trial: %q", got)
	}
	if got := median([]float64{3, 1, 2, 4}); got != 2.5 {
		t.Errorf("median = %v", got)
	}
	r := &Result{Sides: []string{"a"}, Transports: []string{"quic"}, Trials: 4, Cells: cs}
	for i := range r.Cells {
		r.Cells[i].Transport, r.Cells[i].From, r.Cells[i].To, r.Cells[i].Trial = "quic", "a", "a", i+1
	}
	md := r.Markdown()
	if !strings.Contains(md, "| **a** | H2 R1 F1") || !strings.Contains(md, "| quic | a | a | 4 | timed out |") {
		t.Errorf("markdown:\n%s", md)
	}
}
