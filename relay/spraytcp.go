package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-reuseport"
	ma "github.com/multiformats/go-multiaddr"
)

// A spray punch over TCP, for peers that do not both speak QUIC, is the
// same birthday paradox with TCP's simultaneous open. The catcher dials
// the sprayer's TCP address from spraySockets sockets at once: each SYN
// opens a mapping at a random port of the catcher's NAT, and the
// sprayer's NAT drops it. The sprayer dials the catcher's IP address at
// random ports from its own listening port (as libp2p does, with
// SO_REUSEPORT), sprayRate dials a second, each given tcpProbeLife (less
// than the one second after which the kernel would send its SYN again),
// at most sprayProbes. A SYN that reaches one of the catcher's mappings
// meets a socket that is itself connecting to the sprayer: both ends open
// at once. The two ends then swap a spray packet carrying the punch's
// token, and hand the connection to libp2p through loopback: the catcher
// to its TCP listener, the sprayer by dialing a listener of its own that
// carries the connection on. The security handshake runs end to end over
// it, so each side still proves its peer ID.
const (
	tcpProbeLife = 800 * time.Millisecond
	// tcpGreeting bounds the swap of tokens on a connection a spray made.
	tcpGreeting = 2 * time.Second
)

// tcpListenAddr is the host's first IPv4 TCP listen address.
func tcpListenAddr(h host.Host) (netip.AddrPort, bool) {
	for _, a := range h.Network().ListenAddresses() {
		if len(a) < 2 || a[0].Code() != ma.P_IP4 || a[1].Code() != ma.P_TCP {
			continue
		}
		if ap, ok := addrPortOf(a[:2]); ok {
			return ap, true
		}
	}
	return netip.AddrPort{}, false
}

// loopbackIfUnspecified makes a listen address dialable from this host.
func loopbackIfUnspecified(ap netip.AddrPort) netip.AddrPort {
	if ap.Addr().IsUnspecified() {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), ap.Port())
	}
	return ap
}

// greet swaps the punch's token with the other end of c.
func greet(c net.Conn, token [8]byte) error {
	c.SetDeadline(time.Now().Add(tcpGreeting))
	defer c.SetDeadline(time.Time{})
	// Both ends write first: 13 bytes fit in any socket buffer.
	if _, err := c.Write(sprayPacket(sprayAnswer, token)); err != nil {
		return err
	}
	buf := make([]byte, sprayPacketLen)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if kind, ok := parseSprayPacket(buf, token); !ok || kind != sprayAnswer {
		return errors.New("relay: spray: a stranger's greeting")
	}
	return nil
}

// catchTCP dials dst from spraySockets sockets and waits up to sprayWait
// for one to open; that one is handed to the host's TCP listener. It
// returns once the dials started; release is called when they ended.
func (s *PunchService) catchTCP(token [8]byte, dst netip.AddrPort, release func()) error {
	listen, ok := tcpListenAddr(s.h)
	if !ok {
		release()
		return errors.New("relay: spray: no TCP listener")
	}
	listen = loopbackIfUnspecified(listen)
	ctx, cancel := context.WithTimeout(s.ctx, sprayWait)
	opened := make(chan net.Conn, spraySockets)
	var dials sync.WaitGroup
	for range spraySockets {
		dials.Add(1)
		if !s.goOwned(func() {
			defer dials.Done()
			var d net.Dialer
			if c, err := d.DialContext(ctx, "tcp4", dst.String()); err == nil {
				opened <- c
			}
		}) {
			dials.Done()
		}
	}
	done := func() {
		defer release()
		var won net.Conn
		select {
		case won = <-opened:
		case <-ctx.Done():
		}
		cancel()
		dials.Wait()
		close(opened)
		for c := range opened {
			c.Close()
		}
		hit := won != nil && greet(won, token) == nil
		s.observeSpray("catch", hit, 0)
		switch {
		case hit:
			s.spliceTCP(won, dst, func() (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(s.ctx, "tcp4", listen.String())
			})
		case won != nil:
			won.Close()
		}
	}
	if !s.goOwned(done) {
		cancel()
		done()
	}
	return nil
}

