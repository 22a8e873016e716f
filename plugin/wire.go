package plugin

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Frame types. See the package doc for what each carries.
const (
	frameHello      = 0x01 // plugin: version, token
	frameWelcome    = 0x02 // node: its peer ID
	frameRegister   = 0x03 // plugin: request; service name
	frameUnregister = 0x04 // plugin: request; service name
	frameOpen       = 0x05 // plugin: new stream; peer ID, service name
	frameOpened     = 0x06 // node: the stream is open; path
	frameIncoming   = 0x07 // node: new stream from a peer; peer ID, service, path
	frameData       = 0x08 // both: stream bytes
	frameWindow     = 0x09 // both: 4-byte credit for more DATA bytes
	frameCloseWrite = 0x0a // both: no more DATA on the stream from the sender
	frameReset      = 0x0b // both: the stream is aborted; optional message
	frameLookup     = 0x0c // plugin: request; peer ID
	frameFind       = 0x0d // plugin: request; 2-byte limit, topic
	frameAdvertise  = 0x0e // plugin: request; topic
	frameResult     = 0x0f // node: a request's answer; JSON
	frameError      = 0x10 // node: a request's or the session's error; code, message
)

// Bounds of the wire format.
const (
	headerLen = 9
	// MaxPayload is the largest payload of a frame.
	MaxPayload = 64 << 10
	// InitialWindow is how many DATA bytes either side may send on a new
	// stream before the other grants more with WINDOW.
	InitialWindow = 1 << 20
	// maxWindow bounds what a side may be granted on a stream in all.
	maxWindow = 1 << 30
	// Version is the protocol version a HELLO carries.
	Version = 1
	// nodeStreams marks stream IDs the node picks (incoming streams);
	// plugins pick IDs below it.
	nodeStreams = 1 << 31
)

// Error codes of ERROR frames.
const (
	CodeMalformed  = 1 // a frame that breaks the format; closes the session
	CodeAuth       = 2 // a wrong token, or no HELLO first; closes the session
	CodeNotGranted = 3 // a service the plugin may not register or open
	CodeTaken      = 4 // a service another plugin, or the node, handles
	CodeNotFound   = 5 // no such peer, record or service on the peer
	CodeFailed     = 6 // the network failed: no connection, a timeout
	CodeBadRequest = 7 // a request that makes no sense: unknown stream, bad name
)

// frame is one frame: type, stream (or request) ID, payload.
type frame struct {
	typ     byte
	id      uint32
	payload []byte
}

// ErrMalformed wraps every error of a frame that breaks the format.
var ErrMalformed = errors.New("plugin: malformed frame")

// readFrame reads one frame from r.
func readFrame(r io.Reader) (frame, error) {
	var h [headerLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return frame{}, err
	}
	f := frame{typ: h[0], id: binary.BigEndian.Uint32(h[1:5])}
	n := binary.BigEndian.Uint32(h[5:9])
	if f.typ < frameHello || f.typ > frameError {
		return frame{}, fmt.Errorf("%w: type %#x", ErrMalformed, f.typ)
	}
	if n > MaxPayload {
		return frame{}, fmt.Errorf("%w: payload of %d bytes, at most %d", ErrMalformed, n, MaxPayload)
	}
	f.payload = getPayload(int(n))
	if _, err := io.ReadFull(r, f.payload); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return frame{}, err
	}
	return f, nil
}

// Large payloads come from a pool, and go back to it once read
// (putPayload): a stream at full speed would otherwise allocate 64 KiB a
// frame.
var payloads = sync.Pool{New: func() any { return new([MaxPayload]byte) }}

const pooledPayload = 4 << 10 // smaller payloads are allocated

func getPayload(n int) []byte {
	if n < pooledPayload {
		return make([]byte, n)
	}
	return payloads.Get().(*[MaxPayload]byte)[:n]
}

// putPayload returns p to the pool if it came from it.
func putPayload(p []byte) {
	if cap(p) == MaxPayload {
		payloads.Put((*[MaxPayload]byte)(p[:MaxPayload]))
	}
}

// appendFrame appends f's encoding to b.
func appendFrame(b []byte, f frame) []byte {
	b = append(b, f.typ)
	b = binary.BigEndian.AppendUint32(b, f.id)
	b = binary.BigEndian.AppendUint32(b, uint32(len(f.payload)))
	return append(b, f.payload...)
}

// field reads a 1-byte length and that many bytes from b.
func field(b []byte) (v, rest []byte, err error) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return nil, nil, fmt.Errorf("%w: truncated field", ErrMalformed)
	}
	return b[1 : 1+int(b[0])], b[1+int(b[0]):], nil
}

func appendField(b, v []byte) []byte {
	if len(v) > 255 {
		v = v[:255]
	}
	b = append(b, byte(len(v)))
	return append(b, v...)
}

// errorPayload is an ERROR frame's payload.
func errorPayload(code byte, msg string) []byte {
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	return append([]byte{code}, msg...)
}

// Error is an ERROR frame the node sent: why a request failed, or why it
// closed the session.
type Error struct {
	Code    byte
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("plugin: %s (code %d)", e.Message, e.Code) }

func parseError(p []byte) *Error {
	if len(p) == 0 {
		return &Error{Code: CodeMalformed, Message: "empty error"}
	}
	return &Error{Code: p[0], Message: string(p[1:])}
}
