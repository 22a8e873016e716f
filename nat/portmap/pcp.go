package portmap

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// PCP constants (RFC 6887).
const (
	pcpVersion     = 2
	pcpOpAnnounce  = 0
	pcpOpMap       = 1
	pcpResponseBit = 0x80

	pcpHeaderLen = 24
	pcpMapLen    = pcpHeaderLen + 36

	pcpUnsupportedVersion = 1
	pcpUnsupportedOpcode  = 4

	protoTCP = 6
	protoUDP = 17
)

// pcpMapRequest is the content of a MAP request.
type pcpMapRequest struct {
	lifetime      uint32
	client        netip.Addr
	nonce         [12]byte
	protocol      byte
	internalPort  uint16
	suggestedPort uint16
	suggestedAddr netip.Addr // invalid: any
}

// pcpResponse is a decoded PCP response. The MAP fields are set when the
// response carries a MAP body.
type pcpResponse struct {
	opcode   byte
	result   byte
	lifetime uint32
	epoch    uint32

	hasMap       bool
	nonce        [12]byte
	protocol     byte
	internalPort uint16
	externalPort uint16
	external     netip.Addr // unmapped
}

// putAddr16 writes a as a 16-byte address, IPv4 in its IPv4-mapped form.
func putAddr16(b []byte, a netip.Addr) {
	if !a.IsValid() {
		a = netip.IPv4Unspecified()
	}
	a16 := a.As16() // IPv4-mapped for IPv4
	copy(b, a16[:])
}

// encodePCPHeader writes a request header into b[:24].
func encodePCPHeader(b []byte, opcode byte, lifetime uint32, client netip.Addr) {
	b[0] = pcpVersion
	b[1] = opcode
	binary.BigEndian.PutUint32(b[4:], lifetime)
	putAddr16(b[8:24], client)
}

// encodePCPAnnounce returns an ANNOUNCE request.
func encodePCPAnnounce(client netip.Addr) []byte {
	b := make([]byte, pcpHeaderLen)
	encodePCPHeader(b, pcpOpAnnounce, 0, client)
	return b
}

// encodePCPMap returns a MAP request.
func encodePCPMap(r pcpMapRequest) []byte {
	b := make([]byte, pcpMapLen)
	encodePCPHeader(b, pcpOpMap, r.lifetime, r.client)
	copy(b[24:36], r.nonce[:])
	b[36] = r.protocol
	binary.BigEndian.PutUint16(b[40:], r.internalPort)
	binary.BigEndian.PutUint16(b[42:], r.suggestedPort)
	putAddr16(b[44:60], r.suggestedAddr)
	return b
}

// decodePCPResponse decodes a PCP response. An answer in NAT-PMP's format
// (version 0) is an error matching ErrNotSupported: the gateway speaks
// NAT-PMP only.
func decodePCPResponse(b []byte) (pcpResponse, error) {
	if len(b) >= 4 && b[0] == 0 && b[1] >= 128 {
		return pcpResponse{}, fmt.Errorf("portmap: pcp: the gateway answers in NAT-PMP's format: %w", ErrNotSupported)
	}
	switch {
	case len(b) < pcpHeaderLen || len(b) > maxDatagram || len(b)%4 != 0:
		return pcpResponse{}, malformed(PCP, "response of %d bytes", len(b))
	case b[1]&pcpResponseBit == 0:
		return pcpResponse{}, malformed(PCP, "request where a response was expected")
	case b[0] != pcpVersion && b[3] != pcpUnsupportedVersion:
		return pcpResponse{}, malformed(PCP, "version %d", b[0])
	}
	r := pcpResponse{
		opcode:   b[1] &^ pcpResponseBit,
		result:   b[3],
		lifetime: binary.BigEndian.Uint32(b[4:]),
		epoch:    binary.BigEndian.Uint32(b[8:]),
	}
	rest := b[pcpHeaderLen:]
	if r.opcode == pcpOpMap && len(b) >= pcpMapLen {
		r.hasMap = true
		copy(r.nonce[:], b[24:36])
		r.protocol = b[36]
		r.internalPort = binary.BigEndian.Uint16(b[40:])
		r.externalPort = binary.BigEndian.Uint16(b[42:])
		r.external = netip.AddrFrom16([16]byte(b[44:60])).Unmap()
		rest = b[pcpMapLen:]
	}
	if r.opcode == pcpOpMap && r.result == 0 && !r.hasMap {
		return pcpResponse{}, malformed(PCP, "MAP response of %d bytes", len(b))
	}
	if r.opcode != pcpOpMap && r.opcode != pcpOpAnnounce && r.result == 0 {
		return pcpResponse{}, malformed(PCP, "opcode %d", r.opcode)
	}
	// Options: code (1), reserved (1), length (2), data padded to 4 bytes.
	for len(rest) > 0 {
		if len(rest) < 4 {
			return pcpResponse{}, malformed(PCP, "truncated option")
		}
		n := 4 + (int(binary.BigEndian.Uint16(rest[2:]))+3)&^3
		if n > len(rest) {
			return pcpResponse{}, malformed(PCP, "option %d of %d bytes overruns the message", rest[0], n)
		}
		rest = rest[n:]
	}
	return r, nil
}

