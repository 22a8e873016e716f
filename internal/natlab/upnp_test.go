package natlab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// NAT-PMP (RFC 6886) messages, big endian:
//
//	public address request:  version 0 | opcode 0
//	public address response: version 0 | opcode 128 | result (2) | epoch (4) | address (4)
//	map request:  version 0 | opcode 1 (UDP) or 2 (TCP) | reserved (2) | internal port (2) | suggested external port (2) | lifetime (4)
//	map response: version 0 | opcode 128+op | result (2) | epoch (4) | internal port (2) | external port (2) | lifetime (4)

// natpmp sends one request to the gateway's NAT-PMP port and returns the
// response, retrying as RFC 6886 §3.1 says (here: 4 tries, 250 ms apart).
func natpmp(c *net.UDPConn, gw netip.Addr, req []byte) ([]byte, error) {
	dst := netip.AddrPortFrom(gw, NATPMPPort)
	buf := make([]byte, 64)
	for range 4 {
		if _, err := c.WriteToUDPAddrPort(req, dst); err != nil {
			return nil, err
		}
		c.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return nil, err
			}
			if from != dst || n < 8 || buf[1] != 128+req[1] {
				continue
			}
			if rc := binary.BigEndian.Uint16(buf[2:4]); rc != 0 {
				return nil, fmt.Errorf("NAT-PMP result code %d", rc)
			}
			return buf[:n], nil
		}
	}
	return nil, errors.New("no NAT-PMP answer")
}

func natpmpExternalAddr(c *net.UDPConn, gw netip.Addr) (netip.Addr, error) {
	resp, err := natpmp(c, gw, []byte{0, 0})
	if err != nil {
		return netip.Addr{}, err
	}
	if len(resp) < 12 {
		return netip.Addr{}, fmt.Errorf("short response %x", resp)
	}
	return netip.AddrFrom4([4]byte(resp[8:12])), nil
}

func natpmpMapUDP(c *net.UDPConn, gw netip.Addr, internal, suggested uint16, lifetime time.Duration) (external uint16, granted time.Duration, err error) {
	req := make([]byte, 12)
	req[1] = 1
	binary.BigEndian.PutUint16(req[4:6], internal)
	binary.BigEndian.PutUint16(req[6:8], suggested)
	binary.BigEndian.PutUint32(req[8:12], uint32(lifetime/time.Second))
	resp, err := natpmp(c, gw, req)
	if err != nil {
		return 0, 0, err
	}
	if len(resp) < 16 {
		return 0, 0, fmt.Errorf("short response %x", resp)
	}
	if got := binary.BigEndian.Uint16(resp[8:10]); got != internal {
		return 0, 0, fmt.Errorf("response for internal port %d, asked %d", got, internal)
	}
	return binary.BigEndian.Uint16(resp[10:12]), time.Duration(binary.BigEndian.Uint32(resp[12:16])) * time.Second, nil
}

// TestUPnPNATPMP obtains a UDP mapping from the router's real miniupnpd
// with NAT-PMP and checks that an unsolicited packet from a public host to
// the mapped port reaches the host, where before the mapping it was dropped.
func TestUPnPNATPMP(t *testing.T) {
	t.Parallel()
	l := newLab(t, Spec{
		Routers: []RouterSpec{{Name: "r", Kind: UPnP}},
		Hosts:   []HostSpec{{Name: "h", Router: "r"}, {Name: "s1"}},
	})
	h, r, s1 := l.Host("h"), l.Router("r"), l.Host("s1")

	app, err := h.ListenUDP(netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	internal := netip.MustParseAddrPort(app.LocalAddr().String()).Port()
	ctl, err := h.ListenUDP(netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()

	ext, err := natpmpExternalAddr(ctl, h.Gateway())
	if err != nil {
		t.Fatal(err)
	}
	if ext != r.WANAddr() {
		t.Errorf("NAT-PMP external address %v, want %v", ext, r.WANAddr())
	}

	// The port we will ask for: before the mapping, nothing gets in.
	suggested := internal
	target := netip.AddrPortFrom(r.WANAddr(), suggested)
	sender, err := s1.ListenUDP(netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	if _, err := sender.WriteToUDPAddrPort([]byte("before"), target); err != nil {
		t.Fatal(err)
	}
	if got := collect(t, app, 300*time.Millisecond); got["before"] {
		t.Fatal("unsolicited packet got in before any mapping")
	}

	port, life, err := natpmpMapUDP(ctl, h.Gateway(), internal, suggested, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("NAT-PMP mapped %v:%d -> %v:%d for %v", h.Addr(), internal, ext, port, life)
	if life <= 0 {
		t.Errorf("granted lifetime %v", life)
	}
	if _, err := sender.WriteToUDPAddrPort([]byte("after"), netip.AddrPortFrom(r.WANAddr(), port)); err != nil {
		t.Fatal(err)
	}
	if got := collect(t, app, 500*time.Millisecond); !got["after"] {
		t.Fatal("unsolicited packet to the mapped port did not reach the host")
	}
}

// TestUPnPBehindCGNAT puts a UPnP router behind a carrier NAT: miniupnpd's
// STUN test sees the carrier filtering and turns port forwarding off, so a
// NAT-PMP mapping is refused (or, if granted, useless), as on a real double
// NAT.
func TestUPnPBehindCGNAT(t *testing.T) {
	t.Parallel()
	l := newLab(t, Spec{
		Routers: []RouterSpec{{Name: "isp", Kind: CGNAT}, {Name: "u", Kind: UPnP, Behind: "isp"}},
		Hosts:   []HostSpec{{Name: "h", Router: "u"}, {Name: "s1"}},
	})
	h, isp := l.Host("h"), l.Router("isp")
	app, err := h.ListenUDP(netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	internal := netip.MustParseAddrPort(app.LocalAddr().String()).Port()
	port, _, err := natpmpMapUDP(app, h.Gateway(), internal, internal, time.Hour)
	t.Logf("NAT-PMP behind a CGNAT: port %d, %v", port, err)
	if err != nil {
		return // refused: what a double NAT should say
	}
	sender, err := l.Host("s1").ListenUDP(netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	if _, err := sender.WriteToUDPAddrPort([]byte("in"), netip.AddrPortFrom(isp.WANAddr(), port)); err != nil {
		t.Fatal(err)
	}
	if await(t, app, "in", 500*time.Millisecond) {
		t.Error("an unsolicited packet crossed the carrier NAT")
	}
}
