package plugin

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/p2pos/rendezvous"
	"github.com/p2pos/rendezvous/internal/testnet"
)

const (
	tokenA = "token-of-plugin-a-0123456789"
	tokenB = "token-of-plugin-b-0123456789"
)

func testConfig(token string) *Config {
	return &Config{Plugins: []Grant{
		{Name: "chat", Token: token, Register: []string{"chat/*"}, Open: []string{"chat/1"}},
		{Name: "other", Token: token + "-other", Register: []string{"other/1"}},
	}}
}

// pair is two private nodes, each serving plugins.
type pair struct {
	tn     *testnet.Network
	a, b   *rendezvous.Node
	sa, sb *Server
}

func newPair(t *testing.T, ctx context.Context) *pair {
	t.Helper()
	tn, err := testnet.New(ctx, testnet.Config{Public: 3, Private: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.Close() })
	p := &pair{tn: tn, a: tn.Private[0], b: tn.Private[1]}
	dir := t.TempDir()
	if p.sa, err = Listen(p.a, filepath.Join(dir, "a.sock"), testConfig(tokenA)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.sa.Close() })
	if p.sb, err = Listen(p.b, filepath.Join(dir, "b.sock"), testConfig(tokenB)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.sb.Close() })
	return p
}

func dial(t *testing.T, ctx context.Context, s *Server, token string) *Client {
	t.Helper()
	c, err := Dial(ctx, s.Path(), token)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exchange sends size random bytes each way over s, and checks that each
// side got what the other sent, by SHA-256.
func exchange(t *testing.T, s net.Conn, size int) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	want := sha256.Sum256(data)
	errc := make(chan error, 1)
	go func() {
		_, err := io.Copy(s, bytes.NewReader(data))
		if err == nil {
			err = s.(interface{ CloseWrite() error }).CloseWrite()
		}
		errc <- err
	}()
	h := sha256.New()
	n, err := io.Copy(h, s)
	if err != nil {
		t.Fatalf("read after %d bytes: %v", n, err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if n != int64(size) || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("got %d bytes, checksum %x; want %d, %x", n, h.Sum(nil), size, want)
	}
}

// TestPluginStreams: plugin b registers chat/1 on its node; plugin a opens
// a stream to it through its own node, and 1 MB crosses each way intact.
func TestPluginStreams(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := newPair(t, ctx)
	ca, cb := dial(t, ctx, p.sa, tokenA), dial(t, ctx, p.sb, tokenB)
	if ca.PeerID() != p.a.ID().String() {
		t.Fatalf("peer ID %s, want %s", ca.PeerID(), p.a.ID())
	}
	l, err := cb.Register(ctx, "chat/1")
	if err != nil {
		t.Fatal(err)
	}
	// b echoes every stream back.
	go func() {
		for {
			s, err := l.AcceptStream(ctx)
			if err != nil {
				return
			}
			go func() {
				io.Copy(s, s)
				s.CloseWrite()
			}()
		}
	}()
	s, err := ca.Open(ctx, p.b.ID().String(), "chat/1")
	if err != nil {
		t.Fatal(err)
	}
	if s.Info().Peer != p.b.ID().String() || s.Info().Service != "chat/1" {
		t.Fatalf("stream info %+v", s.Info())
	}
	// Another session of the same plugin cannot touch the stream: its
	// IDs are its own.
	raw, err := net.Dial("unix", p.sa.Path())
	if err != nil {
		t.Fatal(err)
	}
	raw.Write(appendFrame(nil, frame{typ: frameHello, payload: append([]byte{Version}, tokenA...)}))
	raw.Write(appendFrame(nil, frame{typ: frameReset, id: s.id, payload: []byte("not yours")}))
	raw.Write(appendFrame(nil, frame{typ: frameData, id: s.id, payload: []byte("nor this")}))
	raw.Close()
	exchange(t, s, 1<<20)

	// Deadlines: a read with nothing to read fails at its deadline.
	s2, err := ca.Open(ctx, p.b.ID().String(), "chat/1")
	if err != nil {
		t.Fatal(err)
	}
	s2.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := s2.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v", err)
	}
	s2.Close()

	rec, err := ca.Lookup(ctx, p.b.ID().String())
	if err != nil || rec.PeerID != p.b.ID().String() || len(rec.RelayAddrs) == 0 {
		t.Fatalf("lookup: %+v, %v", rec, err)
	}
	if err := cb.Advertise(ctx, "room-1"); err != nil {
		t.Fatal(err)
	}
	found, err := ca.FindPeers(ctx, "room-1", 10)
	if err != nil || len(found) != 1 || found[0].PeerID != p.b.ID().String() {
		t.Fatalf("find: %+v, %v", found, err)
	}

	// When b's plugin leaves, its node no longer takes chat/1.
	cb.Close()
	<-cb.Done()
	waitUnhandled(t, ctx, p.sb, "chat/1")
	var perr *Error
	if _, err := ca.Open(ctx, p.b.ID().String(), "chat/1"); !errors.As(err, &perr) || perr.Code != CodeNotFound {
		t.Fatalf("open after the plugin left: %v", err)
	}
}

