package portmap

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/p2pos/rendezvous/internal/natlab"
)

// newLab builds a lab that is closed when the test ends.
func newLab(t *testing.T, spec natlab.Spec) *natlab.Lab {
	t.Helper()
	natlab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := natlab.New(ctx, spec, natlab.WithLogf(t.Logf))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return l
}

// labClient returns a Client whose sockets are all made inside h's
// namespace.
func labClient(t *testing.T, h *natlab.Host, opts ...Option) *Client {
	t.Helper()
	dial := func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = h.Do(func() error {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	listen := func(ctx context.Context, network, addr string) (c net.PacketConn, err error) {
		err = h.Do(func() error {
			c, err = (&net.ListenConfig{}).ListenPacket(ctx, network, addr)
			return err
		})
		return c, err
	}
	base := []Option{WithGateway(h.Gateway()), WithDialer(dial), WithListenPacket(listen)}
	c, err := NewClient(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// listenApp opens the socket a mapping is for, in h's namespace.
func listenApp(t *testing.T, h *natlab.Host) (*net.UDPConn, uint16) {
	t.Helper()
	c, err := h.ListenUDP(netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, netip.MustParseAddrPort(c.LocalAddr().String()).Port()
}

// reaches sends payload from a fresh socket on the public host s to dst and
// reports whether app receives it within window. A fresh socket is a new
// flow, which conntrack has not seen: only a mapping lets it in.
func reaches(t *testing.T, s *natlab.Host, dst netip.AddrPort, app *net.UDPConn, payload string, window time.Duration) bool {
	t.Helper()
	sender, err := s.ListenUDP(netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	if _, err := sender.WriteToUDPAddrPort([]byte(payload), dst); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	app.SetReadDeadline(time.Now().Add(window)) //nolint:errcheck
	for {
		n, _, err := app.ReadFromUDPAddrPort(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		if string(buf[:n]) == payload {
			return true
		}
	}
}

// TestLabMiniupnpd runs the Client against the real miniupnpd of a UPnP
// router: every protocol answers, each maps a UDP port that lets a public
// host in until the mapping is deleted, and a Keeper renews and deletes.
func TestLabMiniupnpd(t *testing.T) {
	t.Parallel()
	l := newLab(t, natlab.Spec{
		Routers: []natlab.RouterSpec{{Name: "r", Kind: natlab.UPnP}},
		Hosts:   []natlab.HostSpec{{Name: "h", Router: "r"}, {Name: "s"}},
	})
	h, r, s := l.Host("h"), l.Router("r"), l.Host("s")
	wan := r.WANAddr()

	t.Run("probe", func(t *testing.T) {
		a, err := labClient(t, h).Probe(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%+v", a)
		if !a.PCP.OK || !a.NATPMP.OK || !a.UPnP.OK {
			t.Fatalf("not every protocol answered: %+v", a)
		}
		if a.NATPMP.External != wan || a.UPnP.External != wan {
			t.Errorf("external addresses %v (NAT-PMP), %v (UPnP), want %v", a.NATPMP.External, a.UPnP.External, wan)
		}
	})

	for _, p := range []Protocol{PCP, NATPMP, UPnP} {
		t.Run(string(p), func(t *testing.T) {
			app, port := listenApp(t, h)
			c := labClient(t, h, WithProtocols(p))
			ext := netip.AddrPortFrom(wan, port)
			if reaches(t, s, ext, app, "before", 200*time.Millisecond) {
				t.Fatal("a packet got in before any mapping")
			}
			m, err := c.Map(ctxT(t), "udp", port, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("mapped %v", m)
			if m.Protocol != p || m.External.Addr() != wan || m.External.Port() == 0 || m.Lifetime <= 0 {
				t.Fatalf("mapping %v, want %s to %v", m, p, wan)
			}
			if !reaches(t, s, m.External, app, "mapped", 2*time.Second) {
				t.Fatal("a packet to the mapped address did not reach the host")
			}
			if err := c.Delete(ctxT(t), m); err != nil {
				t.Fatal(err)
			}
			if reaches(t, s, m.External, app, "deleted", 300*time.Millisecond) {
				t.Error("a packet got in after Delete")
			}
		})
	}

	t.Run("keeper", func(t *testing.T) {
		app, port := listenApp(t, h)
		c := labClient(t, h, WithLifetime(4*time.Second))
		changes := make(chan change, 16)
		k, err := c.Keep("udp", port, func(m Mapping, err error) { changes <- change{m: m, err: err, at: time.Now()} })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { k.Close() })
		var got []change
		for len(got) < 2 { // obtained, then renewed at half the lifetime
			select {
			case ch := <-changes:
				if ch.err != nil {
					t.Fatalf("keeper: %v", ch.err)
				}
				got = append(got, ch)
			case <-time.After(10 * time.Second):
				t.Fatalf("%d changes in 10 s, want 2", len(got))
			}
		}
		t.Logf("obtained %v, renewed after %v: %v", got[0].m, got[1].at.Sub(got[0].at).Round(time.Millisecond), got[1].m)
		if got[1].m.External != got[0].m.External {
			t.Errorf("renewal moved the mapping from %v to %v", got[0].m.External, got[1].m.External)
		}
		if !reaches(t, s, got[1].m.External, app, "kept", 2*time.Second) {
			t.Fatal("a packet to the kept mapping did not reach the host")
		}
		if err := k.Close(); err != nil {
			t.Fatal(err)
		}
		if reaches(t, s, got[1].m.External, app, "closed", 300*time.Millisecond) {
			t.Error("a packet got in after the Keeper closed")
		}
	})
}

// TestLabNoPortMapping: a port-restricted router offers no protocol, and Map
// says so within its timeouts.
func TestLabNoPortMapping(t *testing.T) {
	t.Parallel()
	l := newLab(t, natlab.Spec{
		Routers: []natlab.RouterSpec{{Name: "r", Kind: natlab.PortRestricted}},
		Hosts:   []natlab.HostSpec{{Name: "h", Router: "r"}},
	})
	const timeout = time.Second
	c := labClient(t, l.Host("h"), WithTimeout(timeout))
	start := time.Now()
	_, err := c.Map(ctxT(t), "udp", 4000, time.Hour)
	took := time.Since(start)
	t.Logf("Map after %v: %v", took.Round(time.Millisecond), err)
	if !errors.Is(err, ErrNotSupported) {
		t.Errorf("%v, want ErrNotSupported", err)
	}
	if took > 3*timeout {
		t.Errorf("took %v, more than one timeout per protocol", took)
	}
	a, err := c.Probe(ctxT(t))
	if err != nil || a.Any() {
		t.Errorf("probe %+v, %v", a, err)
	}
}
