package plugin

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	logging "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2pos/rendezvous"
	"github.com/p2pos/rendezvous/dht"
)

// Node is what a Server needs of a node; *rendezvous.Node has it.
type Node interface {
	ID() peer.ID
	Handle(service string, handler func(*rendezvous.Stream)) error
	Unhandle(service string)
	Open(ctx context.Context, id peer.ID, service string) (*rendezvous.Stream, error)
	Lookup(ctx context.Context, id peer.ID) (*dht.Record, error)
	FindPeers(ctx context.Context, topic string, limit int) ([]*dht.Record, error)
	Advertise(ctx context.Context, topic string) error
}

// Bounds of a server.
const (
	helloTimeout = 5 * time.Second
	// requestTimeout bounds a request's work on the network (open,
	// lookup, find, advertise).
	requestTimeout = time.Minute
)

// Option configures a Server.
type Option func(*settings)

type settings struct {
	log *logging.ZapEventLogger
}

// WithLogger sets the server's logger (default: the "rendezvous/plugin"
// logger).
func WithLogger(l *logging.ZapEventLogger) Option { return func(s *settings) { s.log = l } }

// Server serves plugins on a Unix domain socket: it authenticates each,
// and carries its registrations, streams and requests to the node. Its
// goroutines end with Close.
type Server struct {
	node Node
	cfg  *Config
	ln   *net.UnixListener
	path string
	log  *logging.ZapEventLogger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	sessions map[*session]struct{} // guarded by mu
	owners   map[string]*session   // guarded by mu; service: the session that registered it
	closed   bool                  // guarded by mu
}

// Listen serves plugins on a Unix socket at path (mode 0600; a stale socket
// file is replaced), as cfg allows.
func Listen(node Node, path string, cfg *Config, opts ...Option) (*Server, error) {
	s := settings{log: logging.Logger("rendezvous/plugin")}
	for _, o := range opts {
		o(&s)
	}
	if err := cfg.Check(); err != nil {
		return nil, fmt.Errorf("plugin: %w", err)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("plugin: %s is in use", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("plugin: %w", err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("plugin: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("plugin: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := &Server{node: node, cfg: cfg, ln: ln, path: path, log: s.log, ctx: ctx, cancel: cancel,
		sessions: map[*session]struct{}{}, owners: map[string]*session{}}
	srv.wg.Add(1)
	go srv.accept()
	return srv, nil
}

// Path is the socket's path.
func (s *Server) Path() string { return s.path }

// Close stops serving, ends every session and waits for them. It is
// idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	sessions := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()
	s.cancel()
	err := s.ln.Close()
	for _, ss := range sessions {
		ss.m.close(errors.New("node stopping"))
	}
	s.wg.Wait()
	return err
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			return
		}
		ctx, cancel := context.WithCancel(s.ctx)
		ss := &session{srv: s, services: map[string]bool{}, ctx: ctx, cancel: cancel}
		ss.m = newMux(c, ss.handle)
		ss.m.broken = func(err error) {
			ss.m.write(frame{typ: frameError, payload: errorPayload(CodeMalformed, err.Error())})
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			cancel()
			c.Close()
			return
		}
		s.sessions[ss] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			ss.serve()
		}()
	}
}

// session is one plugin's connection.
type session struct {
	srv    *Server
	m      *mux
	ctx    context.Context // ends with the session
	cancel context.CancelFunc

	mu       sync.Mutex
	grant    *Grant          // guarded by mu; nil before HELLO
	services map[string]bool // guarded by mu
	next     uint32          // guarded by mu; next incoming stream's number
	wg       sync.WaitGroup  // the session's requests and bridges
}

func (ss *session) name() string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.grant == nil {
		return "(unauthenticated)"
	}
	return ss.grant.Name
}

// serve runs the session until the plugin leaves or breaks the protocol,
// then undoes its registrations and streams.
func (ss *session) serve() {
	timer := time.AfterFunc(helloTimeout, func() {
		ss.mu.Lock()
		authed := ss.grant != nil
		ss.mu.Unlock()
		if !authed {
			ss.fatal(CodeAuth, "no HELLO in time")
		}
	})
	err := ss.m.run()
	timer.Stop()
	ss.cancel()
	ss.srv.log.Debugw("plugin session ended", "plugin", ss.name(), "error", err)
	ss.mu.Lock()
	services := ss.services
	ss.services = map[string]bool{}
	ss.mu.Unlock()
	for svc := range services {
		ss.srv.unregister(ss, svc)
	}
	ss.wg.Wait()
	ss.srv.mu.Lock()
	delete(ss.srv.sessions, ss)
	ss.srv.mu.Unlock()
}

// fatal tells the plugin why, and ends the session.
func (ss *session) fatal(code byte, msg string) error {
	ss.m.write(frame{typ: frameError, payload: errorPayload(code, msg)})
	err := &Error{Code: code, Message: msg}
	ss.m.close(err)
	return err
}

