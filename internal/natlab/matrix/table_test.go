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

func TestMarkdownWithVanilla(t *testing.T) {
	d := func(v float64) *float64 { return &v }
	no, yes := false, true
	r := &Result{Sides: []string{"a", "b"}, Transports: []string{"quic"}, Trials: 2, Cells: []Cell{
		{Impl: Rendezvous, From: "a", To: "a", Trial: 1, OK: true, Path: "hole-punched", FirstByteMS: 190, PublicBytes: 4500, DirectMS: d(150)},
		{Impl: Rendezvous, From: "a", To: "a", Trial: 2, OK: true, Path: "hole-punched", FirstByteMS: 192, PublicBytes: 4500, DirectMS: d(150)},
		{Impl: Vanilla, From: "a", To: "a", Trial: 1, OK: true, Path: "relayed", FirstByteMS: 300, PublicBytes: 50000, PeerDCUtR: &no},
		{Impl: Vanilla, From: "a", To: "a", Trial: 2, OK: true, Path: "relayed", FirstByteMS: 320, PublicBytes: 60000, PeerDCUtR: &no},
		{Impl: Rendezvous, From: "a", To: "b", Trial: 1, OK: true, Path: "direct", FirstByteMS: 100, PublicBytes: 2000, DirectMS: d(60)},
		{Impl: Rendezvous, From: "a", To: "b", Trial: 2, OK: true, Path: "direct", FirstByteMS: 100, PublicBytes: 2000, DirectMS: d(60)},
		{Impl: Vanilla, From: "a", To: "b", Trial: 1, Reason: "dial backoff"},
		{Impl: Vanilla, From: "a", To: "b", Trial: 2, OK: true, Path: "direct", FirstByteMS: 80, PublicBytes: 0, DirectMS: d(40)},
		// No vanilla cell for b -> b: it shows as "-".
		{Impl: Rendezvous, From: "b", To: "b", Trial: 1, OK: true, Path: "relayed", FirstByteMS: 400, PublicBytes: 20000},
		{Impl: Rendezvous, From: "b", To: "b", Trial: 2, OK: true, Path: "relayed", FirstByteMS: 420, PublicBytes: 22000},
	}}
	for i := range r.Cells {
		r.Cells[i].Transport = "quic"
	}
	md := r.Markdown()
	for _, want := range []string{
		"| **a** | H2, 191 ms, 4.5 KB, direct 2/2 · vanilla: R2, 310 ms, 55.0 KB, direct 0/2 | D2, 100 ms, 2.0 KB, direct 2/2 · vanilla: D1 F1, 80 ms, 0.0 KB, direct 1/2 |",
		"| **b** | | R2, 410 ms, 21.0 KB, direct 0/2 · vanilla: - |",
		"Vanilla hole punching: 0 of 2 relayed connections became direct within 20s; the target advertised DCUtR on 0. go-libp2p registers DCUtR only once",
		"out of band",
		"| transport | impl | from | to | trial | reason |",
		"| quic | vanilla | a | b | 1 | dial backoff |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}

	// A punch that worked is reported as such, without the explanation.
	r.Cells[3].Path, r.Cells[3].DirectMS, r.Cells[3].PeerDCUtR = "hole-punched", d(900), &yes
	if got, want := vanillaNote(r.Cells), "Vanilla hole punching: 1 of 2 relayed connections became direct within 20s; the target advertised DCUtR on 1."; got != want {
		t.Errorf("vanillaNote = %q, want %q", got, want)
	}
	if got := vanillaNote(r.Cells[:2]); got != "" {
		t.Errorf("vanillaNote without vanilla relayed cells = %q", got)
	}
}

func TestRelayOf(t *testing.T) {
	const relay = "12D3KooWDtEq9hHySsh3vRjLXwU29x6pgQCsbtUrHZqgRfgQhb3q"
	const target = "12D3KooWEarUVWeSxTKpLDqRMzr3U15mD2q7ut1G7mDiYjQnHwEr"
	for addr, want := range map[string]string{
		"/ip4/10.77.0.10/udp/4001/quic-v1/p2p/" + relay + "/p2p-circuit":               relay,
		"/ip4/10.77.0.10/udp/4001/quic-v1/p2p/" + relay + "/p2p-circuit/p2p/" + target: relay,
		"/ip4/10.77.0.10/udp/4001/quic-v1/p2p/" + target:                               "",
		"/ip4/10.77.1.2/udp/4001/quic-v1":                                              "",
		"not an address":                                                               "",
	} {
		if got := relayOf(addr); got != want {
			t.Errorf("relayOf(%q) = %q, want %q", addr, got, want)
		}
	}
}
