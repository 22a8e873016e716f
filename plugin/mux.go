package plugin

import (
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
	b := appendFrame(make([]byte, 0, headerLen+len(f.payload)), f)
	m.wmu.Lock()
	_, err := m.c.Write(b)
	m.wmu.Unlock()
	if err != nil {
		m.close(fmt.Errorf("plugin: write: %w", err))
	}
	return err
}

// run reads frames until the socket fails or a frame breaks the protocol.
// It returns why the mux closed.
func (m *mux) run() error {
	for {
		f, err := readFrame(m.c)
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
	changed    chan struct{} // signalled (capacity 1) when any state below changes
	buf        []byte        // received, not read yet
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
	return &Stream{m: m, id: id, info: info, changed: make(chan struct{}, 1),
		recvLeft: InitialWindow, sendLeft: InitialWindow}
}

// Info says what the stream reaches.
func (s *Stream) Info() StreamInfo { return s.info }

func (s *Stream) signal() {
	select {
	case s.changed <- struct{}{}:
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
	if !s.readClosed && s.err == nil {
		s.buf = append(s.buf, p...)
	}
	s.signal()
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
	s.signal()
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

// wait waits for a change of the stream's state, the deadline d, or the
// mux's end. It returns os.ErrDeadlineExceeded when d passed. s.mu is
// held, and held again on return.
func (s *Stream) wait(d time.Time) error {
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
	case <-s.changed:
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
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		switch {
		case s.err != nil:
			return 0, s.err
		case s.readClosed:
			return 0, net.ErrClosed
		case len(s.buf) > 0:
			n := copy(b, s.buf)
			s.buf = s.buf[n:]
			if len(s.buf) == 0 {
				s.buf = nil
			}
			// Grant what was read back, in batches of half a window.
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
			return n, nil
		case s.readEOF:
			return 0, io.EOF
		}
		if err := s.wait(s.rdl); err != nil {
			return 0, err
		}
		if s.m.closeErr() != nil && s.err == nil && len(s.buf) == 0 && !s.readEOF {
			s.err = fmt.Errorf("plugin: session closed: %w", s.m.closeErr())
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
		if err := s.wait(s.wdl); err != nil {
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

func (s *Stream) SetDeadline(t time.Time) error {
	s.mu.Lock()
	s.rdl, s.wdl = t, t
	s.signal()
	s.mu.Unlock()
	return nil
}

func (s *Stream) SetReadDeadline(t time.Time) error {
	s.mu.Lock()
	s.rdl = t
	s.signal()
	s.mu.Unlock()
	return nil
}

func (s *Stream) SetWriteDeadline(t time.Time) error {
	s.mu.Lock()
	s.wdl = t
	s.signal()
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
