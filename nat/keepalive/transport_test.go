package keepalive

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	noise "github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-yamux/v5"
)

func newHost(t *testing.T, listen string) (host.Host, *Transport) {
	t.Helper()
	var tr *Transport
	h, err := libp2p.New(
		libp2p.NoTransports,
		libp2p.Transport(Constructor(func(x *Transport) { tr = x })),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer("/yamux/1.0.0", Muxer()),
		libp2p.ListenAddrStrings(listen),
		libp2p.DisableMetrics(),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	if tr == nil {
		t.Fatal("constructor did not hand over the transport")
	}
	return h, tr
}

// kernelIdle reads TCP_KEEPIDLE of the socket behind c.
func kernelIdle(t *testing.T, tr *Transport, c network.Conn) time.Duration {
	t.Helper()
	key, ok := connKey(c)
	if !ok {
		t.Fatal("no socket key")
	}
	tr.mu.Lock()
	s := tr.socks[key]
	tr.mu.Unlock()
	if s == nil {
		t.Fatal("socket not tracked")
	}
	sc, ok := s.conn.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		t.Fatal("socket has no SyscallConn")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var secs int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		secs, serr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE)
	}); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return time.Duration(secs) * time.Second
}

func TestTransportControlsKeepAlive(t *testing.T) {
	a, ta := newHost(t, "/ip4/127.0.0.1/tcp/0")
	b, tb := newHost(t, "/ip4/127.0.0.1/tcp/0")
	const proto = protocol.ID("/test/echo")
	b.SetStreamHandler(proto, func(s network.Stream) {
		defer s.Close()
		buf := make([]byte, 5)
		if _, err := s.Read(buf); err == nil {
			s.Write(buf)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
		t.Fatal(err)
	}
	s, err := a.NewStream(ctx, b.ID(), proto)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := s.Read(buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	s.Close()

	ca := a.Network().ConnsToPeer(b.ID())
	if len(ca) != 1 || !IsTCP(ca[0]) {
		t.Fatalf("conns to b: %v", ca)
	}
	// Both ends start with the long default, not libp2p's 30 s.
	if got := kernelIdle(t, ta, ca[0]); got != DefaultIdle {
		t.Fatalf("dialer idle = %v, want %v", got, DefaultIdle)
	}
	cb := b.Network().ConnsToPeer(a.ID())
	if len(cb) != 1 {
		t.Fatalf("conns to a: %v", cb)
	}
	if got := kernelIdle(t, tb, cb[0]); got != DefaultIdle {
		t.Fatalf("listener idle = %v, want %v", got, DefaultIdle)
	}

	if err := ta.SetIdle(ca[0], 90*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := kernelIdle(t, ta, ca[0]); got != 90*time.Second {
		t.Fatalf("idle after SetIdle = %v", got)
	}
	if got, ok := ta.Idle(ca[0]); !ok || got != 90*time.Second {
		t.Fatalf("Idle = %v %v", got, ok)
	}
	if err := ta.SetIdle(ca[0], time.Second); err == nil {
		t.Fatal("idle below MinIdle accepted")
	}
	// yamux pings nobody.
	var sess *yamux.Session
	if !ca[0].As(&sess) {
		t.Fatal("not a yamux connection")
	}

	// A closed connection is forgotten.
	ca[0].Close()
	if err := ta.SetIdle(ca[0], time.Minute); !errors.Is(err, ErrUnknownConn) {
		t.Fatalf("SetIdle on closed conn: %v", err)
	}
	ta.mu.Lock()
	n := len(ta.socks)
	ta.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d sockets still tracked", n)
	}
}

func TestMuxerHasNoKeepAlive(t *testing.T) {
	if m := Muxer(); m.EnableKeepAlive || m.MeasureRTTInterval < time.Hour {
		t.Fatalf("yamux pings idle connections: keep-alive %v, RTT every %v", m.EnableKeepAlive, m.MeasureRTTInterval)
	}
}

func TestSetIdleRejectsForeignConns(t *testing.T) {
	_, tr := newHost(t, "/ip4/127.0.0.1/tcp/0")
	if err := tr.SetIdle(nil, time.Minute); !errors.Is(err, ErrUnknownConn) {
		t.Fatalf("nil conn: %v", err)
	}
}
