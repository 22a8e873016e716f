package tcpprobe

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/p2pos/rendezvous/internal/natlab"
)

// labPort is the hold server's port in the lab.
const labPort uint16 = 4040

// hostDial makes Prove's connections inside h's namespace.
func hostDial(h *natlab.Host) DialFunc {
	return func(ctx context.Context, _, addr string) (net.Conn, error) {
		raddr, err := netip.ParseAddrPort(addr)
		if err != nil {
			return nil, err
		}
		return h.DialTCP(ctx, netip.AddrPort{}, raddr)
	}
}

// TestLab holds connections from behind a port-restricted router that
// forgets idle established TCP mappings after 6 s, and, for comparison,
// from behind one that keeps the kernel's default (5 days), to a hold
// server on a public host: 3 s holds survive both, 12 s holds expire
// behind the first only.
func TestLab(t *testing.T) {
	natlab.Require(t)
	const shortTimeout = 6 * time.Second
	spec := natlab.Spec{
		Routers: []natlab.RouterSpec{
			{Name: "r-short", Kind: natlab.PortRestricted, TCPTimeout: shortTimeout},
			{Name: "r-long", Kind: natlab.PortRestricted},
		},
		Hosts: []natlab.HostSpec{{Name: "s1"}, {Name: "h-short", Router: "r-short"}, {Name: "h-long", Router: "r-long"}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	l, err := natlab.New(ctx, spec, natlab.WithLogf(t.Logf))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	t.Logf("lab %s built in %v", l.Prefix(), time.Since(start).Round(time.Millisecond))
	if got := l.Router("r-short").TCPTimeout(); got != shortTimeout {
		t.Fatalf("router TCP timeout %v, want %v", got, shortTimeout)
	}

	s1 := l.Host("s1")
	server := netip.AddrPortFrom(s1.Addr(), labPort)
	ln, err := s1.ListenTCP(server)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(ln, WithLogf(t.Logf))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	holds := []time.Duration{3 * time.Second, 12 * time.Second}
	var wg sync.WaitGroup
	for _, tc := range []struct {
		host         string
		lower, upper time.Duration
		idle         time.Duration // KeepAliveIdle(0.8)
	}{
		{"h-short", 3 * time.Second, 12 * time.Second, 2 * time.Second},
		{"h-long", 12 * time.Second, 0, 9 * time.Second},
	} {
		wg.Go(func() {
			t.Run(tc.host, func(t *testing.T) {
				lt, err := Prove(ctx, hostDial(l.Host(tc.host)), server, holds, WithGrace(2*time.Second),
					WithProgress(func(r Result) {
						t.Logf("hold %v %v (%v) after %v, %d bytes sent, %d received",
							r.Hold, r.Outcome, r.Err, r.Elapsed.Round(time.Millisecond), r.BytesSent, r.BytesReceived)
					}))
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("lifetime [%v, %v], keep-alive idle %v, %d bytes sent, %d received, %v",
					lt.Lower, lt.Upper, lt.KeepAliveIdle(0.8), lt.BytesSent, lt.BytesReceived, lt.Elapsed.Round(time.Millisecond))
				if lt.Lower != tc.lower || lt.Upper != tc.upper {
					t.Errorf("lifetime [%v, %v], want [%v, %v]", lt.Lower, lt.Upper, tc.lower, tc.upper)
				}
				if got := lt.KeepAliveIdle(0.8); got != tc.idle {
					t.Errorf("KeepAliveIdle(0.8) = %v, want %v", got, tc.idle)
				}
				for _, r := range lt.Results {
					if r.Outcome == Expired && r.Err != ErrNoResponse {
						t.Errorf("hold %v expired by %v, want silence (the router drops what it forgot)", r.Hold, r.Err)
					}
				}
			})
		})
	}
	wg.Wait()
	srv.Close() // waits for the server's goroutines, so its counters are final
	st := srv.Stats()
	t.Logf("server: %+v", st)
	if st.Held != 4 || st.Answered != 4 {
		t.Errorf("server held %d and answered %d, want 4 each (the expired answer is sent, then lost)", st.Held, st.Answered)
	}
}