// sprayTCP dials ip at random ports from the host's TCP listening port
// until one opens and greets back, and returns it.
func (s *PunchService) sprayTCP(ctx context.Context, token [8]byte, ip netip.Addr) (net.Conn, netip.AddrPort, error) {
	local, ok := tcpListenAddr(s.h)
	if !ok {
		return nil, netip.AddrPort{}, errors.New("relay: spray: no TCP listener")
	}
	ctx, cancel := context.WithTimeout(ctx, sprayWait)
	defer cancel()
	opened := make(chan net.Conn, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	dial := func(to netip.AddrPort) {
		wg.Go(func() {
			dctx, dcancel := context.WithTimeout(ctx, tcpProbeLife)
			defer dcancel()
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(local), Control: reuseport.Control}
			c, err := d.DialContext(dctx, "tcp4", to.String())
			if err != nil {
				return
			}
			select {
			case opened <- c:
			default:
				c.Close()
			}
		})
	}
	tick := time.NewTicker(time.Second * sprayBatch / sprayRate)
	defer tick.Stop()
	for sent := 0; ; {
		if sent < sprayProbes {
			for range sprayBatch {
				dial(netip.AddrPortFrom(ip, uint16(s.sprayPorts[0]+rand.IntN(s.sprayPorts[1]-s.sprayPorts[0]+1))))
				sent++
			}
		}
		select {
		case c := <-opened:
			if err := greet(c, token); err != nil {
				// Some other program's port: the spray goes on.
				c.Close()
				continue
			}
			cancel()
			s.sprayed(sent, true)
			ap, _ := addrPortOf(remoteThinWaist(c))
			return c, ap, nil
		case <-ctx.Done():
			s.sprayed(sent, false)
			return nil, netip.AddrPort{}, fmt.Errorf("%w after %d dials: %w", ErrNoSprayAnswer, sent, ctx.Err())
		case <-tick.C:
		}
	}
}

// remoteThinWaist is c's remote address as /ip4/x/tcp/p.
func remoteThinWaist(c net.Conn) ma.Multiaddr {
	ta, ok := c.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return nil
	}
	return remoteAddr(true, ta.AddrPort())
}

// sprayDialTCP sprays ip over TCP and has the host dial p through the
// connection that opened.
func (s *PunchService) sprayDialTCP(ctx context.Context, token [8]byte, p peer.ID, ip netip.Addr) error {
	c, remote, err := s.sprayTCP(ctx, token, ip)
	if err != nil {
		return err
	}
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		c.Close()
		return err
	}
	inner := ln.Addr().(*net.TCPAddr).AddrPort()
	if !s.goOwned(func() {
		ln.SetDeadline(time.Now().Add(punchDialTimeout))
		in, err := ln.Accept()
		ln.Close()
		if err != nil {
			c.Close()
			return
		}
		s.spliceTCP(c, remote, func() (net.Conn, error) { return in, nil })
	}) {
		ln.Close()
		c.Close()
		return ErrPunchOff
	}
	return punchDial(ctx, s.h, p, []ma.Multiaddr{remoteAddr(true, inner)}, true)
}

// spliceTCP carries bytes between out, a connection a spray opened to
// remote, and the connection inner returns, until either closes or the
// service does. The host's connection through it names remote as its
// peer's address (Forwarded) while it lasts.
func (s *PunchService) spliceTCP(out net.Conn, remote netip.AddrPort, inner func() (net.Conn, error)) {
	if !s.startForwarding() {
		out.Close()
		return
	}
	defer s.doneForwarding()
	in, err := inner()
	if err != nil {
		out.Close()
		return
	}
	// The host's connection comes from, or goes to, in's local end.
	if ta, ok := in.LocalAddr().(*net.TCPAddr); ok {
		defer s.track(forwardKey(true, netip.AddrPortFrom(ta.AddrPort().Addr().Unmap(), ta.AddrPort().Port())), remoteAddr(true, remote))()
	}
	done := make(chan struct{})
	stop := sync.OnceFunc(func() {
		close(done)
		out.Close()
		in.Close()
	})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer stop()
		io.Copy(in, out)
	})
	wg.Go(func() {
		defer stop()
		io.Copy(out, in)
	})
	wg.Go(func() {
		select {
		case <-s.ctx.Done():
			stop()
		case <-done:
		}
	})
	wg.Wait()
}
