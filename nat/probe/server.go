package probe

import (
	"container/heap"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Server answers probe requests on a UDP socket and, optionally, on an
// alternate socket (WithAltConn). It owns its sockets: Close closes them.
// Its methods are safe for concurrent use.
type Server struct {
	conns   [2]net.PacketConn // primary, alternate (nil without one)
	altPort uint16
	limits  Limits
	clock   Clock
	logf    func(format string, args ...any)

	done      chan struct{} // closed by Close
	wake      chan struct{} // tells the scheduler the pending heap changed; capacity 1
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
	stats     serverCounters

	// mu guards the fields below. It is never held while sending or
	// reading.
	mu        sync.Mutex
	siblings  map[netip.AddrPort]bool
	buckets   map[netip.Addr]*bucket
	fwdBucket map[netip.Addr]*bucket // PEER-FORWARD budget per sibling IP
	lastSweep time.Time
	pending   pendingHeap
	scheduled map[pendingKey]bool
	perSource map[netip.Addr]int
}

// NewServer starts a server on conn with the given options. The server
// takes ownership of conn (and of the WithAltConn socket), including when
// NewServer fails, in which case they are closed.
func NewServer(conn net.PacketConn, opts ...ServerOption) (*Server, error) {
	s := defaultServerSettings()
	for _, o := range opts {
		o(&s)
	}
	err := errors.Join(s.errs...)
	if conn == nil {
		err = errors.Join(err, errors.New("probe: NewServer(nil)"))
	}
	if err == nil {
		err = s.limits.validate()
	}
	var altPort uint16
	if err == nil && s.alt != nil {
		a, ok := addrPortOf(s.alt.LocalAddr())
		if !ok || a.Port() == 0 {
			err = errors.New("probe: alternate socket has no UDP port")
		}
		altPort = a.Port()
	}
	if err != nil {
		for _, c := range []net.PacketConn{conn, s.alt} {
			if c != nil {
				c.Close()
			}
		}
		return nil, err
	}
	srv := &Server{
		conns:     [2]net.PacketConn{conn, s.alt},
		altPort:   altPort,
		siblings:  make(map[netip.AddrPort]bool),
		limits:    s.limits,
		clock:     s.clock,
		logf:      s.logf,
		done:      make(chan struct{}),
		wake:      make(chan struct{}, 1),
		buckets:   make(map[netip.Addr]*bucket),
		fwdBucket: make(map[netip.Addr]*bucket),
		scheduled: make(map[pendingKey]bool),
		perSource: make(map[netip.Addr]int),
	}
	for _, a := range s.siblings {
		srv.siblings[a] = true
	}
	for i, c := range srv.conns {
		if c != nil {
			srv.wg.Add(1)
			go srv.readLoop(i, c)
		}
	}
	srv.wg.Add(1)
	go srv.scheduleLoop()
	return srv, nil
}

// Close stops the server: it closes its sockets and waits for its
// goroutines. Pending DELAYED answers are dropped. It is idempotent; later
// calls return the first call's result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		var errs []error
		for _, c := range s.conns {
			if c != nil {
				errs = append(errs, c.Close())
			}
		}
		s.wg.Wait()
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// AddSibling makes addr, the primary address of another probe server, a
// sibling of s at run time: s forwards PEER-SEND requests naming addr to it,
// and accepts PEER-FORWARD from it. Siblings must list each other. It
// returns an error for an invalid address; adding a sibling twice is not
// an error.
func (s *Server) AddSibling(addr netip.AddrPort) error {
	a, err := siblingAddr(addr)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.siblings[a] = true
	s.mu.Unlock()
	return nil
}

// RemoveSibling forgets the sibling at addr: from then on s neither
// forwards to it nor accepts its PEER-FORWARD. Removing an unknown address
// does nothing.
func (s *Server) RemoveSibling(addr netip.AddrPort) {
	a := netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.siblings, a)
	for o := range s.siblings {
		if o.Addr() == a.Addr() {
			return
		}
	}
	delete(s.fwdBucket, a.Addr())
}

// Siblings returns the primary addresses of the server's siblings, in no
// particular order.
func (s *Server) Siblings() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]netip.AddrPort, 0, len(s.siblings))
	for a := range s.siblings {
		out = append(out, a)
	}
	return out
}

