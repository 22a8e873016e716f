package matrix

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/p2pos/rendezvous/internal/natlab"
)

// TestMatrixSeesSuccessAndFailure runs a small matrix (public, a
// port-restricted router and a router cut off on purpose, QUIC only) and
// checks that working pairs connect over the expected path and that every
// pair with the cut-off side fails with a reason.
func TestMatrixSeesSuccessAndFailure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bin := buildForLab(t, ctx)
	res, err := Run(ctx, Config{
		Binary:     bin,
		Sides:      []string{Public, string(natlab.PortRestricted), Broken},
		Transports: []string{"quic"},
		Timeout:    10 * time.Second,
		Logf:       t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Cells) != 6 {
		t.Fatalf("%d cells, want 6", len(res.Cells))
	}
	for _, c := range res.Cells {
		broken := c.From == Broken || c.To == Broken
		switch {
		case broken && c.OK:
			t.Errorf("%s -> %s connected through a cut-off router", c.From, c.To)
		case broken && c.Reason == "":
			t.Errorf("%s -> %s failed without a reason", c.From, c.To)
		case !broken && !c.OK:
			t.Errorf("%s -> %s failed: %s", c.From, c.To, c.Reason)
		case !broken && c.To == Public && c.Path != "direct":
			t.Errorf("%s -> public: path %s, want direct", c.From, c.Path)
		case !broken && c.To != Public && c.Path != "hole-punched":
			// Behind port-restricted routers (endpoint-independent
			// mapping), the target's relay coordinates a punch.
			t.Errorf("%s -> %s: path %s, want hole-punched", c.From, c.To, c.Path)
		case !broken && (c.FirstByteMS <= 0 || c.PublicBytes <= 0):
			t.Errorf("%s -> %s: first byte %.1f ms, %d public bytes: not measured", c.From, c.To, c.FirstByteMS, c.PublicBytes)
		}
	}
	md := res.Markdown()
	if !strings.Contains(md, "FAIL") || !strings.Contains(md, "| **public** | D ") {
		t.Errorf("table does not show the outcomes:\n%s", md)
	}
	t.Logf("\n%s", md)
}

// TestMatrixVanilla runs a small matrix with vanilla go-libp2p beside this
// library (public and a port-restricted router, QUIC only) and checks that
// every vanilla cell is measured: a public target directly, a NATed one
// through a relay it reserved on (go-libp2p cannot punch in the lab, whose
// internet is a private range, but a punch would count too).
func TestMatrixVanilla(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := buildForLab(t, ctx)
	van := buildVanillaForLab(t, ctx)
	res, err := Run(ctx, Config{
		Binary:        bin,
		VanillaBinary: van,
		Sides:         []string{Public, string(natlab.PortRestricted)},
		Transports:    []string{"quic"},
		Timeout:       10 * time.Second,
		Logf:          t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Cells) != 6 {
		t.Fatalf("%d cells, want 6", len(res.Cells))
	}
	vanilla := 0
	for _, c := range res.Cells {
		if c.Impl != Vanilla {
			continue
		}
		vanilla++
		switch {
		case !c.OK:
			t.Errorf("vanilla %s -> %s failed: %s", c.From, c.To, c.Reason)
		case c.To == Public && c.Path != "direct":
			t.Errorf("vanilla %s -> public: path %s, want direct", c.From, c.Path)
		case c.To != Public && c.Path != "relayed" && c.Path != "hole-punched":
			t.Errorf("vanilla %s -> %s: path %s, want relayed or hole-punched", c.From, c.To, c.Path)
		case c.To != Public && c.Relay == "":
			t.Errorf("vanilla %s -> %s: no relay named", c.From, c.To)
		case c.FirstByteMS <= 0 || c.PeerDCUtR == nil || (c.To != Public && c.PublicBytes <= 0):
			// A direct connection to a public target need not cross
			// the public nodes at all.
			t.Errorf("vanilla %s -> %s: first byte %.1f ms, %d public bytes, DCUtR %v: not measured",
				c.From, c.To, c.FirstByteMS, c.PublicBytes, c.PeerDCUtR)
		}
	}
	if vanilla != 3 {
		t.Errorf("%d vanilla cells, want 3", vanilla)
	}
	md := res.Markdown()
	if !strings.Contains(md, "| **public** | D ") || !strings.Contains(md, " · vanilla: D ") || !strings.Contains(md, "Vanilla hole punching:") {
		t.Errorf("table does not show both implementations:\n%s", md)
	}
	t.Logf("\n%s", md)
}
