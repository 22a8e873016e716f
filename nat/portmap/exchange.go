package portmap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
)

// maxDatagram is PCP's maximum message size (RFC 6887 §7), which also
// bounds NAT-PMP answers.
const maxDatagram = 1100

// firstRetransmit is the wait before the first retransmission; it doubles
// after each (RFC 6886 §3.1).
const firstRetransmit = 250 * time.Millisecond

// errNoAnswer marks the failures that show nothing serves the gateway port:
// no answer at all, or an ICMP port unreachable.
var errNoAnswer = errors.New("no answer")

// dialGateway opens a connected UDP socket to the gateway's PCP and NAT-PMP
// port and returns it with the local address to announce.
func (c *Client) dialGateway(ctx context.Context, gw netip.Addr) (net.Conn, netip.Addr, error) {
	conn, err := c.s.dial(ctx, "udp4", netip.AddrPortFrom(gw, c.s.gatewayPort).String())
	if err != nil {
		return nil, netip.Addr{}, err
	}
	local, err := c.localAddr(conn)
	if err != nil {
		conn.Close()
		return nil, netip.Addr{}, err
	}
	return conn, local, nil
}

// localAddr returns the configured local address, or conn's.
func (c *Client) localAddr(conn net.Conn) (netip.Addr, error) {
	if c.s.localAddr.IsValid() {
		return c.s.localAddr, nil
	}
	ap, err := netip.ParseAddrPort(conn.LocalAddr().String())
	if err != nil || !ap.Addr().Unmap().Is4() || ap.Addr().IsUnspecified() {
		return netip.Addr{}, fmt.Errorf("portmap: local address %v is not usable, set one with WithLocalAddr", conn.LocalAddr())
	}
	return ap.Addr().Unmap(), nil
}

// handler looks at one datagram. done ends the exchange with err; a
// non-nil err without done is remembered and returned if nothing better
// arrives (a malformed answer), and (false, nil) ignores the datagram (an
// answer to another request).
type handler func(b []byte) (done bool, err error)

// exchange sends req on conn, retransmitting with doubling waits until ctx
// ends, and hands every datagram received to handle until it is done.
// Answers are bounded to maxDatagram bytes; longer ones are malformed.
func exchange(ctx context.Context, conn net.Conn, p Protocol, req []byte, handle handler) error {
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) }) //nolint:errcheck // closing anyway
	defer stop()
	buf := make([]byte, maxDatagram+1)
	var last error
	wait := firstRetransmit
	for {
		if _, err := conn.Write(req); err != nil {
			return gatewayError(p, err)
		}
		deadline := time.Now().Add(wait)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		conn.SetReadDeadline(deadline) //nolint:errcheck // a failure shows as a read error
		if ctx.Err() != nil {
			return exchangeEnd(ctx, p, last)
		}
		for {
			n, err := conn.Read(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return gatewayError(p, err)
			}
			if n > maxDatagram {
				last = malformed(p, "answer longer than %d bytes", maxDatagram)
				continue
			}
			done, err := handle(buf[:n])
			if done {
				return err
			}
			if err != nil {
				last = err
			}
		}
		if ctx.Err() != nil {
			return exchangeEnd(ctx, p, last)
		}
		wait *= 2
	}
}

// exchangeEnd is the error of an exchange whose context ended.
func exchangeEnd(ctx context.Context, p Protocol, last error) error {
	if last != nil {
		return last
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("portmap: %s: %w from the gateway: %w", p, errNoAnswer, ErrNotSupported)
	}
	return ctx.Err()
}

// gatewayError wraps a socket error; a refused port (ICMP port
// unreachable) means the protocol is not served.
func gatewayError(p Protocol, err error) error {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("portmap: %s: %w (%w): %w", p, errNoAnswer, err, ErrNotSupported)
	}
	return fmt.Errorf("portmap: %s: %w", p, err)
}
