package tcpprobe

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Sizes of the wire format (see the package doc).
const (
	// RequestSize is the size of every HOLD request.
	RequestSize = 32
	// AckSize and ResponseSize are the sizes of the server's two answers.
	AckSize      = headerLen + 1 + 4
	ResponseSize = headerLen

	headerLen = 18
	nonceLen  = 12
	version   = 1
)

var magic = [4]byte{'r', 'd', 'v', 'h'}

// msgType is a message's type byte.
type msgType uint8

const (
	typeHold     msgType = 0x01
	typeAck      msgType = 0x02
	typeResponse msgType = 0x03
)

// Nonce is chosen at random by the client and copied into both answers.
type Nonce [nonceLen]byte

// Status is the first byte of an ACK's body.
type Status uint8

const (
	// StatusOK: the hold is granted; a RESPONSE follows after it.
	StatusOK Status = 0
	// StatusMalformed: the request had the wrong size, magic or type, or
	// did not arrive in time.
	StatusMalformed Status = 1
	// StatusBadVersion: the request's version is not 1.
	StatusBadVersion Status = 2
	// StatusBadHold: the hold is 0 or above the server's maximum.
	StatusBadHold Status = 3
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusMalformed:
		return "malformed request"
	case StatusBadVersion:
		return "unsupported version"
	case StatusBadHold:
		return "hold out of range"
	}
	return fmt.Sprintf("status %d", uint8(s))
}

func appendHeader(b []byte, t msgType, n Nonce) []byte {
	b = append(b, magic[:]...)
	b = append(b, version, byte(t))
	return append(b, n[:]...)
}

// appendRequest appends a HOLD request for hold seconds.
func appendRequest(b []byte, n Nonce, hold uint32) []byte {
	b = binary.BigEndian.AppendUint32(appendHeader(b, typeHold, n), hold)
	var pad [RequestSize - headerLen - 4]byte
	return append(b, pad[:]...)
}

// appendAck appends an ACK.
func appendAck(b []byte, n Nonce, st Status, granted uint32) []byte {
	return binary.BigEndian.AppendUint32(append(appendHeader(b, typeAck, n), byte(st)), granted)
}

// appendResponse appends a RESPONSE.
func appendResponse(b []byte, n Nonce) []byte { return appendHeader(b, typeResponse, n) }

// parseRequest decodes a HOLD request. It returns the nonce (as much of it
// as b holds, so that even a refusal can carry it), the hold in seconds,
// and StatusOK, or the status that refuses the request. The hold is not
// checked against a maximum.
func parseRequest(b []byte) (n Nonce, hold uint32, st Status) {
	if len(b) > 6 {
		copy(n[:], b[6:])
	}
	switch {
	case len(b) != RequestSize || [4]byte(b[:4]) != magic:
		return n, 0, StatusMalformed
	case b[4] != version:
		return n, 0, StatusBadVersion
	case msgType(b[5]) != typeHold:
		return n, 0, StatusMalformed
	}
	hold = binary.BigEndian.Uint32(b[headerLen:])
	if hold == 0 {
		return n, 0, StatusBadHold
	}
	return n, hold, StatusOK
}

var errBadHeader = errors.New("bad header")

// parseHeader checks an answer's header and returns its nonce.
func parseHeader(b []byte, t msgType) (Nonce, error) {
	if len(b) < headerLen || [4]byte(b[:4]) != magic || b[4] != version || msgType(b[5]) != t {
		return Nonce{}, errBadHeader
	}
	return Nonce(b[6:headerLen]), nil
}

// parseAck decodes an ACK.
func parseAck(b []byte) (n Nonce, st Status, granted uint32, err error) {
	if len(b) != AckSize {
		return n, 0, 0, errBadHeader
	}
	if n, err = parseHeader(b, typeAck); err != nil {
		return n, 0, 0, err
	}
	return n, Status(b[headerLen]), binary.BigEndian.Uint32(b[headerLen+1:]), nil
}

// parseResponse decodes a RESPONSE.
func parseResponse(b []byte) (Nonce, error) {
	if len(b) != ResponseSize {
		return Nonce{}, errBadHeader
	}
	return parseHeader(b, typeResponse)
}
