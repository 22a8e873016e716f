package probe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Sizes of the wire format (see the package doc).
const (
	// MaxMessageSize is the largest datagram either side accepts.
	MaxMessageSize = 128
	// RequestSize is the size every request is padded to; servers drop
	// shorter requests.
	RequestSize = 80

	headerLen = 18
	txIDLen   = 12
	version   = 1

	// delayedAckLen is the size of a DELAYED-ACK.
	delayedAckLen = headerLen + 1 + 4
)

var magic = [4]byte{'r', 'd', 'v', 'p'}

// msgType is a message's type byte.
type msgType uint8

const (
	typeBinding          msgType = 0x01
	typeBindingResponse  msgType = 0x02
	typeAltPort          msgType = 0x03
	typeAltPortResponse  msgType = 0x04
	typeDelayed          msgType = 0x05
	typeDelayedAck       msgType = 0x06
	typeDelayedResponse  msgType = 0x07
	typePeerSend         msgType = 0x08
	typePeerSendAck      msgType = 0x09
	typePeerForward      msgType = 0x0a
	typePeerSendResponse msgType = 0x0b
)

// isRequest reports whether t is sent by clients (and so padded).
func (t msgType) isRequest() bool {
	switch t {
	case typeBinding, typeAltPort, typeDelayed, typePeerSend:
		return true
	}
	return false
}

func (t msgType) String() string {
	switch t {
	case typeBinding:
		return "BINDING"
	case typeBindingResponse:
		return "BINDING-RESPONSE"
	case typeAltPort:
		return "ALT-PORT"
	case typeAltPortResponse:
		return "ALT-PORT-RESPONSE"
	case typeDelayed:
		return "DELAYED"
	case typeDelayedAck:
		return "DELAYED-ACK"
	case typeDelayedResponse:
		return "DELAYED-RESPONSE"
	case typePeerSend:
		return "PEER-SEND"
	case typePeerSendAck:
		return "PEER-SEND-ACK"
	case typePeerForward:
		return "PEER-FORWARD"
	case typePeerSendResponse:
		return "PEER-SEND-RESPONSE"
	}
	return fmt.Sprintf("type(%#02x)", uint8(t))
}

// status is the status byte of DELAYED-ACK and PEER-SEND-ACK.
type status uint8

const (
	statusOK             status = 0
	statusRefused        status = 1
	statusUnknownSibling status = 2
	statusBadDelay       status = 3
)

// txID is a transaction ID.
type txID [txIDLen]byte

// message is any message of the protocol; which fields are meaningful
// depends on Type, as the package doc lists.
type message struct {
	Type    msgType
	TxID    txID
	AltPort uint16         // BINDING-RESPONSE
	Addr    netip.AddrPort // observed source, sibling or forward target
	Delay   time.Duration  // DELAYED, DELAYED-ACK, DELAYED-RESPONSE; whole milliseconds
	Status  status         // DELAYED-ACK, PEER-SEND-ACK
	Budget  uint16         // PEER-FORWARD
}

var (
	errShort   = errors.New("probe: message too short")
	errLong    = errors.New("probe: message too long")
	errMagic   = errors.New("probe: bad magic")
	errVersion = errors.New("probe: unsupported version")
	errType    = errors.New("probe: unknown message type")
	errAddr    = errors.New("probe: bad address")
	errDelay   = errors.New("probe: delay out of range")
)

// maxWireDelay is the largest delay the 4-byte millisecond field carries.
const maxWireDelay = time.Duration(1<<32-1) * time.Millisecond

// appendMessage appends m's encoding to b. Requests are padded to
// RequestSize. It fails for an address that is not valid where one is
// needed, or a delay the wire cannot carry.
func appendMessage(b []byte, m message) ([]byte, error) {
	start := len(b)
	b = append(b, magic[:]...)
	b = append(b, version, byte(m.Type))
	b = append(b, m.TxID[:]...)
	var err error
	switch m.Type {
	case typeBinding, typeAltPort:
	case typeBindingResponse:
		b = binary.BigEndian.AppendUint16(b, m.AltPort)
		b, err = appendAddr(b, m.Addr)
	case typeAltPortResponse, typePeerSend, typePeerSendResponse:
		b, err = appendAddr(b, m.Addr)
	case typeDelayed:
		b, err = appendDelay(b, m.Delay)
	case typeDelayedAck:
		b = append(b, byte(m.Status))
		b, err = appendDelay(b, m.Delay)
	case typeDelayedResponse:
		if b, err = appendDelay(b, m.Delay); err == nil {
			b, err = appendAddr(b, m.Addr)
		}
	case typePeerSendAck:
		b = append(b, byte(m.Status))
	case typePeerForward:
		b = binary.BigEndian.AppendUint16(b, m.Budget)
		b, err = appendAddr(b, m.Addr)
	default:
		return b[:start], errType
	}
	if err != nil {
		return b[:start], err
	}
	if m.Type.isRequest() {
		for len(b)-start < RequestSize {
			b = append(b, 0)
		}
	}
	return b, nil
}

