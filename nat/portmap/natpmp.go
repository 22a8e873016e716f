package portmap

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"time"
)

// NAT-PMP opcodes and result codes (RFC 6886).
const (
	pmpOpAddr = 0
	pmpOpUDP  = 1
	pmpOpTCP  = 2

	pmpUnsupportedVersion = 1
	pmpUnsupportedOpcode  = 5
)

// pmpResponse is a decoded NAT-PMP response.
type pmpResponse struct {
	op     byte // the request's opcode: pmpOpAddr, pmpOpUDP or pmpOpTCP
	result uint16
	epoch  uint32
	// For pmpOpAddr:
	external netip.Addr
	// For pmpOpUDP and pmpOpTCP:
	internalPort, externalPort uint16
	lifetime                   uint32
}

// encodePMPAddrRequest returns an external address request.
func encodePMPAddrRequest() []byte { return []byte{0, pmpOpAddr} }

// encodePMPMapRequest returns a map request for opcode op.
func encodePMPMapRequest(op byte, internalPort, suggestedPort uint16, lifetime uint32) []byte {
	b := make([]byte, 12)
	b[1] = op
	binary.BigEndian.PutUint16(b[4:], internalPort)
	binary.BigEndian.PutUint16(b[6:], suggestedPort)
	binary.BigEndian.PutUint32(b[8:], lifetime)
	return b
}

// decodePMPResponse decodes a NAT-PMP response. A response with a non-zero
// result needs only its 8-byte header; a successful one its full length.
func decodePMPResponse(b []byte) (pmpResponse, error) {
	if len(b) < 8 {
		return pmpResponse{}, malformed(NATPMP, "response of %d bytes", len(b))
	}
	if b[0] != 0 {
		return pmpResponse{}, malformed(NATPMP, "version %d", b[0])
	}
	if b[1] < 128 || b[1]-128 > pmpOpTCP {
		return pmpResponse{}, malformed(NATPMP, "opcode %d", b[1])
	}
	r := pmpResponse{
		op:     b[1] - 128,
		result: binary.BigEndian.Uint16(b[2:]),
		epoch:  binary.BigEndian.Uint32(b[4:]),
	}
	if r.result != 0 {
		return r, nil
	}
	if r.op == pmpOpAddr {
		if len(b) < 12 {
			return pmpResponse{}, malformed(NATPMP, "address response of %d bytes", len(b))
		}
		r.external = netip.AddrFrom4([4]byte(b[8:12]))
		return r, nil
	}
	if len(b) < 16 {
		return pmpResponse{}, malformed(NATPMP, "map response of %d bytes", len(b))
	}
	r.internalPort = binary.BigEndian.Uint16(b[8:])
	r.externalPort = binary.BigEndian.Uint16(b[10:])
	r.lifetime = binary.BigEndian.Uint32(b[12:])
	return r, nil
}

func (r pmpResponse) err() error {
	if r.result == 0 {
		return nil
	}
	return &ResultError{Protocol: NATPMP, Code: int(r.result)}
}

func pmpOp(transport string) byte {
	if transport == "tcp" {
		return pmpOpTCP
	}
	return pmpOpUDP
}

// externalPMP asks for the gateway's external address.
func (c *Client) externalPMP(ctx context.Context, gw netip.Addr) (netip.Addr, error) {
	conn, _, err := c.dialGateway(ctx, gw)
	if err != nil {
		return netip.Addr{}, err
	}
	defer conn.Close()
	return pmpAddr(ctx, conn)
}

// pmpAddr asks for the external address on conn.
func pmpAddr(ctx context.Context, conn net.Conn) (netip.Addr, error) {
	var ext netip.Addr
	err := exchange(ctx, conn, NATPMP, encodePMPAddrRequest(), func(b []byte) (bool, error) {
		r, err := decodePMPResponse(b)
		if err != nil {
			return false, err
		}
		if r.op != pmpOpAddr {
			return false, nil
		}
		if err := r.err(); err != nil {
			return true, err
		}
		if !r.external.IsValid() || r.external.IsUnspecified() {
			return true, malformed(NATPMP, "external address %v", r.external)
		}
		ext = r.external
		return true, nil
	})
	return ext, err
}

// pmpMap sends a map request on conn and returns the answer.
func pmpMap(ctx context.Context, conn net.Conn, op byte, internalPort, suggestedPort uint16, lifetime uint32) (pmpResponse, error) {
	var resp pmpResponse
	req := encodePMPMapRequest(op, internalPort, suggestedPort, lifetime)
	err := exchange(ctx, conn, NATPMP, req, func(b []byte) (bool, error) {
		r, err := decodePMPResponse(b)
		if err != nil {
			return false, err
		}
		if r.op != op || (r.result == 0 && r.internalPort != internalPort) {
			return false, nil // an answer to an earlier request
		}
		if err := r.err(); err != nil {
			return true, err
		}
		if lifetime != 0 && (r.externalPort == 0 || r.lifetime == 0) {
			return true, malformed(NATPMP, "granted port %d for %d s", r.externalPort, r.lifetime)
		}
		resp = r
		return true, nil
	})
	return resp, err
}

// mapPMP maps a port with NAT-PMP, renewing prev if it is valid.
func (c *Client) mapPMP(ctx context.Context, gw netip.Addr, req request, prev Mapping) (Mapping, error) {
	conn, local, err := c.dialGateway(ctx, gw)
	if err != nil {
		return Mapping{}, err
	}
	defer conn.Close()
	ext, err := pmpAddr(ctx, conn)
	if err != nil {
		return Mapping{}, err
	}
	suggested := req.internalPort
	if prev.External.IsValid() {
		suggested = prev.External.Port()
	}
	r, err := pmpMap(ctx, conn, pmpOp(req.transport), req.internalPort, suggested, uint32(req.lifetime/time.Second))
	if err != nil {
		return Mapping{}, err
	}
	return Mapping{
		External: netip.AddrPortFrom(ext, r.externalPort),
		Lifetime: time.Duration(r.lifetime) * time.Second,
		local:    local,
	}, nil
}

// deletePMP removes m: a map request with lifetime 0 and external port 0.
func (c *Client) deletePMP(ctx context.Context, m Mapping) error {
	conn, _, err := c.dialGateway(ctx, m.gateway)
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = pmpMap(ctx, conn, pmpOp(m.Transport), m.InternalPort, 0, 0)
	return err
}
