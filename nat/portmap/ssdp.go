package portmap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"
)

// maxSSDP bounds an SSDP answer.
const maxSSDP = 2048

// The device types searched for. IGDv2 devices also answer searches for
// version 1, but some answer only their own.
var ssdpTargets = []string{
	"urn:schemas-upnp-org:device:InternetGatewayDevice:1",
	"urn:schemas-upnp-org:device:InternetGatewayDevice:2",
}

// ssdpResponse is the part of an SSDP search answer the Client uses.
type ssdpResponse struct {
	location string // LOCATION: the device description's URL
	st       string // ST: the search target answered
	usn      string // USN: the unique service name
}

// encodeSSDPSearch returns an M-SEARCH for target, addressed to host.
func encodeSSDPSearch(host, target string) []byte {
	return fmt.Appendf(nil, "M-SEARCH * HTTP/1.1\r\nHOST: %s\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: %s\r\n\r\n", host, target)
}

// decodeSSDPResponse decodes an answer to an M-SEARCH: an HTTP/1.x 200
// status line and headers, names case-insensitive. LOCATION is required.
func decodeSSDPResponse(b []byte) (ssdpResponse, error) {
	if len(b) > maxSSDP {
		return ssdpResponse{}, malformed(UPnP, "SSDP answer of %d bytes", len(b))
	}
	lines := strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n")
	status := strings.Fields(lines[0])
	if len(status) < 2 || !strings.HasPrefix(status[0], "HTTP/1.") {
		return ssdpResponse{}, malformed(UPnP, "SSDP status line %q", trim(lines[0]))
	}
	if status[1] != "200" {
		return ssdpResponse{}, malformed(UPnP, "SSDP status %q", trim(status[1]))
	}
	var r ssdpResponse
	for _, line := range lines[1:] {
		if line == "" {
			break
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return ssdpResponse{}, malformed(UPnP, "SSDP header line %q", trim(line))
		}
		value = strings.TrimSpace(value)
		switch strings.ToUpper(strings.TrimSpace(name)) {
		case "LOCATION":
			r.location = value
		case "ST":
			r.st = value
		case "USN":
			r.usn = value
		}
	}
	if r.location == "" {
		return ssdpResponse{}, malformed(UPnP, "SSDP answer without LOCATION")
	}
	return r, nil
}

// trim shortens s for an error message.
func trim(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// gatewayURL parses raw, which must be an http URL on the gateway's address,
// resolved against base if base is not nil.
func gatewayURL(base *url.URL, raw string, gw netip.Addr) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, malformed(UPnP, "URL %q: %v", trim(raw), err)
	}
	if base != nil {
		u = base.ResolveReference(u)
	}
	if u.Scheme != "http" {
		return nil, malformed(UPnP, "URL %q is not http", trim(raw))
	}
	host, err := netip.ParseAddr(u.Hostname())
	if err != nil || host.Unmap() != gw {
		return nil, malformed(UPnP, "URL %q is not on the gateway %v", trim(raw), gw)
	}
	return u, nil
}

// discover searches for the gateway's IGD with SSDP and reads its device
// description. Only answers from the gateway's address count.
func (c *Client) discover(ctx context.Context, gw netip.Addr) (*igd, error) {
	pc, err := c.s.listenPacket(ctx, "udp4", ":0")
	if err != nil {
		return nil, fmt.Errorf("portmap: upnp: %w", err)
	}
	defer pc.Close()
	stop := context.AfterFunc(ctx, func() { pc.SetReadDeadline(time.Unix(1, 0)) }) //nolint:errcheck // closing anyway
	defer stop()

	unicast := netip.AddrPortFrom(gw, c.s.ssdpPort)
	var searches []func() error
	for _, target := range ssdpTargets {
		if c.s.ssdpGroup.IsValid() {
			msg := encodeSSDPSearch(c.s.ssdpGroup.String(), target)
			dst := net.UDPAddrFromAddrPort(c.s.ssdpGroup)
			searches = append(searches, func() error { _, err := pc.WriteTo(msg, dst); return err })
		}
		msg := encodeSSDPSearch(unicast.String(), target)
		dst := net.UDPAddrFromAddrPort(unicast)
		searches = append(searches, func() error { _, err := pc.WriteTo(msg, dst); return err })
	}

	buf := make([]byte, maxSSDP+1)
	tried := map[string]bool{}
	var last error
	wait := firstRetransmit
	for {
		var sent bool
		var sendErr error
		for _, search := range searches {
			if err := search(); err != nil {
				sendErr = err // the multicast route may be missing; unicast may still work
			} else {
				sent = true
			}
		}
		if !sent {
			return nil, fmt.Errorf("portmap: upnp: search: %w", sendErr)
		}
		deadline := time.Now().Add(wait)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		pc.SetReadDeadline(deadline) //nolint:errcheck // a failure shows as a read error
		for ctx.Err() == nil {
			n, from, err := pc.ReadFrom(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("portmap: upnp: %w", err)
			}
			if ap, ok := addrPortOf(from); !ok || ap.Addr() != gw {
				continue
			}
			r, err := decodeSSDPResponse(buf[:n])
			if err != nil {
				last = err
				continue
			}
			if !strings.Contains(r.st, "InternetGatewayDevice") || tried[r.location] {
				continue
			}
			tried[r.location] = true
			d, err := c.describe(ctx, gw, r.location)
			if err != nil {
				last = err
				continue
			}
			return d, nil
		}
		if ctx.Err() != nil {
			if last != nil {
				return nil, last
			}
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, fmt.Errorf("portmap: upnp: no IGD answered: %w", ErrNotSupported)
			}
			return nil, ctx.Err()
		}
		wait *= 2
	}
}

func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	if u, ok := a.(*net.UDPAddr); ok {
		ap := u.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
	}
	ap, err := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), err == nil
}
