package plugin

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/p2pos/rendezvous"
	"github.com/p2pos/rendezvous/internal/testnet"
)

// benchPair is two nodes on loopback, directly connected, each serving
// plugins, with a plugin client on each, and these services on b: in the
// node (direct libp2p streams) sink-node/1 and echo-node/1, through b's
// plugin sink/1 and echo/1.
type benchPair struct {
	a, b   *rendezvous.Node
	ca, cb *Client
}

func newBenchPair(b *testing.B, ctx context.Context) *benchPair {
	b.Helper()
	tn, err := testnet.New(ctx, testnet.Config{Public: 3, Private: 2})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tn.Close() })
	p := &benchPair{a: tn.Private[0], b: tn.Private[1]}
	cfg := &Config{Plugins: []Grant{{Name: "bench", Token: tokenA, Register: []string{"sink/1", "echo/1"}, Open: []string{"sink/1", "echo/1"}}}}
	dir := b.TempDir()
	for i, n := range []*rendezvous.Node{p.a, p.b} {
		s, err := Listen(n, filepath.Join(dir, []string{"a.sock", "b.sock"}[i]), cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		c, err := Dial(ctx, s.Path(), tokenA)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		if i == 0 {
			p.ca = c
		} else {
			p.cb = c
		}
	}
	sink := func(s net.Conn) {
		io.Copy(io.Discard, s)
		s.Write([]byte{1})
		s.Close()
	}
	echo := func(s net.Conn) {
		io.Copy(s, s)
		s.Close()
	}
	p.b.Handle("sink-node/1", func(s *rendezvous.Stream) { sink(s) })
	p.b.Handle("echo-node/1", func(s *rendezvous.Stream) { echo(s) })
	for svc, f := range map[string]func(net.Conn){"sink/1": sink, "echo/1": echo} {
		l, err := p.cb.Register(ctx, svc)
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			for {
				s, err := l.AcceptStream(ctx)
				if err != nil {
					return
				}
				go f(s)
			}
		}()
	}
	// Connect, and wait for the connection to be direct.
	if _, err := p.a.Connect(ctx, p.b.ID()); err != nil {
		b.Fatal(err)
	}
	if _, err := p.a.WaitDirect(ctx, p.b.ID()); err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkStream measures a stream from plugin to plugin through two
// nodes against a libp2p stream between the same two nodes, directly
// connected on loopback: throughput (MB/s, 1 MiB per op) and round trips
// of one byte (p50 in µs).
func BenchmarkStream(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	p := newBenchPair(b, ctx)
	chunk := make([]byte, 64<<10)
	for _, via := range []string{"direct", "plugin"} {
		plugin := via == "plugin"
		b.Run("throughput/"+via, func(b *testing.B) {
			svc := "sink/1"
			if !plugin {
				svc = "sink-node/1"
			}
			s := openService(b, ctx, p, plugin, svc)
			b.SetBytes(1 << 20)
			b.ResetTimer()
			for range b.N {
				for range 16 {
					if _, err := s.Write(chunk); err != nil {
						b.Fatal(err)
					}
				}
			}
			s.(interface{ CloseWrite() error }).CloseWrite()
			if _, err := io.ReadFull(s, make([]byte, 1)); err != nil { // the sink read everything
				b.Fatal(err)
			}
			b.StopTimer()
			s.Close()
		})
		b.Run("roundtrip/"+via, func(b *testing.B) {
			svc := "echo/1"
			if !plugin {
				svc = "echo-node/1"
			}
			s := openService(b, ctx, p, plugin, svc)
			defer s.Close()
			one := []byte{7}
			rtts := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				if _, err := s.Write(one); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(s, one); err != nil {
					b.Fatal(err)
				}
				rtts = append(rtts, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(rtts)
			b.ReportMetric(float64(rtts[len(rtts)/2].Microseconds()), "p50-µs")
		})
	}
}

func openService(b *testing.B, ctx context.Context, p *benchPair, viaPlugin bool, service string) net.Conn {
	b.Helper()
	var s net.Conn
	var err error
	if viaPlugin {
		s, err = p.ca.Open(ctx, p.b.ID().String(), service)
	} else {
		s, err = p.a.Open(ctx, p.b.ID(), service)
	}
	if err != nil {
		b.Fatal(err)
	}
	return s
}
