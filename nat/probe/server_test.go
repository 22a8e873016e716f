package probe

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// listen opens a UDP socket on a loopback address, closed at the end of
// the test.
func listen(t *testing.T, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func localAddr(c net.PacketConn) netip.AddrPort {
	a, _ := addrPortOf(c.LocalAddr())
	return a
}

// testServer is a Server on loopback with an alternate socket.
type testServer struct {
	*Server
	primary, alt netip.AddrPort
}

// startServer starts a server on ip (a loopback address) with an
// alternate port, closed at the end of the test.
func startServer(t *testing.T, ip string, opts ...ServerOption) *testServer {
	t.Helper()
	pc := listen(t, ip+":0")
	ac := listen(t, ip+":0")
	ts := &testServer{primary: localAddr(pc), alt: localAddr(ac)}
	srv, err := NewServer(pc, append([]ServerOption{WithAltConn(ac), WithLogf(t.Logf)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ts.Server = srv
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	return ts
}

// client is a test socket speaking the protocol by hand.
type client struct {
	t *testing.T
	c *net.UDPConn
}

func newClient(t *testing.T, ip string) *client {
	return &client{t: t, c: listen(t, ip+":0")}
}

func (c *client) addr() netip.AddrPort { return localAddr(c.c) }

func (c *client) sendRaw(b []byte, dst netip.AddrPort) {
	c.t.Helper()
	if _, err := c.c.WriteToUDPAddrPort(b, dst); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) send(m message, dst netip.AddrPort) int {
	c.t.Helper()
	b, err := appendMessage(nil, m)
	if err != nil {
		c.t.Fatal(err)
	}
	c.sendRaw(b, dst)
	return len(b)
}

// recv returns the next datagram within window, or ok false.
type datagram struct {
	m    message
	from netip.AddrPort
	size int
}

func (c *client) recv(window time.Duration) (datagram, bool) {
	c.t.Helper()
	buf := make([]byte, 2048)
	c.c.SetReadDeadline(time.Now().Add(window))
	n, from, err := c.c.ReadFromUDPAddrPort(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return datagram{}, false
	}
	if err != nil {
		c.t.Fatal(err)
	}
	m, err := parseMessage(buf[:n])
	if err != nil {
		c.t.Fatalf("undecodable datagram %x from %v: %v", buf[:n], from, err)
	}
	return datagram{m: m, from: netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), size: n}, true
}

// must returns the next datagram, failing the test when none comes.
func (c *client) must(what string) datagram {
	c.t.Helper()
	d, ok := c.recv(2 * time.Second)
	if !ok {
		c.t.Fatalf("no %s", what)
	}
	return d
}

// barrier sends a BINDING to srv and reads up to its answer, failing on
// any datagram before it: the server handles one socket's packets in
// order, so everything sent before was handled, and answered nothing.
func (c *client) barrier(srv netip.AddrPort) {
	c.t.Helper()
	id := newTxID()
	c.send(message{Type: typeBinding, TxID: id}, srv)
	d := c.must("answer to the barrier")
	if d.m.TxID != id || d.m.Type != typeBindingResponse {
		c.t.Fatalf("unexpected %v (%d bytes) from %v before the barrier's answer", d.m.Type, d.size, d.from)
	}
}

func TestBindingAndAltPort(t *testing.T) {
	srv := startServer(t, "127.0.0.1")
	c := newClient(t, "127.0.0.1")

	id := newTxID()
	n := c.send(message{Type: typeBinding, TxID: id}, srv.primary)
	d := c.must("BINDING-RESPONSE")
	want := message{Type: typeBindingResponse, TxID: id, AltPort: srv.alt.Port(), Addr: c.addr()}
	if d.m != want || d.from != srv.primary {
		t.Errorf("got %+v from %v, want %+v from %v", d.m, d.from, want, srv.primary)
	}
	if d.size > n {
		t.Errorf("answer of %d bytes to a %d-byte request", d.size, n)
	}

	// Sent to the alternate port, BINDING is answered from there.
	c.send(message{Type: typeBinding, TxID: id}, srv.alt)
	if d := c.must("BINDING-RESPONSE"); d.from != srv.alt {
		t.Errorf("BINDING to the alternate port answered from %v", d.from)
	}

	// ALT-PORT is answered from the other socket.
	for _, tc := range []struct{ to, from netip.AddrPort }{{srv.primary, srv.alt}, {srv.alt, srv.primary}} {
		c.send(message{Type: typeAltPort, TxID: id}, tc.to)
		d := c.must("ALT-PORT-RESPONSE")
		if d.m.Type != typeAltPortResponse || d.from != tc.from || d.m.Addr != c.addr() {
			t.Errorf("ALT-PORT to %v: got %+v from %v, want an answer from %v", tc.to, d.m, d.from, tc.from)
		}
	}
}

func TestServerDrops(t *testing.T) {
	srv := startServer(t, "127.0.0.1")
	c := newClient(t, "127.0.0.1")
	valid, _ := appendMessage(nil, message{Type: typeBinding, TxID: newTxID()})

	oversize := append(append([]byte{}, valid...), make([]byte, MaxMessageSize+1-len(valid))...)
	c.sendRaw(oversize, srv.primary)
	c.sendRaw(valid[:RequestSize-1], srv.primary) // short: unpadded
	unknown := append([]byte{}, valid...)
	unknown[5] = 0x42
	c.sendRaw(unknown, srv.primary)
	badVersion := append([]byte{}, valid...)
	badVersion[4] = 9
	c.sendRaw(badVersion, srv.primary)
	// Answer types are never answered, padded or not.
	c.send(message{Type: typeBindingResponse, TxID: newTxID(), Addr: c.addr()}, srv.primary)
	// PEER-FORWARD from a stranger is ignored.
	c.send(message{Type: typePeerForward, TxID: newTxID(), Budget: 80, Addr: c.addr()}, srv.primary)
	c.barrier(srv.primary)

	st := srv.Stats()
	if st.Malformed != 3 || st.Short != 1 || st.Ignored != 2 {
		t.Errorf("stats %+v: want 3 malformed, 1 short, 2 ignored", st)
	}
	if st.Sent != 1 {
		t.Errorf("sent %d datagrams, want only the barrier's answer", st.Sent)
	}
}

func TestRateLimit(t *testing.T) {
	const burst = 5
	srv := startServer(t, "127.0.0.1", WithLimits(Limits{Rate: 0.001, Burst: burst}))
	c := newClient(t, "127.0.0.1")
	const sent = 12
	for range sent {
		c.send(message{Type: typeBinding, TxID: newTxID()}, srv.primary)
	}
	for i := range burst {
		c.must("answer " + string(rune('0'+i)))
	}
	// Another source has its own bucket, and its answer proves the
	// server handled everything before it.
	other := newClient(t, "127.0.0.2")
	other.barrier(srv.primary)
	if d, ok := c.recv(50 * time.Millisecond); ok {
		t.Fatalf("answer %+v beyond the burst", d.m)
	}
	if st := srv.Stats(); st.RateLimited != sent-burst {
		t.Errorf("rate limited %d, want %d", st.RateLimited, sent-burst)
	}
}

func TestRateLimitMaxSources(t *testing.T) {
	clk := newFakeClock()
	srv := startServer(t, "127.0.0.1", WithLimits(Limits{Rate: 1, Burst: 2, MaxSources: 1}), WithClock(clk))
	a, b := newClient(t, "127.0.0.1"), newClient(t, "127.0.0.2")
	a.barrier(srv.primary)
	// The table is full with a's bucket, which is not idle yet.
	b.send(message{Type: typeBinding, TxID: newTxID()}, srv.primary)
	a.barrier(srv.primary)
	if st := srv.Stats(); st.RateLimited != 1 {
		t.Fatalf("rate limited %d, want b's request", st.RateLimited)
	}
	// Once a's bucket has refilled, it is forgotten and b gets a place.
	clk.Advance(5 * time.Second)
	b.barrier(srv.primary)
}

func TestDelayed(t *testing.T) {
	clk := newFakeClock()
	srv := startServer(t, "127.0.0.1", WithClock(clk))
	c := newClient(t, "127.0.0.1")
	id := newTxID()
	n := c.send(message{Type: typeDelayed, TxID: id, Delay: 30 * time.Second}, srv.primary)
	ack := c.must("DELAYED-ACK")
	if ack.m != (message{Type: typeDelayedAck, TxID: id, Delay: 30 * time.Second}) || ack.from != srv.primary {
		t.Fatalf("got %+v from %v", ack.m, ack.from)
	}
	// A retransmission is acknowledged again and scheduled once.
	c.send(message{Type: typeDelayed, TxID: id, Delay: 30 * time.Second}, srv.primary)
	c.must("second DELAYED-ACK")
	clk.Advance(29 * time.Second)
	c.barrier(srv.primary)
	clk.Advance(time.Second)
	d := c.must("DELAYED-RESPONSE")
	want := message{Type: typeDelayedResponse, TxID: id, Delay: 30 * time.Second, Addr: c.addr()}
	if d.m != want || d.from != srv.primary {
		t.Errorf("got %+v from %v, want %+v", d.m, d.from, want)
	}
	if ack.size+d.size > n {
		t.Errorf("%d bytes of answers to a %d-byte request", ack.size+d.size, n)
	}
	clk.Advance(time.Minute)
	c.barrier(srv.primary)
	if st := srv.Stats(); st.Scheduled != 1 {
		t.Errorf("scheduled %d answers, want 1", st.Scheduled)
	}
}

func TestDelayedBounds(t *testing.T) {
	clk := newFakeClock()
	srv := startServer(t, "127.0.0.1", WithClock(clk),
		WithLimits(Limits{MaxDelay: time.Minute, MaxDelayedPerSource: 2, MaxDelayed: 3}))
	a, b := newClient(t, "127.0.0.1"), newClient(t, "127.0.0.2")
	ask := func(c *client, d time.Duration) status {
		t.Helper()
		id := newTxID()
		c.send(message{Type: typeDelayed, TxID: id, Delay: d}, srv.primary)
		ack := c.must("DELAYED-ACK")
		if ack.m.TxID != id || ack.m.Type != typeDelayedAck {
			t.Fatalf("got %+v", ack.m)
		}
		return ack.m.Status
	}
	for _, tc := range []struct {
		c    *client
		d    time.Duration
		want status
	}{
		{a, time.Minute + time.Millisecond, statusBadDelay},
		{a, 0, statusBadDelay},
		{a, time.Minute, statusOK},
		{a, time.Second, statusOK},
		{a, time.Second, statusRefused}, // a's two are pending
		{b, time.Second, statusOK},
		{b, time.Second, statusRefused}, // three pending in all
	} {
		if got := ask(tc.c, tc.d); got != tc.want {
			t.Errorf("delay %v from %v: status %d, want %d", tc.d, tc.c.addr(), got, tc.want)
		}
	}
	// When the short ones are answered, there is room again.
	clk.Advance(time.Second)
	for _, c := range []*client{a, b} {
		if d := c.must("DELAYED-RESPONSE"); d.m.Type != typeDelayedResponse {
			t.Fatalf("got %v", d.m.Type)
		}
	}
	if got := ask(b, time.Second); got != statusOK {
		t.Errorf("after the answers: status %d, want accepted", got)
	}
}

// startSiblings starts two servers on 127.0.0.1 and 127.0.0.2 that are
// siblings of each other.
func startSiblings(t *testing.T, opts ...ServerOption) (a, b *testServer) {
	t.Helper()
	conns := [2][2]*net.UDPConn{
		{listen(t, "127.0.0.1:0"), listen(t, "127.0.0.1:0")},
		{listen(t, "127.0.0.2:0"), listen(t, "127.0.0.2:0")},
	}
	var srvs [2]*testServer
	for i, c := range conns {
		sib := localAddr(conns[1-i][0])
		srv, err := NewServer(c[0], append([]ServerOption{WithAltConn(c[1]), WithSiblings(sib), WithLogf(t.Logf)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		srvs[i] = &testServer{Server: srv, primary: localAddr(c[0]), alt: localAddr(c[1])}
	}
	return srvs[0], srvs[1]
}

func TestPeerSend(t *testing.T) {
	a, b := startSiblings(t)
	c := newClient(t, "127.0.0.1")

	id := newTxID()
	n := c.send(message{Type: typePeerSend, TxID: id, Addr: b.primary}, a.primary)
	got := map[msgType]datagram{}
	for range 2 {
		d := c.must("PEER-SEND-ACK and PEER-SEND-RESPONSE")
		got[d.m.Type] = d
	}
	ack, resp := got[typePeerSendAck], got[typePeerSendResponse]
	if ack.m != (message{Type: typePeerSendAck, TxID: id}) || ack.from != a.primary {
		t.Errorf("ack %+v from %v", ack.m, ack.from)
	}
	if resp.m != (message{Type: typePeerSendResponse, TxID: id, Addr: c.addr()}) || resp.from != b.primary {
		t.Errorf("response %+v from %v, want one from %v", resp.m, resp.from, b.primary)
	}
	if ack.size+resp.size > n {
		t.Errorf("%d bytes of answers to a %d-byte request", ack.size+resp.size, n)
	}
	if st := a.Stats(); st.Forwarded != 1 {
		t.Errorf("a forwarded %d, want 1", st.Forwarded)
	}

	// A server that is not a sibling is not asked.
	c.send(message{Type: typePeerSend, TxID: id, Addr: netip.MustParseAddrPort("127.0.0.3:9")}, a.primary)
	if d := c.must("PEER-SEND-ACK"); d.m.Status != statusUnknownSibling {
		t.Errorf("ack status %d, want unknown sibling", d.m.Status)
	}
	c.barrier(a.primary)

	// PEER-FORWARD is accepted from a sibling's primary address only,
	// even when it arrives from the sibling's alternate socket.
	spoof := newClient(t, "127.0.0.1")
	spoof.send(message{Type: typePeerForward, TxID: newTxID(), Budget: 80, Addr: c.addr()}, b.primary)
	spoof.barrier(b.primary)
	if d, ok := c.recv(20 * time.Millisecond); ok {
		t.Fatalf("b sent %v on a stranger's behalf", d.m.Type)
	}

	if st := b.Stats(); st.Ignored != 1 {
		t.Errorf("b ignored %d, want the stranger's PEER-FORWARD", st.Ignored)
	}
}

func TestForwardBudget(t *testing.T) {
	a, b := startSiblings(t)
	c := newClient(t, "127.0.0.1")
	// A PEER-FORWARD from a whose budget is too small for the answer.
	b.handleForward(0, message{Type: typePeerForward, TxID: newTxID(), Budget: 10, Addr: c.addr()}, a.primary)
	if d, ok := c.recv(20 * time.Millisecond); ok {
		t.Fatalf("got %v over the budget", d.m.Type)
	}
	if st := b.Stats(); st.OverBudget != 1 {
		t.Errorf("over budget %d, want 1", st.OverBudget)
	}
}

func TestNewServerErrors(t *testing.T) {
	for name, opts := range map[string][]ServerOption{
		"alt twice":   {WithAltConn(listen(t, "127.0.0.1:0")), WithAltConn(listen(t, "127.0.0.1:0"))},
		"nil alt":     {WithAltConn(nil)},
		"bad sibling": {WithSiblings(netip.AddrPort{})},
		"nil clock":   {WithClock(nil)},
		"max delay":   {WithLimits(Limits{MaxDelay: time.Microsecond})},
	} {
		c := listen(t, "127.0.0.1:0")
		if _, err := NewServer(c, opts...); err == nil {
			t.Errorf("%s: no error", name)
		}
		// The socket was closed.
		if _, err := c.WriteToUDPAddrPort([]byte{0}, localAddr(c)); !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s: socket left open (%v)", name, err)
		}
	}
	if _, err := NewServer(nil); err == nil {
		t.Error("NewServer(nil): no error")
	}
}

func TestCloseWaits(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	clk := newFakeClock()
	srv, err := NewServer(listen(t, "127.0.0.1:0"), WithAltConn(listen(t, "127.0.0.1:0")), WithClock(clk))
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, "127.0.0.1")
	c.send(message{Type: typeDelayed, TxID: newTxID(), Delay: time.Minute}, localAddr(srv.conns[0]))
	c.must("DELAYED-ACK")
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = srv.Close() })
	}
	wg.Wait()
	for _, err := range errs {
		if err != errs[0] {
			t.Errorf("Close returned %v and %v", errs[0], err)
		}
	}
	// Nothing is sent after Close, even when the delay passes.
	clk.Advance(time.Hour)
	if d, ok := c.recv(20 * time.Millisecond); ok {
		t.Errorf("got %v after Close", d.m.Type)
	}
}

// fakeClock is a Clock that moves only when told.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	c  chan time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) At(t time.Time) <-chan time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := make(chan time.Time, 1)
	if !t.After(f.now) {
		c <- f.now
		return c
	}
	f.waiters = append(f.waiters, fakeWaiter{at: t, c: c})
	return c
}

// Advance moves the clock and fires the waiters that are due.
func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	kept := f.waiters[:0]
	for _, w := range f.waiters {
		if w.at.After(f.now) {
			kept = append(kept, w)
			continue
		}
		w.c <- f.now
	}
	f.waiters = kept
}
