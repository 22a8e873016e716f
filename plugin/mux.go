package plugin

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// mux carries frames over one socket, for the node's side of a session
// and for a plugin's: the streams, with their flow control, are the same
// at both ends; every other frame goes to handle.
type mux struct {
	c      net.Conn
	handle func(frame) error // control frames; an error closes the mux
	// broken, if set, is told of a frame that broke the format, before
	// the mux closes: the node answers it with an ERROR.
	broken func(error)

	wmu sync.Mutex // serializes frame writes

	mu      sync.Mutex
	streams map[uint32]*Stream // guarded by mu
	err     error              // guarded by mu; why the mux closed
	done    chan struct{}      // closed when the mux closes
}

func newMux(c net.Conn, handle func(frame) error) *mux {
	return &mux{c: c, handle: handle, streams: map[uint32]*Stream{}, done: make(chan struct{})}
}

// write sends one frame. A failed write closes the mux.
func (m *mux) write(f frame) error {
	var h [headerLen]byte
	h[0] = f.typ
	binary.BigEndian.PutUint32(h[1:5], f.id)
	binary.BigEndian.PutUint32(h[5:9], uint32(len(f.payload)))
	bufs := net.Buffers{h[:], f.payload} // one writev, no copy
	m.wmu.Lock()
	_, err := bufs.WriteTo(m.c)
	m.wmu.Unlock()
	if err != nil {
		m.close(fmt.Errorf("plugin: write: %w", err))
	}
	return err
}

// run reads frames until the socket fails or a frame breaks the protocol.
// It returns why the mux closed.
func (m *mux) run() error {
	r := bufio.NewReaderSize(m.c, 16<<10)
	for {
		f, err := readFrame(r)
		if err != nil {
			if errors.Is(err, ErrMalformed) && m.broken != nil {
				m.broken(err)
			}
			m.close(err)
			return m.closeErr()
		}
		switch f.typ {
		case frameData, frameWindow, frameCloseWrite, frameReset:
			err = m.streamFrame(f)
		default:
			err = m.handle(f)
		}
		if err != nil {
			if errors.Is(err, ErrMalformed) && m.broken != nil {
				m.broken(err)
			}
			m.close(err)
			return m.closeErr()
		}
	}
}

// streamFrame hands a frame to its stream. A frame for a stream that is
// gone (it was reset, or closed both ways) is dropped: the other side may
// have sent it before it knew.
func (m *mux) streamFrame(f frame) error {
	m.mu.Lock()
	s := m.streams[f.id]
	m.mu.Unlock()
	if s == nil {
		return nil
	}
	switch f.typ {
	case frameData:
		return s.received(f.payload)
	case frameWindow:
		if len(f.payload) != 4 {
			return fmt.Errorf("%w: WINDOW of %d bytes", ErrMalformed, len(f.payload))
		}
		return s.granted(binary.BigEndian.Uint32(f.payload))
	case frameCloseWrite:
		s.remoteClosedWrite()
	case frameReset:
		s.remoteReset(string(f.payload))
	}
	return nil
}

func (m *mux) closeErr() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// close closes the socket and fails every stream with err. Only the first
// call does anything.
func (m *mux) close(err error) {
	m.mu.Lock()
	if m.err != nil {
		m.mu.Unlock()
		return
	}
	if err == nil {
		err = net.ErrClosed
	}
	m.err = err
	streams := m.streams
	m.streams = map[uint32]*Stream{}
	close(m.done)
	m.mu.Unlock()
	m.c.Close()
	for _, s := range streams {
		s.fail(fmt.Errorf("plugin: session closed: %w", err))
	}
}

// add registers a new stream with ID id. It fails if the ID is taken or
// the mux closed.
func (m *mux) add(id uint32, info StreamInfo) (*Stream, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, m.err
	}
	if _, taken := m.streams[id]; taken {
		return nil, fmt.Errorf("plugin: stream %d exists", id)
	}
	s := newStream(m, id, info)
	m.streams[id] = s
	return s, nil
}

