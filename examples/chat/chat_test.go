package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/p2pos/rendezvous/internal/testnet"
	"github.com/p2pos/rendezvous/plugin"
)

// member runs a chat in this process, and reads its JSON events.
type chatter struct {
	in     *io.PipeWriter
	events chan map[string]any
	done   chan error
}

func startChat(t *testing.T, ctx context.Context, args ...string) *chatter {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	c := &chatter{in: inW, events: make(chan map[string]any, 64), done: make(chan error, 1)}
	go func() {
		err := run(ctx, append(args, "--json"), inR, outW)
		outW.Close()
		c.done <- err
	}()
	go func() {
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				c.events <- ev
			}
		}
		close(c.events)
	}()
	t.Cleanup(func() {
		inW.Close()
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			t.Error("chat did not stop")
		}
	})
	return c
}

// wait returns the next event of kind.
func (c *chatter) wait(t *testing.T, ctx context.Context, kind string) map[string]any {
	t.Helper()
	for {
		select {
		case ev, ok := <-c.events:
			if !ok {
				t.Fatalf("chat ended waiting for %s: %v", kind, <-c.done)
			}
			if ev["event"] == kind {
				return ev
			}
		case <-ctx.Done():
			t.Fatalf("no %s event: %v", kind, ctx.Err())
		}
	}
}

// TestChat: alice runs a node of her own, bob is a plugin of a running
// node; they find each other in the room and each reads what the other
// types.
func TestChat(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tn, err := testnet.New(ctx, testnet.Config{Public: 3, Private: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer tn.Close()
	boot := tn.BootstrapAddrs()
	const token = "chat-plugin-token-0123456789"
	srv, err := plugin.Listen(tn.Private[0], filepath.Join(t.TempDir(), "plugins.sock"),
		&plugin.Config{Plugins: []plugin.Grant{{Name: "chat", Token: token, Register: []string{service}, Open: []string{service}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	alice := startChat(t, ctx, "--room", "test", "--name", "alice", "--bootstrap", strings.Join(boot, ","),
		"--public-ranges", "127.0.0.0/8", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1")
	bob := startChat(t, ctx, "--room", "test", "--name", "bob", "--plugin", srv.Path(), "--token", token)
	alice.wait(t, ctx, "ready")
	bob.wait(t, ctx, "ready")
	if ev := alice.wait(t, ctx, "joined"); ev["name"] != "bob" || ev["peer"] != tn.Private[0].ID().String() {
		t.Fatalf("alice saw %v join", ev)
	}
	if ev := bob.wait(t, ctx, "joined"); ev["name"] != "alice" {
		t.Fatalf("bob saw %v join", ev)
	}
	io.WriteString(alice.in, "hello bob\n")
	if ev := bob.wait(t, ctx, "message"); ev["name"] != "alice" || ev["text"] != "hello bob" {
		t.Fatalf("bob read %v", ev)
	}
	io.WriteString(bob.in, "hi alice\n")
	if ev := alice.wait(t, ctx, "message"); ev["name"] != "bob" || ev["text"] != "hi alice" {
		t.Fatalf("alice read %v", ev)
	}
}
