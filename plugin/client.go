package plugin

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Client is a plugin's session with its node: the Go SDK. Dial it with the
// plugin's token, then register services, accept and open streams, look
// peers up and find them by topic. Its goroutine ends with Close.
type Client struct {
	m      *mux
	peerID string
	wg     sync.WaitGroup

	mu        sync.Mutex
	next      uint32                // guarded by mu; the last ID used
	pending   map[uint32]chan frame // guarded by mu; answers awaited
	listeners map[string]*Listener  // guarded by mu; by service
}

// Dial connects to the node's plugin socket at path and authenticates
// with token. It fails with an *Error of code CodeAuth for a wrong token.
func Dial(ctx context.Context, path, token string) (*Client, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("plugin: dial %s: %w", path, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	} else {
		c.SetDeadline(time.Now().Add(helloTimeout))
	}
	hello := appendFrame(nil, frame{typ: frameHello, payload: append([]byte{Version}, token...)})
	if _, err := c.Write(hello); err != nil {
		c.Close()
		return nil, fmt.Errorf("plugin: hello: %w", err)
	}
	f, err := readFrame(c)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("plugin: hello: %w", err)
	}
	c.SetDeadline(time.Time{})
	switch f.typ {
	case frameWelcome:
	case frameError:
		c.Close()
		return nil, parseError(f.payload)
	default:
		c.Close()
		return nil, fmt.Errorf("%w: frame type %#x instead of WELCOME", ErrMalformed, f.typ)
	}
	cl := &Client{peerID: string(f.payload), pending: map[uint32]chan frame{}, listeners: map[string]*Listener{}}
	cl.m = newMux(c, cl.handle)
	cl.wg.Add(1)
	go func() {
		defer cl.wg.Done()
		cl.m.run()
		cl.mu.Lock()
		for _, l := range cl.listeners {
			l.closeLocal()
		}
		cl.mu.Unlock()
	}()
	return cl, nil
}

// PeerID is the node's peer ID.
func (c *Client) PeerID() string { return c.peerID }

// Done is closed when the session ended; Err says why.
func (c *Client) Done() <-chan struct{} { return c.m.done }

// Err is why the session ended, nil while it runs.
func (c *Client) Err() error { return c.m.closeErr() }

// Close ends the session: the node drops the plugin's registrations and
// resets its streams. It is idempotent.
func (c *Client) Close() error {
	c.m.close(nil)
	c.wg.Wait()
	return nil
}

// handle takes the node's control frames.
func (c *Client) handle(f frame) error {
	switch f.typ {
	case frameResult, frameError, frameOpened:
		if f.typ == frameError && f.id == 0 {
			return parseError(f.payload) // the node ends the session
		}
		c.mu.Lock()
		ch := c.pending[f.id]
		delete(c.pending, f.id)
		c.mu.Unlock()
		if ch != nil {
			ch <- f
		} else if f.typ == frameOpened {
			if s := c.m.stream(f.id); s != nil { // an Open given up
				s.Reset()
			}
		}
		return nil
	case frameIncoming:
		var info StreamInfo
		if err := json.Unmarshal(f.payload, &info); err != nil || f.id < nodeStreams {
			return fmt.Errorf("%w: INCOMING %d: %v", ErrMalformed, f.id, err)
		}
		s, err := c.m.add(f.id, info)
		if err != nil {
			return nil
		}
		c.mu.Lock()
		l := c.listeners[info.Service]
		c.mu.Unlock()
		if l == nil || !l.offer(s) {
			s.Reset()
		}
		return nil
	}
	return fmt.Errorf("%w: frame type %#x from the node", ErrMalformed, f.typ)
}

// send writes a frame with a new ID and returns the channel its answer
// comes on.
func (c *Client) send(typ byte, payload []byte, before func(id uint32) error) (uint32, chan frame, error) {
	c.mu.Lock()
	c.next++
	id := c.next
	if id >= nodeStreams {
		c.mu.Unlock()
		return 0, nil, errors.New("plugin: out of IDs")
	}
	ch := make(chan frame, 1)
	c.pending[id] = ch
	c.mu.Unlock()
	if before != nil {
		if err := before(id); err != nil {
			c.forget(id)
			return 0, nil, err
		}
	}
	if err := c.m.write(frame{typ: typ, id: id, payload: payload}); err != nil {
		c.forget(id)
		return 0, nil, err
	}
	return id, ch, nil
}

