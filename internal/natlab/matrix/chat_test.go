package matrix

import (
	"context"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/p2pos/rendezvous/internal/natlab"
)

// chatEvent is a line of examples/chat --json.
type chatEvent struct {
	Event string `json:"event"`
	Name  string `json:"name"`
	Path  string `json:"path"`
	Text  string `json:"text"`
}

// TestChatAcrossNATs: the example chat carries messages both ways between
// two peers behind port-restricted routers (directly) and between two
// behind symmetric routers (through a data relay).
func TestChatAcrossNATs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := buildForLab(t, ctx)
	_, file, _, _ := runtime.Caller(0)
	chat, err := natlab.BuildCommand(ctx, filepath.Join(filepath.Dir(file), "..", "..", ".."), "./examples/chat", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	lab, err := natlab.New(ctx, natlab.Spec{
		Internet: natlab.Internet{Delay: 10 * time.Millisecond},
		Routers: []natlab.RouterSpec{
			{Name: "home1", Kind: natlab.PortRestricted}, {Name: "home2", Kind: natlab.PortRestricted},
			{Name: "sym1", Kind: natlab.Symmetric}, {Name: "sym2", Kind: natlab.Symmetric},
		},
		Hosts: []natlab.HostSpec{
			{Name: "server1"}, {Name: "server2"},
			{Name: "alice", Router: "home1"}, {Name: "bob", Router: "home2"},
			{Name: "carol", Router: "sym1"}, {Name: "dave", Router: "sym2"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	boot := strings.Join(startServersWith(t, ctx, lab, bin, []string{"--data-relay", "1h,64MiB,16"}, "server1", "server2"), ",")
	for _, pair := range []struct{ room, a, b, path string }{
		{"home", "alice", "bob", "direct"},
		{"symmetric", "carol", "dave", "relayed"},
	} {
		t.Run(pair.room, func(t *testing.T) {
			start := func(name string) *natlab.Proc {
				p, err := lab.Host(name).Start(ctx, chat, "--json", "--room", pair.room, "--name", name, "--bootstrap", boot,
					"--public-ranges", natlab.InternetPrefix().String(), "--listen", "/ip4/0.0.0.0/udp/4001/quic-v1")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { p.Stop(5 * time.Second) })
				return p
			}
			next := func(p *natlab.Proc, kind string) chatEvent {
				for {
					var ev chatEvent
					if err := p.NextJSON(ctx, &ev); err != nil {
						t.Fatalf("waiting for %s: %v: %s", kind, err, p.Stderr())
					}
					if ev.Event == kind {
						return ev
					}
				}
			}
			a, b := start(pair.a), start(pair.b)
			ja, jb := next(a, "joined"), next(b, "joined")
			t.Logf("%s sees %s %s; %s sees %s %s", pair.a, ja.Name, ja.Path, pair.b, jb.Name, jb.Path)
			if ja.Name != pair.b || jb.Name != pair.a {
				t.Fatalf("joined: %+v, %+v", ja, jb)
			}
			if ja.Path != pair.path {
				t.Errorf("path %s, want %s", ja.Path, pair.path)
			}
			if err := a.WriteLine("hello from " + pair.a); err != nil {
				t.Fatal(err)
			}
			if m := next(b, "message"); m.Name != pair.a || m.Text != "hello from "+pair.a {
				t.Fatalf("%s read %+v", pair.b, m)
			}
			if err := b.WriteLine("hello from " + pair.b); err != nil {
				t.Fatal(err)
			}
			if m := next(a, "message"); m.Name != pair.b || m.Text != "hello from "+pair.b {
				t.Fatalf("%s read %+v", pair.a, m)
			}
		})
	}
}