func (s *Server) isSibling(a netip.AddrPort) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.siblings[a]
}

// siblingAddr validates a sibling's address and unmaps it.
func siblingAddr(a netip.AddrPort) (netip.AddrPort, error) {
	ip := a.Addr().Unmap()
	if !ip.IsValid() || a.Port() == 0 || ip.IsUnspecified() || ip.IsMulticast() {
		return netip.AddrPort{}, fmt.Errorf("probe: invalid sibling %v", a)
	}
	return netip.AddrPortFrom(ip, a.Port()), nil
}

// ServerStats counts what a server received, sent and dropped.
type ServerStats struct {
	Received, Sent           uint64 // datagrams
	BytesReceived, BytesSent uint64
	// Dropped, by reason: not a well-formed message (or too long); a
	// request shorter than RequestSize; an answer type or PEER-FORWARD from
	// a stranger; over the source's rate (or a sibling's forwarding
	// rate); an answer over the request's byte budget.
	Malformed, Short, Ignored, RateLimited, OverBudget uint64
	// Refused counts DELAYED and PEER-SEND requests refused by a limit or
	// an unknown sibling; Scheduled the DELAYED answers scheduled;
	// Forwarded the PEER-FORWARD messages sent.
	Refused, Scheduled, Forwarded uint64
}

type serverCounters struct {
	received, sent, bytesReceived, bytesSent           atomic.Uint64
	malformed, short, ignored, rateLimited, overBudget atomic.Uint64
	refused, scheduled, forwarded                      atomic.Uint64
}

// Stats returns the server's counters.
func (s *Server) Stats() ServerStats {
	c := &s.stats
	return ServerStats{
		Received: c.received.Load(), Sent: c.sent.Load(),
		BytesReceived: c.bytesReceived.Load(), BytesSent: c.bytesSent.Load(),
		Malformed: c.malformed.Load(), Short: c.short.Load(), Ignored: c.ignored.Load(),
		RateLimited: c.rateLimited.Load(), OverBudget: c.overBudget.Load(),
		Refused: c.refused.Load(), Scheduled: c.scheduled.Load(), Forwarded: c.forwarded.Load(),
	}
}

// maxReadFailures is how many read errors in a row end a read loop.
const maxReadFailures = 1000

