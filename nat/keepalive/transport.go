package keepalive

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	logging "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/transport"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/reuseport"
	"github.com/libp2p/go-libp2p/p2p/transport/tcpreuse"
	ma "github.com/multiformats/go-multiaddr"
	mafmt "github.com/multiformats/go-multiaddr-fmt"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Defaults of the kernel keep-alive of a Transport's sockets.
const (
	// DefaultIdle is how long a connection that is not standing may idle
	// before the kernel probes it: the kernel's own default. It bounds how
	// long a dead peer goes unnoticed on a quiet connection.
	DefaultIdle = 2 * time.Hour
	// DefaultInterval is the time between unanswered probes.
	DefaultInterval = 15 * time.Second
	// DefaultCount is how many unanswered probes close the connection.
	DefaultCount = 4
	// MinIdle is the shortest idle time SetIdle accepts.
	MinIdle = 5 * time.Second
)

// ErrUnknownConn is returned by SetIdle for a connection that is not a TCP
// connection of this transport (a QUIC or relayed one, or a closed one).
var ErrUnknownConn = errors.New("keepalive: not a TCP connection of this transport")

const connectTimeout = 5 * time.Second

// Muxer returns libp2p's yamux muxer without yamux's own keep-alive, and
// measuring the round-trip time (for its window tuning) when a session
// starts and then only daily, not every 30 s: each measurement is a ping
// exchange that wakes an idle connection. Use it with Transport: the
// kernel's probes keep TCP connections alive instead.
func Muxer() *yamux.Transport {
	m := *yamux.DefaultTransport
	m.EnableKeepAlive = false
	m.MeasureRTTInterval = 24 * time.Hour
	return &m
}

type settings struct {
	idle, interval time.Duration
	count          int
	reuseport      bool
	log            *logging.ZapEventLogger
}

// Option configures a Transport.
type Option func(*settings) error

// WithDefaultIdle sets the idle time of connections SetIdle was not called
// for. Default DefaultIdle.
func WithDefaultIdle(d time.Duration) Option {
	return func(s *settings) error {
		if d < MinIdle {
			return fmt.Errorf("keepalive: idle %v below %v", d, MinIdle)
		}
		s.idle = d
		return nil
	}
}

// WithProbes sets the time between unanswered probes and how many close the
// connection. Default DefaultInterval and DefaultCount.
func WithProbes(interval time.Duration, count int) Option {
	return func(s *settings) error {
		if interval < time.Second || count < 1 {
			return fmt.Errorf("keepalive: bad probe interval %v or count %d", interval, count)
		}
		s.interval, s.count = interval, count
		return nil
	}
}

// WithoutReuseport makes dials use ephemeral ports instead of the listen
// port.
func WithoutReuseport() Option { return func(s *settings) error { s.reuseport = false; return nil } }

// WithLogger sets the logger. Default: the "rendezvous/keepalive" logger.
func WithLogger(l *logging.ZapEventLogger) Option {
	return func(s *settings) error { s.log = l; return nil }
}

// Transport is a libp2p TCP transport whose sockets' kernel keep-alive it
// controls. It speaks what libp2p's TCP transport speaks, dials from its
// listen port where the system allows (as libp2p does, for NAT mappings
// that match the listen port and for TCP hole punching), and tells
// simultaneous-open dials apart the same way.
type Transport struct {
	upgrader transport.Upgrader
	rcmgr    network.ResourceManager
	reuse    reuseport.Transport
	s        settings

	mu    sync.Mutex
	socks map[sockKey]*socket // guarded by mu
}

var _ transport.Transport = (*Transport)(nil)

type sockKey struct{ local, remote netip.AddrPort }

type socket struct {
	conn interface {
		SetKeepAliveConfig(net.KeepAliveConfig) error
	}
	raw   syscall.RawConn // nil when the connection does not expose it
	idle  time.Duration   // guarded by Transport.mu
	count probeCount      // guarded by Transport.mu
}

// New returns a Transport. upgrader and rcmgr are libp2p's; use Constructor
// to let libp2p supply them.
func New(upgrader transport.Upgrader, rcmgr network.ResourceManager, opts ...Option) (*Transport, error) {
	s := settings{idle: DefaultIdle, interval: DefaultInterval, count: DefaultCount, reuseport: true}
	for _, o := range opts {
		if err := o(&s); err != nil {
			return nil, err
		}
	}
	if s.log == nil {
		s.log = logging.Logger("rendezvous/keepalive")
	}
	if rcmgr == nil {
		rcmgr = &network.NullResourceManager{}
	}
	s.reuseport = s.reuseport && tcpreuse.ReuseportIsAvailable()
	return &Transport{upgrader: upgrader, rcmgr: rcmgr, s: s, socks: map[sockKey]*socket{}}, nil
}

