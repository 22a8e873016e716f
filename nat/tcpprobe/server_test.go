package tcpprobe

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testUnit is the length of one wire "second" in the loopback tests.
const testUnit = 100 * time.Millisecond

// startServer runs a server on loopback with holds counted in testUnit, and
// closes it when the test ends.
func startServer(t *testing.T, opts ...ServerOption) (*Server, netip.AddrPort) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(ln, append([]ServerOption{withServerUnit(testUnit), WithLogf(t.Logf)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv, ln.Addr().(*net.TCPAddr).AddrPort()
}

// rawConn connects from local (any loopback address when invalid) to addr
// and sends req.
func rawConn(t *testing.T, local netip.Addr, addr netip.AddrPort, req []byte) *net.TCPConn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if local.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: local.AsSlice()}
	}
	c, err := d.Dial("tcp4", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn)
}

// readAck reads an ACK from c and checks its status.
func readAck(t *testing.T, c net.Conn, want Status) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [AckSize]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatalf("reading the ACK: %v", err)
	}
	n, st, _, err := parseAck(b[:])
	if err != nil || n != testNonce || st != want {
		t.Fatalf("ACK %x: status %v, want %v", b, st, want)
	}
}

// readEOF reads c to its end and returns what came.
func readEOF(t *testing.T, c net.Conn) ([]byte, error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server did not close the connection")
	}
	return b, err
}

func TestServerRefusesBadRequests(t *testing.T) {
	srv, addr := startServer(t, WithLimits(Limits{MaxHold: 20 * testUnit, RequestTimeout: 300 * time.Millisecond}))
	valid := appendRequest(nil, testNonce, 5)
	with := func(i int, v byte) []byte {
		b := bytes.Clone(valid)
		b[i] = v
		return b
	}
	tests := []struct {
		name      string
		req       []byte
		closeSend bool
		want      Status
	}{
		{"magic", with(0, 'X'), false, StatusMalformed},
		{"type", with(5, byte(typeResponse)), false, StatusMalformed},
		{"version", with(4, 2), false, StatusBadVersion},
		{"zero-hold", appendRequest(nil, testNonce, 0), false, StatusBadHold},
		{"hold-over-max", appendRequest(nil, testNonce, 21), false, StatusBadHold},
		{"long", append(bytes.Clone(valid), 0, 0, 0, 0, 0, 0, 0, 0), false, StatusMalformed},
		{"short-closed", valid[:20], true, StatusMalformed},
		{"short-late", valid[:20], false, StatusMalformed}, // until RequestTimeout
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := rawConn(t, netip.Addr{}, addr, tt.req)
			if tt.closeSend {
				c.CloseWrite()
			}
			readAck(t, c, tt.want)
			// The server closes with the long request's extra bytes
			// unread, which resets the connection.
			if rest, err := readEOF(t, c); len(rest) > 0 || (err != nil && !(tt.name == "long" && errors.Is(err, syscall.ECONNRESET))) {
				t.Errorf("after the ACK: %x, %v; want the end", rest, err)
			}
		})
	}
	srv.Close()
	st := srv.Stats()
	t.Logf("%+v", st)
	if st.Malformed != 5 || st.BadVersion != 1 || st.BadHold != 2 || st.Held != 0 || st.Accepted != uint64(len(tests)) {
		t.Errorf("stats %+v", st)
	}
	if st.BytesSent != uint64(len(tests)*AckSize) || st.Open != 0 {
		t.Errorf("%d bytes sent, %d open; want %d, 0", st.BytesSent, st.Open, len(tests)*AckSize)
	}
}