func (s *Server) readLoop(idx int, c net.PacketConn) {
	defer s.wg.Done()
	// One byte more than the largest message, to notice longer ones.
	buf := make([]byte, MaxMessageSize+1)
	failures := 0 // consecutive read errors
	for {
		n, from, err := c.ReadFrom(buf)
		if err == nil {
			failures = 0
		} else {
			select {
			case <-s.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Transient errors (ICMP reports on some systems) are not
			// fatal; a socket that only fails is given up.
			if failures++; failures >= maxReadFailures {
				s.logf("probe: read: %v; giving up the socket after %d errors in a row", err, failures)
				return
			}
			s.logf("probe: read: %v", err)
			continue
		}
		src, ok := addrPortOf(from)
		if !ok {
			continue
		}
		s.stats.received.Add(1)
		s.stats.bytesReceived.Add(uint64(n))
		s.handle(idx, buf[:n], src)
	}
}

// handle processes one datagram that arrived on socket idx from src.
func (s *Server) handle(idx int, b []byte, src netip.AddrPort) {
	m, err := parseMessage(b)
	if err != nil {
		s.stats.malformed.Add(1)
		return
	}
	if m.Type == typePeerForward {
		s.handleForward(idx, m, src)
		return
	}
	if !m.Type.isRequest() {
		s.stats.ignored.Add(1)
		return
	}
	if len(b) < RequestSize {
		s.stats.short.Add(1)
		return
	}
	if !s.allow(src.Addr()) {
		s.stats.rateLimited.Add(1)
		return
	}
	budget := len(b)
	switch m.Type {
	case typeBinding:
		s.send(idx, message{Type: typeBindingResponse, TxID: m.TxID, AltPort: s.altPort, Addr: src}, src, &budget)
	case typeAltPort:
		other := 1 - idx
		if s.conns[other] == nil {
			s.stats.ignored.Add(1)
			return
		}
		s.send(other, message{Type: typeAltPortResponse, TxID: m.TxID, Addr: src}, src, &budget)
	case typeDelayed:
		s.handleDelayed(idx, m, src, budget)
	case typePeerSend:
		s.handlePeerSend(idx, m, src, budget)
	}
}

func (s *Server) handleDelayed(idx int, m message, src netip.AddrPort, budget int) {
	ack := message{Type: typeDelayedAck, TxID: m.TxID, Delay: m.Delay, Status: statusOK}
	if m.Delay < time.Millisecond || m.Delay > s.limits.MaxDelay {
		ack.Status = statusBadDelay
		s.stats.refused.Add(1)
		s.send(idx, ack, src, &budget)
		return
	}
	// The answer is scheduled before the acknowledgement is sent, with
	// what the acknowledgement leaves of the budget, so that a client that
	// got the acknowledgement knows its answer is on the way.
	key := pendingKey{src: src, id: m.TxID}
	now := s.clock.Now()
	retransmit := false
	s.mu.Lock()
	switch {
	case s.scheduled[key]:
		// A retransmission: acknowledged again, scheduled once.
		retransmit = true
	case s.perSource[src.Addr()] >= s.limits.MaxDelayedPerSource || len(s.pending) >= s.limits.MaxDelayed:
		ack.Status = statusRefused
	default:
		s.scheduled[key] = true
		s.perSource[src.Addr()]++
		heap.Push(&s.pending, &pendingAnswer{
			due: now.Add(m.Delay), conn: idx, key: key, delay: m.Delay, budget: budget - delayedAckLen,
		})
		s.stats.scheduled.Add(1)
	}
	s.mu.Unlock()
	switch {
	case ack.Status != statusOK:
		s.stats.refused.Add(1)
	case !retransmit:
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	s.send(idx, ack, src, &budget)
}

func (s *Server) handlePeerSend(idx int, m message, src netip.AddrPort, budget int) {
	sib := netip.AddrPortFrom(m.Addr.Addr().Unmap(), m.Addr.Port())
	ack := message{Type: typePeerSendAck, TxID: m.TxID, Status: statusOK}
	if !s.isSibling(sib) {
		ack.Status = statusUnknownSibling
		s.stats.refused.Add(1)
		s.send(idx, ack, src, &budget)
		return
	}
	if !s.send(idx, ack, src, &budget) {
		return
	}
	fwd := message{Type: typePeerForward, TxID: m.TxID, Budget: uint16(budget), Addr: src}
	unlimited := MaxMessageSize
	if s.send(0, fwd, sib, &unlimited) {
		s.stats.forwarded.Add(1)
	}
}

// handleForward sends PEER-SEND-RESPONSE for a sibling's PEER-FORWARD.
func (s *Server) handleForward(idx int, m message, src netip.AddrPort) {
	if idx != 0 || !s.isSibling(src) {
		s.stats.ignored.Add(1)
		return
	}
	// A sibling may forward only so much: a sibling that misbehaves (or
	// whose address is spoofed) cannot make this server send much.
	if !s.allowForward(src.Addr()) {
		s.stats.rateLimited.Add(1)
		return
	}
	target := netip.AddrPortFrom(m.Addr.Addr().Unmap(), m.Addr.Port())
	if !target.Addr().IsValid() || target.Port() == 0 || target.Addr().IsUnspecified() || target.Addr().IsMulticast() {
		s.stats.ignored.Add(1)
		return
	}
	// The requester was rate-limited by the sibling; limit what this
	// server sends towards its address as well.
	if !s.allow(target.Addr()) {
		s.stats.rateLimited.Add(1)
		return
	}
	budget := int(m.Budget)
	s.send(0, message{Type: typePeerSendResponse, TxID: m.TxID, Addr: target}, target, &budget)
}

// send encodes m and sends it from socket idx to dst, if it fits in what is
// left of *budget, which it then reduces. It reports whether m was sent.
func (s *Server) send(idx int, m message, dst netip.AddrPort, budget *int) bool {
	var arr [MaxMessageSize]byte
	b, err := appendMessage(arr[:0], m)
	if err != nil {
		s.logf("probe: encode %v: %v", m.Type, err)
		return false
	}
	if len(b) > *budget {
		s.stats.overBudget.Add(1)
		s.logf("probe: %v to %v: %d bytes over the budget of %d", m.Type, dst, len(b), *budget)
		return false
	}
	*budget -= len(b)
	if _, err := s.conns[idx].WriteTo(b, net.UDPAddrFromAddrPort(dst)); err != nil {
		s.logf("probe: send %v to %v: %v", m.Type, dst, err)
		return false
	}
	s.stats.sent.Add(1)
	s.stats.bytesSent.Add(uint64(len(b)))
	return true
}

// scheduleLoop sends DELAYED answers when they are due.
func (s *Server) scheduleLoop() {
	defer s.wg.Done()
	for {
		var due []*pendingAnswer
		var wait <-chan time.Time
		s.mu.Lock()
		now := s.clock.Now()
		for len(s.pending) > 0 && !s.pending[0].due.After(now) {
			p := heap.Pop(&s.pending).(*pendingAnswer)
			delete(s.scheduled, p.key)
			if s.perSource[p.key.src.Addr()]--; s.perSource[p.key.src.Addr()] <= 0 {
				delete(s.perSource, p.key.src.Addr())
			}
			due = append(due, p)
		}
		if len(s.pending) > 0 {
			wait = s.clock.At(s.pending[0].due)
		}
		s.mu.Unlock()
		for _, p := range due {
			budget := p.budget
			s.send(p.conn, message{Type: typeDelayedResponse, TxID: p.key.id, Delay: p.delay, Addr: p.key.src}, p.key.src, &budget)
		}
		select {
		case <-wait:
		case <-s.wake:
		case <-s.done:
			return
		}
	}
}

// allow takes a token from ip's bucket.
func (s *Server) allow(ip netip.Addr) bool {
	now := s.clock.Now()
	rate, burst := s.limits.Rate, float64(s.limits.Burst)
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buckets[ip]
	if b == nil {
		if len(s.buckets) >= s.limits.MaxSources {
			s.sweepLocked(now)
			if len(s.buckets) >= s.limits.MaxSources {
				return false
			}
		}
		b = &bucket{tokens: burst, last: now}
		s.buckets[ip] = b
	}
	b.refill(now, rate, burst)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// allowForward takes a token from the forwarding bucket of sibling ip.
func (s *Server) allowForward(ip netip.Addr) bool {
	now := s.clock.Now()
	rate, burst := s.limits.ForwardRate, float64(s.limits.ForwardBurst)
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.fwdBucket[ip]
	if b == nil {
		// Siblings are few and configured, so the map is bounded by them.
		b = &bucket{tokens: burst, last: now}
		s.fwdBucket[ip] = b
	}
	b.refill(now, rate, burst)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweepLocked forgets the sources whose bucket is full again, at most once
// a second.
func (s *Server) sweepLocked(now time.Time) {
	if now.Sub(s.lastSweep) < time.Second {
		return
	}
	s.lastSweep = now
	for ip, b := range s.buckets {
		b.refill(now, s.limits.Rate, float64(s.limits.Burst))
		if b.tokens >= float64(s.limits.Burst) {
			delete(s.buckets, ip)
		}
	}
}

// bucket is a token bucket.
type bucket struct {
	tokens float64
	last   time.Time
}

func (b *bucket) refill(now time.Time, rate, burst float64) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(burst, b.tokens+d.Seconds()*rate)
		b.last = now
	}
}

type pendingKey struct {
	src netip.AddrPort
	id  txID
}

type pendingAnswer struct {
	due    time.Time
	conn   int
	key    pendingKey
	delay  time.Duration
	budget int
}

// pendingHeap orders pending answers by due time.
type pendingHeap []*pendingAnswer

func (h pendingHeap) Len() int           { return len(h) }
func (h pendingHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h pendingHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *pendingHeap) Push(x any)        { *h = append(*h, x.(*pendingAnswer)) }
func (h *pendingHeap) Pop() any {
	old := *h
	p := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return p
}

// addrPortOf returns a UDP address as a netip.AddrPort, IPv4-mapped
// addresses unmapped.
func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.UDPAddr:
		ap = a.AddrPort()
	case nil:
		return ap, false
	default:
		var err error
		if ap, err = netip.ParseAddrPort(a.String()); err != nil {
			return ap, false
		}
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	return ap, ap.Addr().IsValid()
}
