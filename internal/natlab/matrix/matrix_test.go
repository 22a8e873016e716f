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
