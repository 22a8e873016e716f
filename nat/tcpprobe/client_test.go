package tcpprobe

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// hookConn calls onHold when Prove sets the deadline of the hold, that is
// once the server acknowledged it.
type hookConn struct {
	*net.TCPConn
	onHold func(net.Conn)
}

func (c hookConn) SetReadDeadline(t time.Time) error {
	c.onHold(c.TCPConn)
	return c.TCPConn.SetReadDeadline(t)
}

// hookDial dials loopback and calls onHold as each hold begins.
func hookDial(onHold func(net.Conn)) DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return hookConn{c.(*net.TCPConn), onHold}, nil
	}
}

var dialer net.Dialer

func TestProve(t *testing.T) {
	srv, addr := startServer(t, WithLimits(Limits{MaxHold: 10 * testUnit}))
	holds := []time.Duration{500 * time.Millisecond, 200 * time.Millisecond, time.Second, 150 * time.Millisecond}
	var progress []time.Duration
	lt, err := Prove(context.Background(), dialer.DialContext, addr, holds,
		withUnit(testUnit), WithGrace(time.Second), WithProgress(func(r Result) { progress = append(progress, r.Hold) }))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range lt.Results {
		t.Logf("hold %v: %v (%v) after %v, %d/%d bytes", r.Hold, r.Outcome, r.Err, r.Elapsed, r.BytesSent, r.BytesReceived)
	}
	want := []time.Duration{500 * time.Millisecond, 200 * time.Millisecond, time.Second, 200 * time.Millisecond} // rounded up to units
	for i, r := range lt.Results {
		if r.Hold != want[i] || r.Outcome != Survived || r.Err != nil || r.Elapsed < r.Hold {
			t.Errorf("result %d: %+v", i, r)
		}
		if r.BytesSent != RequestSize || r.BytesReceived != AckSize+ResponseSize {
			t.Errorf("result %d: %d bytes sent, %d received", i, r.BytesSent, r.BytesReceived)
		}
	}
	slices.Sort(progress)
	if !slices.Equal(progress, slices.Sorted(slices.Values(want))) {
		t.Errorf("progress %v, want each of %v", progress, want)
	}
	if lt.Lower != time.Second || lt.Upper != 0 || lt.BytesSent != 4*RequestSize || lt.BytesReceived != 4*(AckSize+ResponseSize) {
		t.Errorf("lifetime %+v", lt)
	}

	// A hold above the server's maximum is refused, which proves nothing.
	lt, err = Prove(context.Background(), dialer.DialContext, addr, []time.Duration{2 * time.Second}, withUnit(testUnit))
	if !errors.Is(err, ErrRefused) || lt.Results[0].Outcome != Failed {
		t.Errorf("hold over the maximum: %+v, %v", lt, err)
	}
	srv.Close()
	if st := srv.Stats(); st.Held != 4 || st.Answered != 4 || st.BadHold != 1 {
		t.Errorf("server stats %+v", st)
	}
}

// keepAlive reads SO_KEEPALIVE of a TCP connection.
func keepAlive(t *testing.T, c net.Conn) bool {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var serr error
	if err := rc.Control(func(fd uintptr) { v, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	return v != 0
}

// recordListener keeps the connections it accepted.
type recordListener struct {
	net.Listener
	accepted chan net.Conn
}

func (l recordListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted <- c
	}
	return c, err
}

func TestKeepAliveOff(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rl := recordListener{ln, make(chan net.Conn, 1)}
	srv, err := NewServer(rl, withServerUnit(testUnit))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var client, server bool
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err == nil && !keepAlive(t, c) {
			t.Error("the dialer's connection has keep-alive off already; the test proves nothing")
		}
		return hookConn{c.(*net.TCPConn), func(c net.Conn) {
			// The server turned its side's keep-alive off before reading
			// the request it has acknowledged.
			client, server = keepAlive(t, c), keepAlive(t, <-rl.accepted)
		}}, err
	}
	if _, err := Prove(context.Background(), dial, ln.Addr().(*net.TCPAddr).AddrPort(), []time.Duration{testUnit}, withUnit(testUnit)); err != nil {
		t.Fatal(err)
	}
	if client || server {
		t.Errorf("keep-alive during the hold: client %v, server %v", client, server)
	}
}

func TestProveCancel(t *testing.T) {
	_, addr := startServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	holding := 0
	dial := hookDial(func(net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		if holding++; holding == 2 {
			cancel()
		}
	})
	lt, err := Prove(ctx, dial, addr, []time.Duration{time.Minute, 2 * time.Minute}, withUnit(testUnit))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Prove: %v, want context.Canceled", err)
	}
	for _, r := range lt.Results {
		if r.Outcome != Failed || !errors.Is(r.Err, context.Canceled) {
			t.Errorf("result %+v", r)
		}
	}
	if lt.Lower != 0 || lt.Upper != 0 {
		t.Errorf("lifetime %+v from cancelled holds", lt)
	}
}