func (m *mux) remove(id uint32) {
	m.mu.Lock()
	delete(m.streams, id)
	m.mu.Unlock()
}

func (m *mux) stream(id uint32) *Stream {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.streams[id]
}

// chunk is a DATA payload, read up to off.
type chunk struct {
	b   []byte
	off int
}

// StreamInfo says what a stream reaches.
type StreamInfo struct {
	// Peer is the remote peer's ID, as text.
	Peer string `json:"peer"`
	// Service is the service the stream was opened to.
	Service string `json:"service"`
	// Relayed tells whether the stream goes through a relay.
	Relayed bool `json:"relayed"`
}

// Stream is a stream over a plugin session, to or from a service on a
// peer: a net.Conn with deadlines and half-close. Both ends of the
// session, the node and the plugin, use it.
type Stream struct {
	m    *mux
	id   uint32
	info StreamInfo

	mu         sync.Mutex
	readable   chan struct{} // signalled (capacity 1) when a reader may go on
	writable   chan struct{} // signalled (capacity 1) when a writer may go on
	buf        []chunk       // received, not read yet: DATA payloads in order
	recvLeft   int64         // DATA bytes the other side may still send
	consumed   int64         // bytes read since the last WINDOW sent
	sendLeft   int64         // DATA bytes this side may still send
	readEOF    bool          // the other side closed its writing side
	wroteEOF   bool          // this side closed its writing side
	readClosed bool          // this side will not read any more
	err        error         // reset or failed: every call fails with it
	rdl, wdl   time.Time     // deadlines
}

func newStream(m *mux, id uint32, info StreamInfo) *Stream {
	return &Stream{m: m, id: id, info: info, readable: make(chan struct{}, 1), writable: make(chan struct{}, 1),
		recvLeft: InitialWindow, sendLeft: InitialWindow}
}

// Info says what the stream reaches.
func (s *Stream) Info() StreamInfo { return s.info }

// signal wakes a reader and a writer that wait, if any: a reader and a
// writer may wait at once, each on its own channel.
func (s *Stream) signal() {
	s.signalRead()
	s.signalWrite()
}

func (s *Stream) signalRead() {
	select {
	case s.readable <- struct{}{}:
	default:
	}
}

func (s *Stream) signalWrite() {
	select {
	case s.writable <- struct{}{}:
	default:
	}
}

// received takes a DATA frame's payload.
func (s *Stream) received(p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.readEOF {
		return fmt.Errorf("%w: DATA on stream %d after CLOSE_WRITE", ErrMalformed, s.id)
	}
	if int64(len(p)) > s.recvLeft {
		return fmt.Errorf("%w: %d DATA bytes on stream %d, %d granted", ErrMalformed, len(p), s.id, s.recvLeft)
	}
	s.recvLeft -= int64(len(p))
	if !s.readClosed && s.err == nil && len(p) > 0 {
		s.buf = append(s.buf, chunk{b: p}) // readFrame made p for this frame alone
	} else {
		putPayload(p)
	}
	s.signalRead()
	return nil
}

// granted takes a WINDOW.
func (s *Stream) granted(n uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sendLeft+int64(n) > maxWindow {
		return fmt.Errorf("%w: window of stream %d over %d", ErrMalformed, s.id, maxWindow)
	}
	s.sendLeft += int64(n)
	s.signalWrite()
	return nil
}

func (s *Stream) remoteClosedWrite() {
	s.mu.Lock()
	s.readEOF = true
	s.signal()
	done := s.wroteEOF
	s.mu.Unlock()
	if done {
		s.m.remove(s.id)
	}
}

// ErrReset is wrapped by the errors of a stream the other side reset.
var ErrReset = errors.New("plugin: stream reset")

func (s *Stream) remoteReset(msg string) {
	err := ErrReset
	if msg != "" {
		err = fmt.Errorf("%w: %s", ErrReset, msg)
	}
	s.fail(err)
	s.m.remove(s.id)
}

