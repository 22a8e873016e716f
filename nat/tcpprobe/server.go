package tcpprobe

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// keepAliver is what TCP connections offer to turn kernel keep-alive off.
type keepAliver interface{ SetKeepAlive(bool) error }

// Server holds TCP connections for the time their clients ask, then
// answers. It owns its listener: Close closes it. Its methods are safe for
// concurrent use.
type Server struct {
	ln     net.Listener
	limits Limits
	unit   time.Duration
	logf   func(format string, args ...any)

	done      chan struct{} // closed by Close
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
	stats     serverCounters

	// mu guards the fields below. It is held for bookkeeping only, never
	// during I/O.
	mu        sync.Mutex
	closed    bool
	conns     map[net.Conn]netip.Addr // open connections and their source
	perSource map[netip.Addr]int
}

// NewServer starts a server accepting on ln, a TCP listener, with the given
// options. The server takes ownership of ln, including when NewServer
// fails, in which case ln is closed.
func NewServer(ln net.Listener, opts ...ServerOption) (*Server, error) {
	s := defaultServerSettings()
	for _, o := range opts {
		o(&s)
	}
	if ln == nil {
		return nil, errors.New("tcpprobe: NewServer(nil)")
	}
	if err := s.limits.validate(s.unit); err != nil {
		ln.Close()
		return nil, err
	}
	srv := &Server{
		ln: ln, limits: s.limits, unit: s.unit, logf: s.logf,
		done:      make(chan struct{}),
		conns:     make(map[net.Conn]netip.Addr),
		perSource: make(map[netip.Addr]int),
	}
	srv.wg.Add(1)
	go srv.acceptLoop()
	return srv, nil
}

// Addr returns the listener's address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops the server: it closes the listener and every open
// connection, without answering the holds in progress, and waits for its
// goroutines. It is idempotent; later calls return the first call's
// result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		s.closeErr = s.ln.Close()
		s.mu.Lock()
		s.closed = true
		conns := make([]net.Conn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
		s.wg.Wait()
	})
	return s.closeErr
}

// ServerStats counts what a server did.
type ServerStats struct {
	// Accepted counts the connections accepted, Refused those of them
	// closed at once for being over a limit.
	Accepted, Refused uint64
	// Malformed, BadVersion and BadHold count the requests refused with
	// that status; Malformed includes requests that were short, long or
	// late.
	Malformed, BadVersion, BadHold uint64
	// Held counts the holds granted, Answered the RESPONSEs sent, and
	// Abandoned the holds that ended early because the client closed the
	// connection or sent more.
	Held, Answered, Abandoned uint64
	// Open is the number of connections open now.
	Open int
	// Payload bytes read and written.
	BytesReceived, BytesSent uint64
}

type serverCounters struct {
	accepted, refused, malformed, badVersion, badHold atomic.Uint64
	held, answered, abandoned                         atomic.Uint64
	bytesReceived, bytesSent                          atomic.Uint64
}

// Stats returns the server's counters.
func (s *Server) Stats() ServerStats {
	c := &s.stats
	s.mu.Lock()
	open := len(s.conns)
	s.mu.Unlock()
	return ServerStats{
		Accepted: c.accepted.Load(), Refused: c.refused.Load(),
		Malformed: c.malformed.Load(), BadVersion: c.badVersion.Load(), BadHold: c.badHold.Load(),
		Held: c.held.Load(), Answered: c.answered.Load(), Abandoned: c.abandoned.Load(),
		Open:          open,
		BytesReceived: c.bytesReceived.Load(), BytesSent: c.bytesSent.Load(),
	}
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				s.logf("tcpprobe: listener closed: %v", err)
				return
			}
			// Out of file descriptors, or a connection aborted before
			// it was accepted: try again, later each time.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.logf("tcpprobe: accept: %v; retrying in %v", err, backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-s.done:
				t.Stop()
				return
			}
			continue
		}
		backoff = 0
		s.stats.accepted.Add(1)
		if !s.admit(c) {
			s.stats.refused.Add(1)
			c.Close()
			continue
		}
		go s.serve(c)
	}
}

// admit registers c unless the server is closed or c is over a limit.
func (s *Server) admit(c net.Conn) bool {
	src, ok := remoteIP(c)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case !ok || s.closed:
		return false
	case s.perSource[src] >= s.limits.MaxHoldsPerSource, len(s.conns) >= s.limits.MaxHolds:
		s.logf("tcpprobe: refused %v: over a limit (%d from it, %d in all)", c.RemoteAddr(), s.perSource[src], len(s.conns))
		return false
	}
	s.conns[c] = src
	s.perSource[src]++
	s.wg.Add(1) // before Close can wait: it sets closed under mu first
	return true
}