func (r pcpResponse) err() error {
	if r.result == 0 {
		return nil
	}
	return &ResultError{Protocol: PCP, Code: int(r.result)}
}

func pcpProtocol(transport string) byte {
	if transport == "tcp" {
		return protoTCP
	}
	return protoUDP
}

// announcePCP checks that the gateway answers PCP.
func (c *Client) announcePCP(ctx context.Context, gw netip.Addr) error {
	conn, local, err := c.dialGateway(ctx, gw)
	if err != nil {
		return err
	}
	defer conn.Close()
	return exchange(ctx, conn, PCP, encodePCPAnnounce(local), func(b []byte) (bool, error) {
		r, err := decodePCPResponse(b)
		if err != nil {
			return finalDecodeError(err), err
		}
		if r.opcode != pcpOpAnnounce {
			return false, nil
		}
		return true, r.err()
	})
}

// finalDecodeError reports whether a decoding error ends an exchange: a
// gateway speaking only NAT-PMP will not answer PCP differently, whereas a
// malformed datagram may be followed by a good one.
func finalDecodeError(err error) bool { return !errors.Is(err, ErrMalformed) }

// pcpMap sends a MAP request on the gateway socket and returns the answer
// to it (same nonce, protocol and internal port).
func (c *Client) pcpMap(ctx context.Context, gw netip.Addr, req pcpMapRequest) (pcpResponse, netip.Addr, error) {
	conn, local, err := c.dialGateway(ctx, gw)
	if err != nil {
		return pcpResponse{}, netip.Addr{}, err
	}
	defer conn.Close()
	req.client = local
	var resp pcpResponse
	err = exchange(ctx, conn, PCP, encodePCPMap(req), func(b []byte) (bool, error) {
		r, err := decodePCPResponse(b)
		if err != nil {
			return finalDecodeError(err), err
		}
		if r.opcode != pcpOpMap {
			return false, nil
		}
		if !r.hasMap { // an error answer without the body: cannot be matched, but is ours
			return true, r.err()
		}
		if r.nonce != req.nonce || r.protocol != req.protocol || r.internalPort != req.internalPort {
			return false, nil
		}
		if err := r.err(); err != nil {
			return true, err
		}
		if req.lifetime != 0 && (r.externalPort == 0 || r.lifetime == 0 || !r.external.Is4() || r.external.IsUnspecified()) {
			return true, malformed(PCP, "granted %v:%d for %d s", r.external, r.externalPort, r.lifetime)
		}
		resp = r
		return true, nil
	})
	return resp, local, err
}

// mapPCP maps a port with PCP, renewing prev (same nonce, same external
// endpoint suggested) if it is valid.
func (c *Client) mapPCP(ctx context.Context, gw netip.Addr, req request, prev Mapping) (Mapping, error) {
	mr := pcpMapRequest{
		lifetime:      uint32(req.lifetime / time.Second),
		protocol:      pcpProtocol(req.transport),
		internalPort:  req.internalPort,
		suggestedPort: req.internalPort,
		nonce:         prev.nonce,
	}
	if prev.External.IsValid() {
		mr.suggestedPort, mr.suggestedAddr = prev.External.Port(), prev.External.Addr()
	} else if _, err := rand.Read(mr.nonce[:]); err != nil {
		return Mapping{}, err
	}
	r, local, err := c.pcpMap(ctx, gw, mr)
	if err != nil {
		return Mapping{}, err
	}
	return Mapping{
		External: netip.AddrPortFrom(r.external, r.externalPort),
		Lifetime: time.Duration(r.lifetime) * time.Second,
		local:    local,
		nonce:    mr.nonce,
	}, nil
}

// deletePCP removes m: its MAP request again, with lifetime 0.
func (c *Client) deletePCP(ctx context.Context, m Mapping) error {
	_, _, err := c.pcpMap(ctx, m.gateway, pcpMapRequest{
		protocol:      pcpProtocol(m.Transport),
		internalPort:  m.InternalPort,
		suggestedPort: m.External.Port(),
		suggestedAddr: m.External.Addr(),
		nonce:         m.nonce,
	})
	return err
}