func (ss *session) reply(id uint32, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		ss.fail(id, CodeFailed, err.Error())
		return
	}
	ss.m.write(frame{typ: frameResult, id: id, payload: b})
}

func (ss *session) fail(id uint32, code byte, msg string) {
	ss.m.write(frame{typ: frameError, id: id, payload: errorPayload(code, msg)})
}

// handle takes a control frame. An error ends the session.
func (ss *session) handle(f frame) error {
	ss.mu.Lock()
	g := ss.grant
	ss.mu.Unlock()
	if g == nil {
		return ss.hello(f)
	}
	if f.id >= nodeStreams {
		return ss.fatal(CodeMalformed, fmt.Sprintf("frame type %#x with the node's ID %d", f.typ, f.id))
	}
	switch f.typ {
	case frameRegister:
		ss.register(f.id, string(f.payload), g)
	case frameUnregister:
		svc := string(f.payload)
		ss.mu.Lock()
		had := ss.services[svc]
		delete(ss.services, svc)
		ss.mu.Unlock()
		if !had {
			ss.fail(f.id, CodeBadRequest, "not registered: "+svc)
			return nil
		}
		ss.srv.unregister(ss, svc)
		ss.reply(f.id, struct{}{})
	case frameOpen:
		return ss.open(f, g)
	case frameLookup, frameFind, frameAdvertise:
		ss.request(f)
	default:
		return ss.fatal(CodeMalformed, fmt.Sprintf("frame type %#x from a plugin", f.typ))
	}
	return nil
}

func (ss *session) hello(f frame) error {
	if f.typ != frameHello || len(f.payload) < 1 {
		return ss.fatal(CodeAuth, "the first frame must be HELLO")
	}
	if f.payload[0] != Version {
		return ss.fatal(CodeMalformed, fmt.Sprintf("protocol version %d, this node speaks %d", f.payload[0], Version))
	}
	g, err := ss.srv.cfg.find(f.payload[1:])
	if err != nil {
		return ss.fatal(CodeAuth, "wrong token")
	}
	ss.mu.Lock()
	ss.grant = g
	ss.mu.Unlock()
	ss.srv.log.Debugw("plugin connected", "plugin", g.Name)
	return ss.m.write(frame{typ: frameWelcome, payload: []byte(ss.srv.node.ID().String())})
}

func (ss *session) register(id uint32, svc string, g *Grant) {
	if err := rendezvous.CheckService(svc); err != nil {
		ss.fail(id, CodeBadRequest, err.Error())
		return
	}
	if !grants(g.Register, svc) {
		ss.fail(id, CodeNotGranted, fmt.Sprintf("plugin %s may not register %s", g.Name, svc))
		return
	}
	if err := ss.srv.register(ss, svc); err != nil {
		ss.fail(id, CodeTaken, err.Error())
		return
	}
	ss.mu.Lock()
	ss.services[svc] = true
	ss.mu.Unlock()
	ss.reply(id, struct{}{})
}

// register has the node hand streams to svc to ss.
func (s *Server) register(ss *session, svc string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.owners[svc] != nil {
		return fmt.Errorf("%s is registered by another plugin", svc)
	}
	if err := s.node.Handle(svc, func(st *rendezvous.Stream) { ss.incoming(st) }); err != nil {
		return err
	}
	s.owners[svc] = ss
	return nil
}

func (s *Server) unregister(ss *session, svc string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.owners[svc] == ss {
		delete(s.owners, svc)
		s.node.Unhandle(svc)
	}
}

// incoming hands a peer's stream to the plugin.
func (ss *session) incoming(st *rendezvous.Stream) {
	ss.mu.Lock()
	ss.next++
	id := nodeStreams | ss.next
	ss.mu.Unlock()
	info := StreamInfo{Peer: st.Peer().String(), Service: st.Service(), Relayed: st.Relayed()}
	ms, err := ss.m.add(id, info)
	if err != nil {
		st.Reset()
		return
	}
	b, _ := json.Marshal(info)
	if ss.m.write(frame{typ: frameIncoming, id: id, payload: b}) != nil {
		st.Reset()
		return
	}
	ss.bridge(ms, st) // on the node's handler goroutine
}

// parseOpen reads an OPEN payload: the peer's ID (as text, after a
// 1-byte length), then the service. A payload that breaks the format
// wraps ErrMalformed; a bad peer ID or service name does not.
func parseOpen(payload []byte) (peer.ID, string, error) {
	pid, rest, err := field(payload)
	if err != nil {
		return "", "", fmt.Errorf("OPEN: %w", err)
	}
	p, err := peer.Decode(string(pid))
	if err != nil {
		return "", "", fmt.Errorf("bad peer ID: %v", err)
	}
	svc := string(rest)
	if err := rendezvous.CheckService(svc); err != nil {
		return "", "", err
	}
	return p, svc, nil
}