// waitUnhandled waits until s no longer has an owner for svc.
func waitUnhandled(t *testing.T, ctx context.Context, s *Server, svc string) {
	t.Helper()
	for {
		s.mu.Lock()
		owner := s.owners[svc]
		s.mu.Unlock()
		if owner == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s still registered", svc)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestPluginRefusals: a wrong token, a service not granted, and a
// malformed frame each get a clear error, and only the session at fault
// ends.
func TestPluginRefusals(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := newPair(t, ctx)
	good := dial(t, ctx, p.sa, tokenA)

	var perr *Error
	if _, err := Dial(ctx, p.sa.Path(), "not-the-token-at-all"); !errors.As(err, &perr) || perr.Code != CodeAuth {
		t.Fatalf("wrong token: %v", err)
	}
	if _, err := good.Register(ctx, "other/1"); !errors.As(err, &perr) || perr.Code != CodeNotGranted {
		t.Fatalf("ungranted register: %v", err)
	}
	if _, err := good.Open(ctx, p.b.ID().String(), "other/1"); !errors.As(err, &perr) || perr.Code != CodeNotGranted {
		t.Fatalf("ungranted open: %v", err)
	}
	other := dial(t, ctx, p.sa, tokenA+"-other")
	if _, err := other.Register(ctx, "other/1"); err != nil {
		t.Fatal(err)
	}
	// A service registered by one session is taken for the others.
	if _, err := good.Register(ctx, "chat/2"); err != nil {
		t.Fatal(err)
	}
	second := dial(t, ctx, p.sa, tokenA)
	if _, err := second.Register(ctx, "chat/2"); !errors.As(err, &perr) || perr.Code != CodeTaken {
		t.Fatalf("register of a taken service: %v", err)
	}

	// Malformed frames end the session that sent them, with an error.
	for name, raw := range map[string][]byte{
		"unknown type":     appendFrame(nil, frame{typ: 0x7f, id: 1}),
		"oversize payload": {frameLookup, 0, 0, 0, 1, 0, 1, 0, 1},
		"bad window":       nil, // made below: it needs a stream
	} {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("unix", p.sa.Path())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			c.Write(appendFrame(nil, frame{typ: frameHello, payload: append([]byte{Version}, tokenA...)}))
			if f, err := readFrame(c); err != nil || f.typ != frameWelcome {
				t.Fatalf("welcome: %+v, %v", f, err)
			}
			if name == "bad window" {
				// A WINDOW that is not 4 bytes, on a stream that exists.
				c.Write(appendFrame(nil, frame{typ: frameOpen, id: 2, payload: append(appendField(nil, []byte(p.b.ID().String())), "chat/1"...)}))
				raw = appendFrame(nil, frame{typ: frameWindow, id: 2, payload: []byte{1}})
			}
			c.Write(raw)
			for {
				f, err := readFrame(c)
				if err != nil {
					t.Fatalf("no error frame before the close: %v", err)
				}
				if f.typ == frameError && f.id == 0 {
					if e := parseError(f.payload); e.Code != CodeMalformed {
						t.Fatalf("error %v, want code %d", e, CodeMalformed)
					}
					break
				}
			}
			if _, err := readFrame(c); err == nil {
				t.Fatal("the session went on after a malformed frame")
			}
		})
	}
	// The good sessions are untouched.
	if _, err := good.Lookup(ctx, p.b.ID().String()); err != nil {
		t.Fatalf("good session after the others failed: %v", err)
	}
	if _, err := other.Lookup(ctx, p.b.ID().String()); err != nil {
		t.Fatalf("other session after the others failed: %v", err)
	}
}

