package rendezvous_test

import (
	"context"
	"testing"
	"time"

	"github.com/p2pos/rendezvous/internal/testnet"
	"github.com/p2pos/rendezvous/relay"
)

func TestSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	net, err := testnet.New(ctx, testnet.Config{Public: 4, Private: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	t.Logf("network up in %v", time.Since(start))
	a, b := net.Private[0], net.Private[1]
	rec, err := a.Lookup(ctx, b.ID())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("record: %v", rec)
	c, err := a.Connect(ctx, b.ID())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("path %+v", c.Path)
	if c.Path.Kind != relay.PathRelayed {
		t.Fatalf("want relayed, got %v", c.Path.Kind)
	}
}