// release forgets c, then closes it: a client that sees the connection
// end may count on its slot being free.
func (s *Server) release(c net.Conn) {
	s.mu.Lock()
	if src, ok := s.conns[c]; ok {
		delete(s.conns, c)
		if s.perSource[src]--; s.perSource[src] <= 0 {
			delete(s.perSource, src)
		}
	}
	s.mu.Unlock()
	c.Close()
}

// serve reads c's request, acknowledges it, holds c silently, answers and
// closes it.
func (s *Server) serve(c net.Conn) {
	defer s.wg.Done()
	defer s.release(c)
	// The server's own keep-alive probes would refresh the client's NAT
	// mapping and prove nothing.
	if ka, ok := c.(keepAliver); ok {
		if err := ka.SetKeepAlive(false); err != nil {
			s.logf("tcpprobe: %v: keep-alive: %v", c.RemoteAddr(), err)
			return
		}
	}
	// One byte more than a request, to notice longer ones.
	var buf [RequestSize + 1]byte
	c.SetDeadline(time.Now().Add(s.limits.RequestTimeout))
	n := 0
	for n < RequestSize {
		m, err := c.Read(buf[n:])
		n += m
		if err != nil {
			break
		}
	}
	s.stats.bytesReceived.Add(uint64(n))
	nonce, hold, st := parseRequest(buf[:n])
	d := time.Duration(hold) * s.unit
	if st == StatusOK && d > s.limits.MaxHold {
		st = StatusBadHold
	}
	if st != StatusOK {
		switch st {
		case StatusBadVersion:
			s.stats.badVersion.Add(1)
		case StatusBadHold:
			s.stats.badHold.Add(1)
		default:
			s.stats.malformed.Add(1)
		}
		s.logf("tcpprobe: %v: %v (%d bytes)", c.RemoteAddr(), st, n)
		s.write(c, appendAck(buf[:0], nonce, st, 0))
		return
	}
	if !s.write(c, appendAck(buf[:0], nonce, StatusOK, hold)) {
		return
	}
	s.stats.held.Add(1)
	// The client sends nothing more, so the read ends with the hold (its
	// deadline), when the client goes, or when it breaks the protocol.
	c.SetReadDeadline(time.Now().Add(d))
	m, err := c.Read(buf[:1])
	s.stats.bytesReceived.Add(uint64(m))
	var ne net.Error
	if m > 0 || !errors.As(err, &ne) || !ne.Timeout() {
		select {
		case <-s.done:
		default:
			s.stats.abandoned.Add(1)
		}
		return
	}
	if !s.write(c, appendResponse(buf[:0], nonce)) {
		return
	}
	s.stats.answered.Add(1)
	// A client that got the answer closes. One whose mapping expired never
	// will: after a short wait the connection is reset rather than closed,
	// so the kernel does not retransmit the answer into the NAT for
	// minutes.
	c.SetReadDeadline(time.Now().Add(answerWait))
	if _, err := c.Read(buf[:1]); errors.As(err, &ne) && ne.Timeout() {
		if l, ok := c.(interface{ SetLinger(int) error }); ok {
			_ = l.SetLinger(0)
		}
	}
}

// answerWait is how long the server waits for the client to close after
// the answer.
const answerWait = 5 * time.Second

// write sends b on c within the request timeout.
func (s *Server) write(c net.Conn, b []byte) bool {
	c.SetWriteDeadline(time.Now().Add(s.limits.RequestTimeout))
	n, err := c.Write(b)
	s.stats.bytesSent.Add(uint64(n))
	if err != nil {
		s.logf("tcpprobe: write to %v: %v", c.RemoteAddr(), err)
		return false
	}
	return true
}

// remoteIP returns the IP address c comes from, IPv4-mapped addresses
// unmapped.
func remoteIP(c net.Conn) (netip.Addr, bool) {
	var ap netip.AddrPort
	switch a := c.RemoteAddr().(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case nil:
		return netip.Addr{}, false
	default:
		var err error
		if ap, err = netip.ParseAddrPort(a.String()); err != nil {
			return netip.Addr{}, false
		}
	}
	return ap.Addr().Unmap(), ap.Addr().IsValid()
}