func FuzzReadFrame(f *testing.F) {
	for _, fr := range []frame{
		{typ: frameHello, payload: append([]byte{Version}, tokenA...)},
		{typ: frameOpen, id: 3, payload: append(appendField(nil, []byte("12D3KooWGieGVbRfiLBt6RkfEGnqazHevw5sdKDjh2xDQsXdMEhD")), "chat/1"...)},
		{typ: frameWindow, id: 3, payload: []byte{0, 1, 0, 0}},
		{typ: frameData, id: 1 << 31, payload: []byte("hello")},
	} {
		f.Add(appendFrame(nil, fr))
	}
	f.Add([]byte{frameData, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := readFrame(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("error %v: neither malformed nor short", err)
			}
			return
		}
		if len(fr.payload) > MaxPayload {
			t.Fatalf("payload of %d bytes", len(fr.payload))
		}
		if out := appendFrame(nil, fr); !bytes.Equal(out, b[:len(out)]) {
			t.Fatalf("re-encoded %x from %x", out, b)
		}
	})
}

func FuzzParseOpen(f *testing.F) {
	f.Add(append(appendField(nil, []byte("12D3KooWGieGVbRfiLBt6RkfEGnqazHevw5sdKDjh2xDQsXdMEhD")), "chat/1"...))
	f.Add([]byte{5, 'a', 'b'})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, svc, err := parseOpen(b)
		if err != nil {
			return
		}
		if rendezvous.CheckService(svc) != nil || p.Validate() != nil {
			t.Fatalf("accepted peer %q, service %q", p, svc)
		}
	})
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"plugins":[{"name":"chat","token":"0123456789abcdefgh","register":["chat/1"],"open":["chat/*"]}]}`))
	f.Add([]byte(`{"plugins":[{"name":"a","token":"short"}]}`))
	f.Add([]byte(`{"plugins":[]} {}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			return
		}
		if err := c.Check(); err != nil {
			t.Fatalf("parsed a config that does not check: %v", err)
		}
		for _, g := range c.Plugins {
			if len(g.Token) < MinTokenLen {
				t.Fatalf("token %q accepted", g.Token)
			}
		}
	})
}

// TestPluginBackpressure: a plugin that does not read its stream holds
// up the writer on the other peer: writes stop within the windows of the
// way (the plugins', the nodes' streams), instead of piling up in memory.
func TestPluginBackpressure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := newPair(t, ctx)
	ca, cb := dial(t, ctx, p.sa, tokenA), dial(t, ctx, p.sb, tokenB)
	l, err := cb.Register(ctx, "chat/1")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan *Stream, 1)
	go func() {
		if s, err := l.AcceptStream(ctx); err == nil {
			accepted <- s // and never read
		}
	}()
	s, err := ca.Open(ctx, p.b.ID().String(), "chat/1")
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	var written int64
	const bound = 256 << 20
	for written < bound {
		s.SetWriteDeadline(time.Now().Add(2 * time.Second))
		n, err := s.Write(chunk)
		written += int64(n)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if written >= bound {
		t.Fatalf("wrote %d bytes to a reader that reads nothing", written)
	}
	t.Logf("the writer stopped after %.1f MB", float64(written)/1e6)
	// Once b reads, the writer goes on.
	r := <-accepted
	go io.Copy(io.Discard, r)
	s.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := s.Write(chunk); err != nil {
		t.Fatalf("write after the reader started: %v", err)
	}
}
