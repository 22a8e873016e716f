package natlab

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
)

// The lab's STUN server answers RFC 5389 Binding requests, honouring the
// RFC 3489 / RFC 5780 CHANGE-REQUEST attribute: it listens on two addresses
// times two ports and answers from the other address and/or port when asked.
// miniupnpd runs exactly that test at start (see upnp.go). It lives in its
// own namespace on the internet and is not a host of the lab.
//
// Request (what is read; other attributes are skipped):
//
//	0      2      4              8                   20
//	+------+------+--------------+-------------------+-------------
//	| 0x0001 type | length       | cookie 2112A442   | txid (12) | attributes
//	+------+------+--------------+-------------------+-------------
//	CHANGE-REQUEST: type 0x0003, length 4, value bit 0x4 change IP, 0x2 change port
//
// Response: type 0x0101, the request's cookie and txid, then
// XOR-MAPPED-ADDRESS (0x0020) and MAPPED-ADDRESS (0x0001) of the request's
// source.

const (
	stunHeaderLen     = 20
	stunMagic         = 0x2112A442
	stunBindingReq    = 0x0001
	stunBindingResp   = 0x0101
	stunAttrChangeReq = 0x0003
	stunAttrMapped    = 0x0001
	stunAttrXORMapped = 0x0020
	stunChangeIP      = 0x4
	stunChangePort    = 0x2
)

var errNotSTUN = errors.New("natlab: not a STUN binding request")

// parseSTUNRequest checks a Binding request and returns its transaction ID
// (cookie included, bytes 4..20) and the CHANGE-REQUEST flags.
func parseSTUNRequest(b []byte) (txid [16]byte, change uint32, err error) {
	if len(b) < stunHeaderLen || binary.BigEndian.Uint16(b[0:2]) != stunBindingReq ||
		binary.BigEndian.Uint32(b[4:8]) != stunMagic {
		return txid, 0, errNotSTUN
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if n%4 != 0 || stunHeaderLen+n > len(b) {
		return txid, 0, errNotSTUN
	}
	copy(txid[:], b[4:20])
	attrs := b[stunHeaderLen : stunHeaderLen+n]
	for len(attrs) >= 4 {
		typ := binary.BigEndian.Uint16(attrs[0:2])
		l := int(binary.BigEndian.Uint16(attrs[2:4]))
		padded := (l + 3) &^ 3
		if 4+padded > len(attrs) {
			return txid, 0, errNotSTUN
		}
		if typ == stunAttrChangeReq && l == 4 {
			change = binary.BigEndian.Uint32(attrs[4:8])
		}
		attrs = attrs[4+padded:]
	}
	return txid, change, nil
}

// appendSTUNResponse appends a Binding success response reporting from.
func appendSTUNResponse(b []byte, txid [16]byte, from netip.AddrPort) []byte {
	a := from.Addr().As4()
	b = binary.BigEndian.AppendUint16(b, stunBindingResp)
	b = binary.BigEndian.AppendUint16(b, 24) // two 12-byte attributes
	b = append(b, txid[:]...)
	// XOR-MAPPED-ADDRESS
	b = binary.BigEndian.AppendUint16(b, stunAttrXORMapped)
	b = binary.BigEndian.AppendUint16(b, 8)
	b = append(b, 0, 1)
	b = binary.BigEndian.AppendUint16(b, from.Port()^uint16(stunMagic>>16))
	b = binary.BigEndian.AppendUint32(b, binary.BigEndian.Uint32(a[:])^stunMagic)
	// MAPPED-ADDRESS
	b = binary.BigEndian.AppendUint16(b, stunAttrMapped)
	b = binary.BigEndian.AppendUint16(b, 8)
	b = append(b, 0, 1)
	b = binary.BigEndian.AppendUint16(b, from.Port())
	b = append(b, a[:]...)
	return b
}

// stunServer owns four sockets, addr i/2 port i%2, and one goroutine each.
type stunServer struct {
	conns [4]*net.UDPConn
	wg    sync.WaitGroup
}

func startSTUN(ns string) (*stunServer, error) {
	s := &stunServer{}
	addrs := [2]netip.Addr{stunAddr1, stunAddr2}
	for i := range s.conns {
		ap := netip.AddrPortFrom(addrs[i/2], stunPorts[i%2])
		err := inNamespace(ns, func() (err error) {
			s.conns[i], err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(ap))
			return err
		})
		if err != nil {
			s.Close()
			return nil, err
		}
	}
	for i := range s.conns {
		s.wg.Add(1)
		go s.serve(i)
	}
	return s, nil
}

func (s *stunServer) serve(i int) {
	defer s.wg.Done()
	buf := make([]byte, 1500)
	var out []byte
	for {
		n, from, err := s.conns[i].ReadFromUDPAddrPort(buf)
		if err != nil {
			return // closed
		}
		txid, change, err := parseSTUNRequest(buf[:n])
		if err != nil {
			continue
		}
		j := i
		if change&stunChangeIP != 0 {
			j ^= 2
		}
		if change&stunChangePort != 0 {
			j ^= 1
		}
		out = appendSTUNResponse(out[:0], txid, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()))
		s.conns[j].WriteToUDPAddrPort(out, from) //nolint:errcheck // best effort, like any UDP server
	}
}

// Close closes the sockets and waits for the goroutines.
func (s *stunServer) Close() error {
	var errs []error
	for _, c := range s.conns {
		if c != nil {
			errs = append(errs, c.Close())
		}
	}
	s.wg.Wait()
	return errors.Join(errs...)
}