// Constructor returns a constructor for libp2p.Transport. Each host built
// with it gets its own Transport, handed to got (which may be nil).
func Constructor(got func(*Transport), opts ...Option) func(transport.Upgrader, network.ResourceManager) (*Transport, error) {
	return func(u transport.Upgrader, rcmgr network.ResourceManager) (*Transport, error) {
		t, err := New(u, rcmgr, opts...)
		if err == nil && got != nil {
			got(t)
		}
		return t, err
	}
}

var dialMatcher = mafmt.And(mafmt.IP, mafmt.Base(ma.P_TCP))

// CanDial reports whether addr is a plain TCP address.
func (t *Transport) CanDial(addr ma.Multiaddr) bool { return dialMatcher.Matches(addr) }

// Protocols returns the TCP protocol code.
func (t *Transport) Protocols() []int { return []int{ma.P_TCP} }

// Proxy returns false.
func (t *Transport) Proxy() bool { return false }

func (t *Transport) String() string { return "TCP" }

// Dial dials raddr and upgrades the connection to a libp2p connection with p.
func (t *Transport) Dial(ctx context.Context, raddr ma.Multiaddr, p peer.ID) (transport.CapableConn, error) {
	scope, err := t.rcmgr.OpenConnection(network.DirOutbound, true, raddr)
	if err != nil {
		return nil, err
	}
	c, err := t.dial(ctx, raddr, p, scope)
	if err != nil {
		scope.Done()
		return nil, err
	}
	return c, nil
}

func (t *Transport) dial(ctx context.Context, raddr ma.Multiaddr, p peer.ID, scope network.ConnManagementScope) (transport.CapableConn, error) {
	if err := scope.SetPeer(p); err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	var (
		c   manet.Conn
		err error
	)
	if t.s.reuseport {
		c, err = t.reuse.DialContext(dctx, raddr)
	} else {
		var d manet.Dialer
		c, err = d.DialContext(dctx, raddr)
	}
	if err != nil {
		return nil, err
	}
	// Reset instead of FIN, so the listen port's 5-tuple is free again at
	// once for the next dial (libp2p does the same).
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		_ = l.SetLinger(0)
	}
	tc := t.track(c)
	dir := network.DirOutbound
	if ok, isClient, _ := network.GetSimultaneousConnect(ctx); ok && !isClient {
		dir = network.DirInbound
	}
	return t.upgrader.Upgrade(ctx, t, tc, dir, p, scope)
}

// Listen listens on laddr.
func (t *Transport) Listen(laddr ma.Multiaddr) (transport.Listener, error) {
	var (
		l   manet.Listener
		err error
	)
	if t.s.reuseport {
		l, err = t.reuse.Listen(laddr)
	} else {
		l, err = manet.Listen(laddr)
	}
	if err != nil {
		return nil, err
	}
	return t.upgrader.UpgradeGatedMaListener(t, t.upgrader.GateMaListener(&listener{Listener: l, t: t})), nil
}

type listener struct {
	manet.Listener
	t *Transport
}

func (l *listener) Accept() (manet.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.t.track(c), nil
}

// track sets the socket's default keep-alive and remembers it for SetIdle
// until the connection closes.
func (t *Transport) track(c manet.Conn) manet.Conn {
	ka, ok := c.(interface {
		SetKeepAliveConfig(net.KeepAliveConfig) error
	})
	key, kok := keyOf(c.LocalAddr(), c.RemoteAddr())
	if !ok || !kok {
		return c
	}
	if err := ka.SetKeepAliveConfig(t.config(t.s.idle)); err != nil {
		t.s.log.Debugw("keep-alive", "error", err)
	}
	sock := &socket{conn: ka, idle: t.s.idle}
	if sc, ok := c.(interface {
		SyscallConn() (syscall.RawConn, error)
	}); ok {
		sock.raw, _ = sc.SyscallConn()
	}
	t.mu.Lock()
	t.socks[key] = sock
	t.mu.Unlock()
	return &trackedConn{Conn: c, t: t, key: key}
}