func appendDelay(b []byte, d time.Duration) ([]byte, error) {
	if d < 0 || d > maxWireDelay || d%time.Millisecond != 0 {
		return b, errDelay
	}
	return binary.BigEndian.AppendUint32(b, uint32(d/time.Millisecond)), nil
}

// appendAddr appends the address encoding of a (IPv4-mapped IPv6 addresses
// as IPv4).
func appendAddr(b []byte, a netip.AddrPort) ([]byte, error) {
	ip := a.Addr().Unmap()
	switch {
	case ip.Is4():
		b = append(b, 4)
		b = binary.BigEndian.AppendUint16(b, a.Port())
		v := ip.As4()
		return append(b, v[:]...), nil
	case ip.Is6():
		b = append(b, 6)
		b = binary.BigEndian.AppendUint16(b, a.Port())
		v := ip.As16()
		return append(b, v[:]...), nil
	}
	return b, errAddr
}

// parseAddr decodes an address at the start of b and returns the rest.
func parseAddr(b []byte) (netip.AddrPort, []byte, error) {
	if len(b) < 3 {
		return netip.AddrPort{}, nil, errShort
	}
	port := binary.BigEndian.Uint16(b[1:3])
	switch b[0] {
	case 4:
		if len(b) < 3+4 {
			return netip.AddrPort{}, nil, errShort
		}
		ip := netip.AddrFrom4([4]byte(b[3:7]))
		return netip.AddrPortFrom(ip, port), b[7:], nil
	case 6:
		if len(b) < 3+16 {
			return netip.AddrPort{}, nil, errShort
		}
		ip := netip.AddrFrom16([16]byte(b[3:19]))
		if ip.Is4In6() {
			// Always sent as family 4; one encoding per address.
			return netip.AddrPort{}, nil, errAddr
		}
		return netip.AddrPortFrom(ip, port), b[19:], nil
	}
	return netip.AddrPort{}, nil, errAddr
}

// parseMessage decodes one datagram. Bytes after the body (request
// padding) are ignored.
func parseMessage(b []byte) (message, error) {
	var m message
	if len(b) > MaxMessageSize {
		return m, errLong
	}
	if len(b) < headerLen {
		return m, errShort
	}
	if [4]byte(b[0:4]) != magic {
		return m, errMagic
	}
	if b[4] != version {
		return m, errVersion
	}
	m.Type = msgType(b[5])
	m.TxID = txID(b[6:18])
	body := b[headerLen:]
	var err error
	switch m.Type {
	case typeBinding, typeAltPort:
	case typeBindingResponse:
		if len(body) < 2 {
			return m, errShort
		}
		m.AltPort = binary.BigEndian.Uint16(body)
		m.Addr, _, err = parseAddr(body[2:])
	case typeAltPortResponse, typePeerSend, typePeerSendResponse:
		m.Addr, _, err = parseAddr(body)
	case typeDelayed:
		m.Delay, _, err = parseDelay(body)
	case typeDelayedAck:
		if len(body) < 1 {
			return m, errShort
		}
		m.Status = status(body[0])
		m.Delay, _, err = parseDelay(body[1:])
	case typeDelayedResponse:
		if m.Delay, body, err = parseDelay(body); err == nil {
			m.Addr, _, err = parseAddr(body)
		}
	case typePeerSendAck:
		if len(body) < 1 {
			return m, errShort
		}
		m.Status = status(body[0])
	case typePeerForward:
		if len(body) < 2 {
			return m, errShort
		}
		m.Budget = binary.BigEndian.Uint16(body)
		m.Addr, _, err = parseAddr(body[2:])
	default:
		return m, errType
	}
	return m, err
}

func parseDelay(b []byte) (time.Duration, []byte, error) {
	if len(b) < 4 {
		return 0, nil, errShort
	}
	return time.Duration(binary.BigEndian.Uint32(b)) * time.Millisecond, b[4:], nil
}
