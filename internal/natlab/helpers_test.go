package natlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// newLab builds a lab that is closed when the test ends, pass or fail.
func newLab(t *testing.T, spec Spec) *Lab {
	t.Helper()
	Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	l, err := New(ctx, spec, WithLogf(t.Logf))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lab %s built in %v", l.Prefix(), time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return l
}

// Reflector ports: every reflector listens on both.
const (
	reflPort1 uint16 = 4001
	reflPort2 uint16 = 4002
)

// reflector is a STUN-like server on a public host: it answers every
// datagram with "seen <source ip:port>", from the socket that received it.
// Its sockets are also what tests send filtering probes from.
type reflector struct {
	host  *Host
	conns [2]*net.UDPConn
	wg    sync.WaitGroup
}

func startReflector(t *testing.T, h *Host) *reflector {
	t.Helper()
	r := &reflector{host: h}
	for i, p := range []uint16{reflPort1, reflPort2} {
		c, err := h.ListenUDP(netip.AddrPortFrom(h.Addr(), p))
		if err != nil {
			t.Fatal(err)
		}
		r.conns[i] = c
	}
	for _, c := range r.conns {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			buf := make([]byte, 1500)
			for {
				n, from, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				if !bytes.HasPrefix(buf[:n], []byte("probe")) {
					continue
				}
				c.WriteToUDPAddrPort([]byte("seen "+from.String()), from) //nolint:errcheck
			}
		}()
	}
	t.Cleanup(func() {
		for _, c := range r.conns {
			c.Close()
		}
		r.wg.Wait()
	})
	return r
}

func (r *reflector) addr(i int) netip.AddrPort {
	return netip.AddrPortFrom(r.host.Addr(), []uint16{reflPort1, reflPort2}[i])
}

// send sends payload to dst from the reflector's socket i.
func (r *reflector) send(t *testing.T, i int, dst netip.AddrPort, payload string) {
	t.Helper()
	if _, err := r.conns[i].WriteToUDPAddrPort([]byte(payload), dst); err != nil {
		t.Fatal(err)
	}
}

// discover asks a reflector which address c's packets come from. It tries
// three times (one second each) and returns false if no answer came.
func discover(t *testing.T, c *net.UDPConn, refl netip.AddrPort) (netip.AddrPort, bool) {
	t.Helper()
	buf := make([]byte, 1500)
	for range 3 {
		if _, err := c.WriteToUDPAddrPort([]byte("probe"), refl); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(time.Second)
		c.SetReadDeadline(deadline)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			msg := string(buf[:n])
			if from != refl || !strings.HasPrefix(msg, "seen ") {
				continue
			}
			seen, err := netip.ParseAddrPort(strings.TrimPrefix(msg, "seen "))
			if err != nil {
				t.Fatal(err)
			}
			return seen, true
		}
	}
	return netip.AddrPort{}, false
}

// collect reads datagrams on c for window and returns their payloads.
func collect(t *testing.T, c *net.UDPConn, window time.Duration) map[string]bool {
	t.Helper()
	got := map[string]bool{}
	buf := make([]byte, 1500)
	c.SetReadDeadline(time.Now().Add(window))
	for {
		n, _, err := c.ReadFromUDPAddrPort(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		got[string(buf[:n])] = true
	}
}

// silent reports whether a datagram from host h to dst draws no answer at
// all, not even an ICMP error: a connected socket would see one as
// ECONNREFUSED or EHOSTUNREACH.
func silent(t *testing.T, h *Host, dst netip.AddrPort) error {
	t.Helper()
	c, err := h.DialUDP(netip.AddrPort{}, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("unsolicited")); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	// An ICMP error or answer would come back within a millisecond.
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err == nil {
		return fmt.Errorf("got an answer %q", buf[:n])
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("got an error back: %w", err)
	}
	return nil
}

// idle waits out an idle period (measuring a timeout needs the time to
// pass), or fails the test when ctx ends first.
func idle(t *testing.T, ctx context.Context, d time.Duration) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
}

func counters(t *testing.T, r *Router) Counters {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := r.Counters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// await reads datagrams on c until one carries payload (true) or window
// passes (false).
func await(t *testing.T, c *net.UDPConn, payload string, window time.Duration) bool {
	t.Helper()
	buf := make([]byte, 1500)
	c.SetReadDeadline(time.Now().Add(window))
	for {
		n, _, err := c.ReadFromUDPAddrPort(buf)
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