func (ss *session) open(f frame, g *Grant) error {
	p, svc, err := parseOpen(f.payload)
	switch {
	case errors.Is(err, ErrMalformed):
		return ss.fatal(CodeMalformed, err.Error())
	case err != nil:
		ss.fail(f.id, CodeBadRequest, err.Error())
		return nil
	case !grants(g.Open, svc):
		ss.fail(f.id, CodeNotGranted, fmt.Sprintf("plugin %s may not open %s", g.Name, svc))
		return nil
	}
	ms, err := ss.m.add(f.id, StreamInfo{Peer: p.String(), Service: svc})
	if err != nil {
		ss.fail(f.id, CodeBadRequest, err.Error())
		return nil
	}
	ss.goRequest(func(ctx context.Context) {
		st, err := ss.srv.node.Open(ctx, p, svc)
		if err != nil {
			ss.m.remove(f.id)
			code := byte(CodeFailed)
			if errors.Is(err, rendezvous.ErrNoService) || errors.Is(err, dht.ErrNotFound) {
				code = CodeNotFound
			}
			ss.fail(f.id, code, err.Error())
			return
		}
		ms.info.Relayed = st.Relayed()
		b, _ := json.Marshal(ms.info)
		if ss.m.write(frame{typ: frameOpened, id: f.id, payload: b}) != nil {
			st.Reset()
			return
		}
		ss.bridge(ms, st)
	})
	return nil
}

// goRequest runs f on a goroutine of the session, with a context that
// ends with the session or after requestTimeout.
func (ss *session) goRequest(f func(ctx context.Context)) {
	ss.wg.Add(1)
	go func() {
		defer ss.wg.Done()
		ctx, cancel := context.WithTimeout(ss.ctx, requestTimeout)
		defer cancel()
		f(ctx)
	}()
}

// bridge carries a plugin's stream to a peer's and back until both
// sides closed, or either failed.
func (ss *session) bridge(ms *Stream, st *rendezvous.Stream) {
	var wg sync.WaitGroup
	var once sync.Once
	abort := func() {
		once.Do(func() {
			ms.Reset()
			st.Reset()
		})
	}
	wg.Go(func() { // peer to plugin
		if _, err := io.Copy(ms, st); err != nil {
			abort()
			return
		}
		ms.CloseWrite()
	})
	wg.Go(func() { // plugin to peer
		if _, err := io.Copy(st, ms); err != nil {
			abort()
			return
		}
		st.CloseWrite()
	})
	wg.Wait()
	ms.Close()
	st.Close()
}

// request serves LOOKUP, FIND and ADVERTISE.
func (ss *session) request(f frame) {
	ss.goRequest(func(ctx context.Context) {
		switch f.typ {
		case frameLookup:
			p, err := peer.Decode(string(f.payload))
			if err != nil {
				ss.fail(f.id, CodeBadRequest, "bad peer ID: "+err.Error())
				return
			}
			r, err := ss.srv.node.Lookup(ctx, p)
			if err != nil {
				ss.fail(f.id, lookupCode(err), err.Error())
				return
			}
			ss.reply(f.id, recordOf(r))
		case frameFind:
			if len(f.payload) < 2 {
				ss.fail(f.id, CodeBadRequest, "FIND: no limit")
				return
			}
			limit := int(binary.BigEndian.Uint16(f.payload))
			rs, err := ss.srv.node.FindPeers(ctx, string(f.payload[2:]), limit)
			if err != nil {
				ss.fail(f.id, lookupCode(err), err.Error())
				return
			}
			out := make([]Record, 0, len(rs))
			for _, r := range rs {
				out = append(out, recordOf(r))
			}
			ss.reply(f.id, out)
		case frameAdvertise:
			if err := ss.srv.node.Advertise(ctx, string(f.payload)); err != nil {
				ss.fail(f.id, CodeFailed, err.Error())
				return
			}
			ss.reply(f.id, struct{}{})
		}
	})
}

func lookupCode(err error) byte {
	if errors.Is(err, dht.ErrNotFound) {
		return CodeNotFound
	}
	return CodeFailed
}

// Record is a peer's verified address record, as RESULT frames carry it.
type Record struct {
	PeerID     string    `json:"peer_id"`
	Seq        uint64    `json:"seq"`
	Expires    time.Time `json:"expires"`
	Addrs      []string  `json:"addrs"`
	RelayAddrs []string  `json:"relay_addrs"`
	// Reachability is "public", "private" or "unknown".
	Reachability string `json:"reachability"`
}

func recordOf(r *dht.Record) Record {
	out := Record{PeerID: r.PeerID.String(), Seq: r.Seq, Expires: r.Expires.UTC(),
		Reachability: r.NAT.Reachability.String(), Addrs: []string{}, RelayAddrs: []string{}}
	for _, a := range r.Addrs {
		out.Addrs = append(out.Addrs, a.String())
	}
	for _, a := range r.RelayAddrs {
		out.RelayAddrs = append(out.RelayAddrs, a.String())
	}
	return out
}
