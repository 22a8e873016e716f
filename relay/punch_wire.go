package relay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Wire format of PunchProtocol. Every message is a 2-byte big-endian
// length, then that many bytes:
//
//	type      1 byte: 1 request, 2 forward, 3 answer
//	status    1 byte: 0 in requests and forwards; an answer's PunchStatus
//	nat       1 byte: what the sender knows of its NAT (PunchNAT): bit 0
//	          set if it knows its mapping, bit 1 if the mapping is
//	          endpoint-dependent, bit 2 if it filters by address and port,
//	          bit 3 if it takes part in spray punches over QUIC, bit 4 over
//	          TCP (spray.go); in a forward, the initiator's
//	token     8 bytes: drawn at random by the initiator, carried by the
//	          forward and echoed by the answer; a spray punch's packets
//	          carry it
//	peer      1-byte length, then a peer ID's bytes: a request's target, a
//	          forward's initiator; empty in answers
//	observed  1-byte length, then a multiaddr's bytes: in a forward, the
//	          initiator's address as the relay's connection sees it; in
//	          an answer the relay passes back, the target's; empty in
//	          requests
//	count     1 byte, at most maxPunchAddrs, then count times a 1-byte
//	          length and a multiaddr's bytes: the sender's addresses (a
//	          request's and a forward's: the initiator's; an answer's: the
//	          target's)
//
// Nothing may follow the addresses. A message is at most maxPunchMsg bytes.
const (
	msgRequest = 1
	msgForward = 2
	msgAnswer  = 3

	maxPunchMsg   = 2048
	maxPunchAddrs = 8
)

// punchMsg is one PunchProtocol message.
type punchMsg struct {
	Type     byte
	Status   PunchStatus
	NAT      PunchNAT
	Token    [8]byte
	Peer     peer.ID
	Observed ma.Multiaddr
	Addrs    []ma.Multiaddr
}

// PunchNAT is what one side of a punch knows of its NAT. The zero value
// knows nothing.
type PunchNAT struct {
	// Known: the mapping behaviour was measured; Dependent and Strict
	// mean nothing otherwise.
	Known bool
	// Dependent: the NAT maps endpoint-dependently (a port per
	// destination).
	Dependent bool
	// Strict: the NAT filters by address and port (or its filtering is
	// not known).
	Strict bool
	// Sprays and SpraysTCP: the side takes part in spray punches over
	// QUIC, over TCP.
	Sprays, SpraysTCP bool
	// NoUDP: the side's network blocks UDP, so it does not spray over
	// QUIC. It is not sent: Sprays says it.
	NoUDP bool
}

func (n PunchNAT) byte() byte {
	var b byte
	for i, f := range []bool{n.Known, n.Dependent, n.Strict, n.Sprays, n.SpraysTCP} {
		if f {
			b |= 1 << i
		}
	}
	return b
}

func parsePunchNAT(b byte) (PunchNAT, bool) {
	n := PunchNAT{Known: b&1 != 0, Dependent: b&2 != 0, Strict: b&4 != 0, Sprays: b&8 != 0, SpraysTCP: b&16 != 0}
	return n, b < 32
}

// errMalformed wraps every decoding error.
var errMalformed = errors.New("relay: malformed punch message")

func (m punchMsg) encode() ([]byte, error) {
	if len(m.Addrs) > maxPunchAddrs {
		return nil, fmt.Errorf("relay: %d punch addresses, at most %d", len(m.Addrs), maxPunchAddrs)
	}
	b := make([]byte, 2, 64)
	b = append(b, m.Type, byte(m.Status), m.NAT.byte())
	b = append(b, m.Token[:]...)
	field := func(v []byte) error {
		if len(v) > 255 {
			return fmt.Errorf("relay: punch message field of %d bytes", len(v))
		}
		b = append(b, byte(len(v)))
		b = append(b, v...)
		return nil
	}
	if err := field([]byte(m.Peer)); err != nil {
		return nil, err
	}
	if err := field(m.Observed.Bytes()); err != nil {
		return nil, err
	}
	b = append(b, byte(len(m.Addrs)))
	for _, a := range m.Addrs {
		if err := field(a.Bytes()); err != nil {
			return nil, err
		}
	}
	if len(b)-2 > maxPunchMsg {
		return nil, fmt.Errorf("relay: punch message of %d bytes", len(b)-2)
	}
	binary.BigEndian.PutUint16(b, uint16(len(b)-2))
	return b, nil
}

// parsePunchMsg decodes a message body (without its length).
func parsePunchMsg(b []byte) (punchMsg, error) {
	var m punchMsg
	if len(b) < 14 {
		return m, fmt.Errorf("%w: %d bytes", errMalformed, len(b))
	}
	m.Type, m.Status = b[0], PunchStatus(b[1])
	if m.Type < msgRequest || m.Type > msgAnswer {
		return m, fmt.Errorf("%w: type %d", errMalformed, m.Type)
	}
	var ok bool
	if m.NAT, ok = parsePunchNAT(b[2]); !ok {
		return m, fmt.Errorf("%w: NAT flags %#x", errMalformed, b[2])
	}
	m.Token = [8]byte(b[3:11])
	b = b[11:]
	field := func() ([]byte, error) {
		if len(b) < 1 || len(b) < 1+int(b[0]) {
			return nil, fmt.Errorf("%w: truncated", errMalformed)
		}
		v := b[1 : 1+int(b[0])]
		b = b[1+int(b[0]):]
		return v, nil
	}
	pb, err := field()
	if err != nil {
		return m, err
	}
	if len(pb) > 0 {
		if m.Peer, err = peer.IDFromBytes(pb); err != nil {
			return m, fmt.Errorf("%w: peer: %v", errMalformed, err)
		}
	}
	ob, err := field()
	if err != nil {
		return m, err
	}
	if len(ob) > 0 {
		if m.Observed, err = ma.NewMultiaddrBytes(ob); err != nil {
			return m, fmt.Errorf("%w: observed address: %v", errMalformed, err)
		}
	}
	if len(b) < 1 {
		return m, fmt.Errorf("%w: no address count", errMalformed)
	}
	n := int(b[0])
	b = b[1:]
	if n > maxPunchAddrs {
		return m, fmt.Errorf("%w: %d addresses", errMalformed, n)
	}
	for range n {
		ab, err := field()
		if err != nil {
			return m, err
		}
		a, err := ma.NewMultiaddrBytes(ab)
		if err != nil {
			return m, fmt.Errorf("%w: address: %v", errMalformed, err)
		}
		m.Addrs = append(m.Addrs, a)
	}
	if len(b) != 0 {
		return m, fmt.Errorf("%w: %d bytes after the addresses", errMalformed, len(b))
	}
	return m, nil
}

// readPunchMsg reads one message from r.
func readPunchMsg(r io.Reader) (punchMsg, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return punchMsg{}, err
	}
	n := int(binary.BigEndian.Uint16(l[:]))
	if n > maxPunchMsg {
		return punchMsg{}, fmt.Errorf("%w: %d bytes", errMalformed, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return punchMsg{}, err
	}
	return parsePunchMsg(b)
}

func writePunchMsg(w io.Writer, m punchMsg) error {
	b, err := m.encode()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
