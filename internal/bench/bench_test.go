package bench

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestSmall runs the whole measurement on a small network, so the command
// keeps working; the figures are printed by `go run ./cmd/rendezvous bench`.
func TestSmall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var buf bytes.Buffer
	cfg := Config{Public: 8, Private: 8, Lookups: 20, Publishes: 3, Transport: "quic", Seed: 1}
	if err := Run(ctx, cfg, &buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"Signed record size", "| 20 | 100.0% |", "republish to known holders"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if testing.Verbose() {
		os.Stdout.WriteString(out)
	}
}