func TestServerHoldAndAnswer(t *testing.T) {
	srv, addr := startServer(t)
	c := rawConn(t, netip.Addr{}, addr, appendRequest(nil, testNonce, 3))
	start := time.Now()
	readAck(t, c, StatusOK)
	rest := make([]byte, ResponseSize)
	if _, err := io.ReadFull(c, rest); err != nil || !bytes.Equal(rest, appendResponse(nil, testNonce)) {
		t.Fatalf("got %x, %v; want a RESPONSE", rest, err)
	}
	// The client closes; the server then ends too.
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if more, err := readEOF(t, c); err != nil || len(more) > 0 {
		t.Fatalf("after the RESPONSE: %x, %v; want the end", more, err)
	}
	if d := time.Since(start); d < 3*testUnit {
		t.Errorf("RESPONSE after %v, before the hold of %v", d, 3*testUnit)
	}

	// Bytes sent during the hold end it without a RESPONSE.
	c = rawConn(t, netip.Addr{}, addr, appendRequest(nil, testNonce, 50))
	readAck(t, c, StatusOK)
	c.Write([]byte{0})
	if rest, _ := readEOF(t, c); len(rest) > 0 {
		t.Errorf("after bytes in the hold: %x, want nothing", rest)
	}
	srv.Close()
	if st := srv.Stats(); st.Held != 2 || st.Answered != 1 || st.Abandoned != 1 || st.BytesReceived != 2*RequestSize+1 ||
		st.BytesSent != 2*AckSize+ResponseSize {
		t.Errorf("stats %+v", st)
	}
}

func TestServerLimits(t *testing.T) {
	srv, addr := startServer(t, WithLimits(Limits{MaxHoldsPerSource: 2, MaxHolds: 3}))
	a, b := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	hold := func(from netip.Addr) *net.TCPConn {
		c := rawConn(t, from, addr, appendRequest(nil, testNonce, 600))
		readAck(t, c, StatusOK)
		return c
	}
	refused := func(from netip.Addr) {
		t.Helper()
		c := rawConn(t, from, addr, appendRequest(nil, testNonce, 600))
		// Closed unread, the connection may end with a reset.
		if rest, _ := readEOF(t, c); len(rest) > 0 {
			t.Errorf("refused connection got %x", rest)
		}
	}
	a1 := hold(a)
	hold(a)
	refused(a) // over the per-source limit
	hold(b)
	refused(b) // over the total
	// A client that leaves frees its slot: the server closes its side
	// only after forgetting the connection.
	a1.CloseWrite()
	if rest, _ := readEOF(t, a1); len(rest) > 0 {
		t.Errorf("abandoned hold got %x", rest)
	}
	hold(a)
	if st := srv.Stats(); st.Open != 3 {
		t.Errorf("%d connections open, want 3", st.Open)
	}
	srv.Close()
	if st := srv.Stats(); st.Accepted != 6 || st.Refused != 2 || st.Held != 4 || st.Abandoned != 1 || st.Open != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestServerCloseWhileHolding(t *testing.T) {
	srv, addr := startServer(t)
	var conns []*net.TCPConn
	for range 3 {
		c := rawConn(t, netip.Addr{}, addr, appendRequest(nil, testNonce, 600))
		readAck(t, c, StatusOK)
		conns = append(conns, c)
	}
	// A Prove holding at the same time sees its connection end.
	proved := make(chan Lifetime, 1)
	holding := make(chan struct{}, 1)
	go func() {
		lt, _ := Prove(context.Background(), hookDial(func(net.Conn) { holding <- struct{}{} }), addr,
			[]time.Duration{time.Minute}, withUnit(testUnit))
		proved <- lt
	}()
	<-holding
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		if rest, _ := readEOF(t, c); len(rest) > 0 {
			t.Errorf("closing server sent %x", rest)
		}
	}
	lt := <-proved
	if r := lt.Results[0]; r.Outcome != Expired || lt.Upper != time.Minute {
		t.Errorf("Prove: %+v", lt)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if st := srv.Stats(); st.Held != 4 || st.Answered != 0 || st.Abandoned != 0 || st.Open != 0 {
		t.Errorf("stats %+v", st)
	}
	if _, err := net.DialTimeout("tcp4", addr.String(), 5*time.Second); err == nil {
		t.Error("the listener accepts after Close")
	}
}

func TestNewServerErrors(t *testing.T) {
	if _, err := NewServer(nil); err == nil {
		t.Error("NewServer(nil) succeeded")
	}
	for _, l := range []Limits{{MaxHold: time.Millisecond}, {MaxHolds: -1}, {RequestTimeout: -time.Second}} {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := NewServer(ln, WithLimits(l)); err == nil || !strings.HasPrefix(err.Error(), "tcpprobe:") {
			t.Errorf("limits %+v: %v", l, err)
		}
		if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("limits %+v: listener not closed: %v", l, err)
		}
	}
}