// fakeServer answers every connection with serve, for answers a Server
// never gives.
func fakeServer(t *testing.T, serve func(c net.Conn, req []byte)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				req := make([]byte, RequestSize)
				if _, err := io.ReadFull(c, req); err == nil {
					serve(c, req)
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// ack acknowledges req as a server would.
func ack(c net.Conn, req []byte) {
	n, hold, _ := parseRequest(req)
	c.Write(appendAck(nil, n, StatusOK, hold))
}

func TestProveOutcomes(t *testing.T) {
	tests := []struct {
		name    string
		serve   func(c net.Conn, req []byte)
		outcome Outcome
		err     error
	}{
		{"silent", ack, Expired, ErrNoResponse},
		{"closed", func(c net.Conn, req []byte) { ack(c, req); c.Close() }, Expired, io.EOF},
		{"early", func(c net.Conn, req []byte) {
			ack(c, req)
			n, _, _ := parseRequest(req)
			c.Write(appendResponse(nil, n))
		}, Failed, ErrBadAnswer},
		{"other-nonce", func(c net.Conn, req []byte) {
			_, hold, _ := parseRequest(req)
			c.Write(appendAck(nil, testNonce, StatusOK, hold))
		}, Failed, ErrBadAnswer},
		{"shorter-hold", func(c net.Conn, req []byte) {
			n, hold, _ := parseRequest(req)
			c.Write(appendAck(nil, n, StatusOK, hold-1))
		}, Failed, ErrBadAnswer},
		{"no-ack", func(c net.Conn, req []byte) { c.Close() }, Failed, io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := fakeServer(t, tt.serve)
			lt, err := Prove(context.Background(), dialer.DialContext, addr, []time.Duration{300 * time.Millisecond},
				withUnit(testUnit), WithGrace(300*time.Millisecond))
			r := lt.Results[0]
			if r.Outcome != tt.outcome || !errors.Is(r.Err, tt.err) {
				t.Errorf("%v (%v), want %v (%v)", r.Outcome, r.Err, tt.outcome, tt.err)
			}
			if (tt.outcome == Expired) != (lt.Upper == r.Hold) || (tt.outcome == Failed) != (err != nil) {
				t.Errorf("lifetime %+v, %v", lt, err)
			}
		})
	}
}

func TestProveDialFailures(t *testing.T) {
	addr := netip.MustParseAddrPort("127.0.0.1:9")
	pipe := func(context.Context, string, string) (net.Conn, error) {
		a, b := net.Pipe()
		b.Close()
		return a, nil
	}
	broken := func(context.Context, string, string) (net.Conn, error) { return nil, errors.New("no route") }
	for _, dial := range []DialFunc{pipe, broken} {
		lt, err := Prove(context.Background(), dial, addr, []time.Duration{time.Second})
		if err == nil || lt.Results[0].Outcome != Failed {
			t.Errorf("%+v, %v", lt, err)
		}
	}
	for _, holds := range [][]time.Duration{{}, {0}, {-time.Second}, {math.MaxInt64}, make([]time.Duration, 65)} {
		if _, err := Prove(context.Background(), broken, addr, holds); err == nil {
			t.Errorf("holds %v accepted", holds)
		}
	}
	if _, err := Prove(context.Background(), nil, addr, nil); err == nil {
		t.Error("nil DialFunc accepted")
	}
	if _, err := Prove(context.Background(), broken, netip.AddrPort{}, nil); err == nil {
		t.Error("invalid server accepted")
	}
}

func TestLifetime(t *testing.T) {
	const m = time.Minute
	r := func(hold time.Duration, o Outcome) Result { return Result{Hold: hold, Outcome: o} }
	for _, tt := range []struct {
		results      []Result
		lower, upper time.Duration
		fraction     float64
		idle         time.Duration
	}{
		{[]Result{r(2*m, Survived), r(4*m, Survived), r(8*m, Expired), r(15*m, Expired)}, 4 * m, 8 * m, 0, 192 * time.Second},
		{[]Result{r(2*m, Survived), r(120*m, Survived)}, 120 * m, 0, 0.5, 60 * m},
		{[]Result{r(2*m, Expired), r(4*m, Failed)}, 0, 2 * m, 0.8, 0},
		// Contradictory: the upper bound caps the keep-alive.
		{[]Result{r(8*m, Survived), r(4*m, Expired)}, 8 * m, 4 * m, 2, 192 * time.Second},
		{[]Result{r(3*time.Second, Survived), r(12*time.Second, Expired)}, 3 * time.Second, 12 * time.Second, 0.8, 2 * time.Second},
	} {
		var lt Lifetime
		for _, res := range tt.results {
			lt.add(res)
		}
		if lt.Lower != tt.lower || lt.Upper != tt.upper {
			t.Errorf("%v: bounds [%v, %v], want [%v, %v]", tt.results, lt.Lower, lt.Upper, tt.lower, tt.upper)
		}
		if got := lt.KeepAliveIdle(tt.fraction); got != tt.idle {
			t.Errorf("%v: KeepAliveIdle(%v) = %v, want %v", tt.results, tt.fraction, got, tt.idle)
		}
	}
	if got := DefaultHolds(); len(got) != 7 || got[0] != 2*m || got[6] != 120*m || DefaultMaxHold < got[6] {
		t.Errorf("DefaultHolds() = %v", got)
	}
}