// fail ends the stream with err, unless it ended already.
func (s *Stream) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
		s.buf = nil
	}
	s.signal()
	s.mu.Unlock()
}

// wait waits for a signal on ch, the deadline d, or the mux's end. It
// returns os.ErrDeadlineExceeded when d passed. s.mu is held, and held
// again on return.
func (s *Stream) wait(ch chan struct{}, d time.Time) error {
	var timeout <-chan time.Time
	if !d.IsZero() {
		left := time.Until(d)
		if left <= 0 {
			return os.ErrDeadlineExceeded
		}
		t := time.NewTimer(left)
		defer t.Stop()
		timeout = t.C
	}
	s.mu.Unlock()
	defer s.mu.Lock()
	select {
	case <-ch:
		return nil
	case <-timeout:
		return os.ErrDeadlineExceeded
	case <-s.m.done:
		return nil
	}
}

// Read reads what the other side sent. It returns io.EOF once the other
// side closed its writing side and everything was read.
func (s *Stream) Read(b []byte) (int, error) {
	n := 0
	err := s.take(func(p []byte) int {
		c := copy(b[n:], p)
		n += c
		return c
	}, func() bool { return n == len(b) })
	return n, err
}

// WriteTo writes what the other side sends to w until its end of file,
// without copying it first: io.Copy uses it.
func (s *Stream) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		var werr error
		err := s.take(func(p []byte) int {
			n, err := w.Write(p)
			total += int64(n)
			if err != nil {
				werr = err
			}
			return n
		}, func() bool { return werr != nil })
		switch {
		case werr != nil:
			return total, werr
		case err == io.EOF:
			return total, nil
		case err != nil:
			return total, err
		}
	}
}

// take waits for received bytes, hands them to use (which returns how
// many it used) until full says to stop or none are left, and grants the
// other side what was used, in batches of half a window. It returns
// io.EOF at the end of the stream.
func (s *Stream) take(use func([]byte) int, full func() bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		switch {
		case s.err != nil:
			return s.err
		case s.readClosed:
			return net.ErrClosed
		case len(s.buf) > 0:
			n := 0
			for !full() && len(s.buf) > 0 {
				head := s.buf[0]
				s.mu.Unlock() // use may block (WriteTo's writer)
				c := use(head.b[head.off:])
				s.mu.Lock()
				if s.err != nil || len(s.buf) == 0 {
					return s.err
				}
				n += c
				if s.buf[0].off += c; s.buf[0].off == len(s.buf[0].b) {
					putPayload(s.buf[0].b)
					s.buf[0] = chunk{}
					s.buf = s.buf[1:]
				}
				if c < len(head.b)-head.off {
					break
				}
			}
			s.consumed += int64(n)
			if s.consumed >= InitialWindow/2 {
				grant := s.consumed
				s.consumed = 0
				s.recvLeft += grant
				var p [4]byte
				binary.BigEndian.PutUint32(p[:], uint32(grant))
				s.mu.Unlock()
				s.m.write(frame{typ: frameWindow, id: s.id, payload: p[:]})
				s.mu.Lock()
			}
			return nil
		case s.readEOF:
			return io.EOF
		}
		if err := s.wait(s.readable, s.rdl); err != nil {
			return err
		}
		if s.m.closeErr() != nil && s.err == nil && len(s.buf) == 0 && !s.readEOF {
			s.err = fmt.Errorf("plugin: session closed: %w", s.m.closeErr())
		}
	}
}

// ReadFrom sends what r yields until its end of file, as the window
// allows, in frames of up to MaxPayload bytes read straight into them:
// io.Copy uses it.
func (s *Stream) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	// Write sends the frame before it returns: the buffer is free again.
	buf := getPayload(MaxPayload)
	defer putPayload(buf)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			w, werr := s.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Write sends b, as the other side's window allows: it blocks while the
