package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	msmux "github.com/multiformats/go-multistream"
)

// Services are named and versioned, "chat/1": a name of lower-case
// letters, digits, dots, dashes and underscores (at most 64 bytes), a
// slash, and a version number. Peers reach a service over the libp2p
// protocol ServiceProtocol(name), so any libp2p program can speak to it.
var serviceName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}/[0-9]{1,9}$`)

// ErrBadService is returned for a service name of the wrong form.
var ErrBadService = errors.New("rendezvous: bad service name (want name/version, like chat/1)")

// ErrServiceTaken is returned by Handle for a service that has a handler.
var ErrServiceTaken = errors.New("rendezvous: service already handled")

// CheckService tells whether name is a valid service name.
func CheckService(name string) error {
	if !serviceName.MatchString(name) {
		return fmt.Errorf("%w: %q", ErrBadService, name)
	}
	return nil
}

// ServiceProtocol is the libp2p protocol of service name.
func ServiceProtocol(name string) protocol.ID { return protocol.ID("/p2pos/svc/" + name) }

// Handle has handler called, on a goroutine of its own, with every stream
// a peer opens to service name. The handler owns the stream and closes it.
func (n *Node) Handle(name string, handler func(*Stream)) error {
	if err := CheckService(name); err != nil {
		return err
	}
	if handler == nil {
		return errors.New("rendezvous: Handle: nil handler")
	}
	if n.closed() {
		return ErrClosed
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.services[name] {
		return fmt.Errorf("%w: %s", ErrServiceTaken, name)
	}
	n.services[name] = true
	n.h.SetStreamHandler(ServiceProtocol(name), func(s network.Stream) {
		handler(newStream(s, name))
	})
	return nil
}

// Unhandle stops taking streams for service name. Streams already taken
// go on.
func (n *Node) Unhandle(name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.services[name] {
		delete(n.services, name)
		n.h.RemoveStreamHandler(ServiceProtocol(name))
	}
}

// Open connects to id if needed (Connect) and opens a stream to its
// service name. It fails with an error wrapping ErrNoService when the peer
// does not handle the service.
func (n *Node) Open(ctx context.Context, id peer.ID, name string) (*Stream, error) {
	if err := CheckService(name); err != nil {
		return nil, err
	}
	s, err := n.NewStream(ctx, id, ServiceProtocol(name))
	if err != nil {
		if errors.Is(err, msmux.ErrNotSupported[protocol.ID]{}) {
			return nil, fmt.Errorf("%w: %s on %s", ErrNoService, name, id)
		}
		return nil, err
	}
	return newStream(s, name), nil
}

// ErrNoService is returned by Open when the peer does not handle the
// service.
var ErrNoService = errors.New("rendezvous: peer does not handle the service")

// Stream is a stream to or from a service on a peer. It is a net.Conn:
// deadlines apply to reads and writes, CloseWrite half-closes it (the
// peer reads io.EOF and may still write), and Close closes both ways.
type Stream struct {
	s       network.Stream
	service string
}

var _ net.Conn = (*Stream)(nil)

func newStream(s network.Stream, service string) *Stream {
	return &Stream{s: s, service: service}
}

// Peer is the peer at the other end.
func (s *Stream) Peer() peer.ID { return s.s.Conn().RemotePeer() }

// Service is the service the stream was opened to.
func (s *Stream) Service() string { return s.service }

// Relayed tells whether the stream goes through a relay.
func (s *Stream) Relayed() bool { return s.s.Conn().Stat().Limited }

// Read reads from the stream. Past the read deadline it fails with an
// error that matches os.ErrDeadlineExceeded, as a net.Conn's does.
func (s *Stream) Read(b []byte) (int, error) {
	n, err := s.s.Read(b)
	return n, deadlineError(err)
}

// Write writes to the stream. Past the write deadline it fails with an
// error that matches os.ErrDeadlineExceeded.
func (s *Stream) Write(b []byte) (int, error) {
	n, err := s.s.Write(b)
	return n, deadlineError(err)
}

// timeoutError is a muxer's deadline error, made to match
// os.ErrDeadlineExceeded.
type timeoutError struct{ err error }

func (e timeoutError) Error() string   { return e.err.Error() }
func (e timeoutError) Unwrap() []error { return []error{os.ErrDeadlineExceeded, e.err} }
func (e timeoutError) Timeout() bool   { return true }
func (e timeoutError) Temporary() bool { return true }

func deadlineError(err error) error {
	var ne net.Error
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) && errors.As(err, &ne) && ne.Timeout() {
		return timeoutError{err}
	}
	return err
}

// Close closes the stream both ways.
func (s *Stream) Close() error { return s.s.Close() }

// CloseWrite closes the writing side: the peer reads io.EOF.
func (s *Stream) CloseWrite() error { return s.s.CloseWrite() }

// CloseRead stops reading: what the peer still writes is dropped.
func (s *Stream) CloseRead() error { return s.s.CloseRead() }

// Reset closes the stream both ways at once, telling the peer it failed.
func (s *Stream) Reset() error { return s.s.Reset() }

func (s *Stream) SetDeadline(t time.Time) error      { return s.s.SetDeadline(t) }
func (s *Stream) SetReadDeadline(t time.Time) error  { return s.s.SetReadDeadline(t) }
func (s *Stream) SetWriteDeadline(t time.Time) error { return s.s.SetWriteDeadline(t) }

// LocalAddr is this node's end: its peer ID and the connection's local
// address.
func (s *Stream) LocalAddr() net.Addr {
	return StreamAddr{Peer: s.s.Conn().LocalPeer(), Addr: s.s.Conn().LocalMultiaddr()}
}

// RemoteAddr is the peer's end: its peer ID and the connection's remote
// address (a relay's circuit address for a relayed stream).
func (s *Stream) RemoteAddr() net.Addr {
	return StreamAddr{Peer: s.s.Conn().RemotePeer(), Addr: s.s.Conn().RemoteMultiaddr()}
}

// StreamAddr is a net.Addr of one end of a Stream.
type StreamAddr struct {
	Peer peer.ID
	Addr ma.Multiaddr
}

// Network is "p2p".
func (a StreamAddr) Network() string { return "p2p" }

// String is the address with the peer ID, like /ip4/1.2.3.4/udp/4001/quic-v1/p2p/12D3Koo....
func (a StreamAddr) String() string {
	if len(a.Addr) == 0 {
		return "/p2p/" + a.Peer.String()
	}
	return a.Addr.String() + "/p2p/" + a.Peer.String()
}