func (c *Client) forget(id uint32) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// await waits for the answer on ch.
func (c *Client) await(ctx context.Context, id uint32, ch chan frame) (frame, error) {
	select {
	case f := <-ch:
		if f.typ == frameError {
			return f, parseError(f.payload)
		}
		return f, nil
	case <-ctx.Done():
		c.forget(id)
		return frame{}, ctx.Err()
	case <-c.m.done:
		return frame{}, fmt.Errorf("plugin: session closed: %w", c.m.closeErr())
	}
}

func (c *Client) request(ctx context.Context, typ byte, payload []byte, out any) error {
	id, ch, err := c.send(typ, payload, nil)
	if err != nil {
		return err
	}
	f, err := c.await(ctx, id, ch)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(f.payload, out); err != nil {
		return fmt.Errorf("%w: RESULT: %v", ErrMalformed, err)
	}
	return nil
}

// Register has the node hand the plugin the streams peers open to
// service ("chat/1"), which the plugin's grant must allow.
func (c *Client) Register(ctx context.Context, service string) (*Listener, error) {
	l := &Listener{c: c, service: service, ch: make(chan *Stream, 16), closed: make(chan struct{})}
	c.mu.Lock()
	if c.listeners[service] != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("plugin: %s registered already", service)
	}
	c.listeners[service] = l
	c.mu.Unlock()
	if err := c.request(ctx, frameRegister, []byte(service), nil); err != nil {
		c.mu.Lock()
		delete(c.listeners, service)
		c.mu.Unlock()
		return nil, err
	}
	return l, nil
}

// Open opens a stream to service on peer (its ID as text); the node
// connects first if needed.
func (c *Client) Open(ctx context.Context, peer, service string) (*Stream, error) {
	var s *Stream
	payload := append(appendField(nil, []byte(peer)), service...)
	id, ch, err := c.send(frameOpen, payload, func(id uint32) error {
		var err error
		s, err = c.m.add(id, StreamInfo{Peer: peer, Service: service})
		return err
	})
	if err != nil {
		return nil, err
	}
	f, err := c.await(ctx, id, ch)
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			s.Reset()
		} else {
			c.m.remove(id)
		}
		return nil, err
	}
	var info StreamInfo
	if json.Unmarshal(f.payload, &info) == nil {
		s.info.Relayed = info.Relayed
	}
	return s, nil
}

// Lookup returns peer's verified record.
func (c *Client) Lookup(ctx context.Context, peer string) (*Record, error) {
	var r Record
	if err := c.request(ctx, frameLookup, []byte(peer), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// FindPeers returns up to limit peers that advertised topic.
func (c *Client) FindPeers(ctx context.Context, topic string, limit int) ([]Record, error) {
	p := binary.BigEndian.AppendUint16(nil, uint16(max(0, min(limit, 0xffff))))
	var rs []Record
	if err := c.request(ctx, frameFind, append(p, topic...), &rs); err != nil {
		return nil, err
	}
	return rs, nil
}

// Advertise has the node advertise topic, so that FindPeers finds it.
func (c *Client) Advertise(ctx context.Context, topic string) error {
	return c.request(ctx, frameAdvertise, []byte(topic), nil)
}

// Listener hands over the streams peers open to a registered service. It
// is a net.Listener.
type Listener struct {
	c       *Client
	service string
	ch      chan *Stream
	once    sync.Once
	closed  chan struct{}
}

var _ net.Listener = (*Listener)(nil)

// offer queues s for Accept; false when the queue is full or closed.
func (l *Listener) offer(s *Stream) bool {
	select {
	case <-l.closed:
		return false
	default:
	}
	select {
	case l.ch <- s:
		return true
	default:
		return false
	}
}

// AcceptStream waits for the next stream, or ctx's end.
func (l *Listener) AcceptStream(ctx context.Context) (*Stream, error) {
	select {
	case s := <-l.ch:
		return s, nil
	case <-l.closed:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Accept waits for the next stream.
func (l *Listener) Accept() (net.Conn, error) { return l.AcceptStream(context.Background()) }

// Addr names the service.
func (l *Listener) Addr() net.Addr { return streamAddr{Peer: l.c.peerID, Service: l.service} }

// Close unregisters the service.
func (l *Listener) Close() error {
	l.closeLocal()
	l.c.mu.Lock()
	if l.c.listeners[l.service] == l {
		delete(l.c.listeners, l.service)
	}
	l.c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := l.c.request(ctx, frameUnregister, []byte(l.service), nil)
	if l.c.m.closeErr() != nil {
		return nil // the session's end unregistered it
	}
	return err
}

func (l *Listener) closeLocal() { l.once.Do(func() { close(l.closed) }) }