// other side has not read what came before.
func (s *Stream) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	written := 0
	for written < len(b) {
		switch {
		case s.err != nil:
			return written, s.err
		case s.wroteEOF:
			return written, fmt.Errorf("plugin: write after CloseWrite: %w", net.ErrClosed)
		case s.m.closeErr() != nil:
			return written, fmt.Errorf("plugin: session closed: %w", s.m.closeErr())
		case s.sendLeft > 0:
			n := min(int64(len(b)-written), s.sendLeft, MaxPayload)
			s.sendLeft -= n
			chunk := b[written : written+int(n)]
			s.mu.Unlock()
			err := s.m.write(frame{typ: frameData, id: s.id, payload: chunk})
			s.mu.Lock()
			if err != nil {
				return written, err
			}
			written += int(n)
			continue
		}
		if err := s.wait(s.writable, s.wdl); err != nil {
			return written, err
		}
	}
	return written, nil
}

// CloseWrite closes the writing side: the other side reads io.EOF once it
// read everything before.
func (s *Stream) CloseWrite() error {
	s.mu.Lock()
	if s.err != nil || s.wroteEOF {
		err := s.err
		s.mu.Unlock()
		return err
	}
	s.wroteEOF = true
	done := s.readEOF
	s.mu.Unlock()
	err := s.m.write(frame{typ: frameCloseWrite, id: s.id})
	if done {
		s.m.remove(s.id)
	}
	return err
}

// CloseRead stops reading: what the other side still sends is dropped.
func (s *Stream) CloseRead() error {
	s.mu.Lock()
	s.readClosed = true
	s.buf = nil
	s.signal()
	s.mu.Unlock()
	return nil
}

// Close closes the stream: the writing side as CloseWrite does, and the
// reading side.
func (s *Stream) Close() error {
	err := s.CloseWrite()
	s.CloseRead()
	s.m.remove(s.id)
	return err
}

// Reset aborts the stream both ways; the other side's calls fail with
// ErrReset.
func (s *Stream) Reset() error {
	s.resetWith("")
	return nil
}

func (s *Stream) resetWith(msg string) {
	s.mu.Lock()
	already := s.err != nil
	if !already {
		s.err = fmt.Errorf("%w (by this side)", ErrReset)
		s.buf = nil
	}
	s.signal()
	s.mu.Unlock()
	s.m.remove(s.id)
	if !already {
		s.m.write(frame{typ: frameReset, id: s.id, payload: []byte(msg)})
	}
}

// SetDeadline sets the read and write deadlines.
func (s *Stream) SetDeadline(t time.Time) error { return s.setDeadlines(&t, &t) }

// SetReadDeadline sets the read deadline: a Read waiting past it fails
// with os.ErrDeadlineExceeded.
func (s *Stream) SetReadDeadline(t time.Time) error { return s.setDeadlines(&t, nil) }

// SetWriteDeadline sets the write deadline: a Write waiting past it for
// the other side's window fails with os.ErrDeadlineExceeded.
func (s *Stream) SetWriteDeadline(t time.Time) error { return s.setDeadlines(nil, &t) }

func (s *Stream) setDeadlines(r, w *time.Time) error {
	s.mu.Lock()
	if r != nil {
		s.rdl = *r
	}
	if w != nil {
		s.wdl = *w
	}
	s.signal() // waiting calls look at their deadline again
	s.mu.Unlock()
	return nil
}

// LocalAddr is the session's local end.
func (s *Stream) LocalAddr() net.Addr { return s.m.c.LocalAddr() }

// RemoteAddr names the peer and service the stream reaches.
func (s *Stream) RemoteAddr() net.Addr { return streamAddr(s.info) }

type streamAddr StreamInfo

func (a streamAddr) Network() string { return "p2p" }
func (a streamAddr) String() string  { return "/p2p/" + a.Peer + "/" + a.Service }

var _ net.Conn = (*Stream)(nil)