// config is the kernel keep-alive of a socket with the given idle time. The
// kernel looks at an idle socket again only an interval after each probe,
// answered or not, so the interval is kept within the idle time: otherwise
// probes would come every interval and outlast a short mapping.
func (t *Transport) config(idle time.Duration) net.KeepAliveConfig {
	return net.KeepAliveConfig{Enable: true, Idle: idle, Interval: t.interval(idle), Count: t.s.count}
}

// interval is the time between unanswered probes of a socket with the
// given idle time.
func (t *Transport) interval(idle time.Duration) time.Duration { return min(t.s.interval, idle) }

// state reads s's TCP state, and whether the system told it.
func (s *socket) state() (tcpState, bool) {
	if s.raw == nil {
		return tcpState{}, false
	}
	st, err := readTCPState(s.raw, time.Now())
	return st, err == nil
}

type trackedConn struct {
	manet.Conn
	t    *Transport
	key  sockKey
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.t.mu.Lock()
		delete(c.t.socks, c.key)
		c.t.mu.Unlock()
	})
	return c.Conn.Close()
}

func keyOf(local, remote net.Addr) (sockKey, bool) {
	l, lok := local.(*net.TCPAddr)
	r, rok := remote.(*net.TCPAddr)
	if !lok || !rok {
		return sockKey{}, false
	}
	return sockKey{local: unmap(l.AddrPort()), remote: unmap(r.AddrPort())}, true
}

func unmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// SetIdle sets how long the TCP connection c may idle before the kernel
// sends a keep-alive probe; 0 restores the default. It fails with
// ErrUnknownConn when c is not a live TCP connection of this transport.
func (t *Transport) SetIdle(c network.Conn, idle time.Duration) error {
	if idle == 0 {
		idle = t.s.idle
	}
	if idle < MinIdle {
		return fmt.Errorf("keepalive: idle %v below %v", idle, MinIdle)
	}
	key, ok := connKey(c)
	if !ok {
		return ErrUnknownConn
	}
	t.mu.Lock()
	s := t.socks[key]
	t.mu.Unlock()
	if s == nil {
		return ErrUnknownConn
	}
	if err := s.conn.SetKeepAliveConfig(t.config(idle)); err != nil {
		return fmt.Errorf("keepalive: %w", err)
	}
	st, ok := s.state()
	t.mu.Lock()
	if ok {
		s.count.observe(st, s.idle, t.interval(s.idle)) // what the old idle time sent
		s.count.restart(st)
	}
	s.idle = idle
	t.mu.Unlock()
	return nil
}

// KeepAlives returns how many keep-alive probes the kernel has sent on the
// TCP connection c since it was made, as its TCP state shows (Linux's
// TCP_INFO; see probeCount), and whether it could tell: false when c is
// not a live TCP connection of this transport or the system does not say.
// The count is exact while probes are answered and the idle time changes
// only through SetIdle; it needs no regular calls.
func (t *Transport) KeepAlives(c network.Conn) (uint64, bool) {
	key, ok := connKey(c)
	if !ok {
		return 0, false
	}
	t.mu.Lock()
	s := t.socks[key]
	t.mu.Unlock()
	if s == nil {
		return 0, false
	}
	st, ok := s.state()
	if !ok {
		return 0, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return s.count.observe(st, s.idle, t.interval(s.idle)), true
}

// Idle returns the keep-alive idle time of c, and whether c is a live TCP
// connection of this transport.
func (t *Transport) Idle(c network.Conn) (time.Duration, bool) {
	key, ok := connKey(c)
	if !ok {
		return 0, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := t.socks[key]; s != nil {
		return s.idle, true
	}
	return 0, false
}

func connKey(c network.Conn) (sockKey, bool) {
	if c == nil || c.Stat().Limited {
		return sockKey{}, false
	}
	l, err := manet.ToNetAddr(c.LocalMultiaddr())
	if err != nil {
		return sockKey{}, false
	}
	r, err := manet.ToNetAddr(c.RemoteMultiaddr())
	if err != nil {
		return sockKey{}, false
	}
	return keyOf(l, r)
}

// IsTCP reports whether c runs over plain TCP (not QUIC, not relayed).
func IsTCP(c network.Conn) bool {
	if c == nil || c.Stat().Limited {
		return false
	}
	return dialMatcher.Matches(c.RemoteMultiaddr())
}
