package natlab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The shaper delays and drops packets crossing the internet without
// sch_netem. The internet namespace has br_netfilter hand bridged IPv4
// packets to its forward hook, where an iptables-legacy rule queues them to
// NFQUEUE; the shaper, a netlink socket in that namespace owned by the lab,
// issues each packet's verdict: NF_DROP at once with probability Loss,
// NF_ACCEPT after Delay otherwise. The delay is constant, so verdicts leave
// in arrival order from one FIFO.
//
// NFQUEUE messages (netlink, nfnetlink subsystem 3, host byte order for
// netlink headers, big endian inside attributes):
//
//	config (type 0x0302): nfgenmsg{AF_UNSPEC, 0, queue} + attributes
//	  NFQA_CFG_CMD (1):          u8 command (1 bind), u8 pad, be16 pf
//	  NFQA_CFG_PARAMS (2):       be32 copy range, u8 copy mode (1 metadata only)
//	  NFQA_CFG_QUEUE_MAXLEN (3): be32
//	packet (type 0x0300): nfgenmsg + NFQA_PACKET_HDR (1): be32 id, be16 proto, u8 hook
//	verdict (type 0x0301): nfgenmsg{AF_UNSPEC, 0, queue} + NFQA_VERDICT_HDR (2): be32 verdict, be32 id

const (
	nfqQueueNum = 0
	nfqMaxLen   = 16384

	nfqMsgPacket  = 0
	nfqMsgVerdict = 1
	nfqMsgConfig  = 2

	nfqaPacketHdr   = 1
	nfqaVerdictHdr  = 2
	nfqaCfgCmd      = 1
	nfqaCfgParams   = 2
	nfqaCfgQueueMax = 3

	nfqCmdBind  = 1
	nfqCopyMeta = 1

	nfDrop   = 0
	nfAccept = 1

	maxDelay = 10 * time.Second
)

type shaper struct {
	f       *os.File // netlink socket, non-blocking, on the runtime poller
	delay   time.Duration
	loss    float64
	pending chan pendingVerdict // FIFO, due times non-decreasing
	done    chan struct{}
	wg      sync.WaitGroup

	mu  sync.Mutex // guards rng and seq
	rng *rand.Rand
	seq uint32
}

type pendingVerdict struct {
	id  uint32
	due time.Time
}

// startShaper turns br_netfilter on in the internet namespace, binds an
// NFQUEUE socket there and queues every bridged IPv4 packet to it.
func startShaper(ctx context.Context, ns string, in Internet) (*shaper, error) {
	if _, err := exec.LookPath("iptables-legacy"); err != nil {
		return nil, fmt.Errorf("%w: internet delay and loss need iptables-legacy (Debian package iptables)", ErrUnsupported)
	}
	if err := sysctl(ctx, ns, false, "net.bridge.bridge-nf-call-iptables=1"); err != nil {
		return nil, fmt.Errorf("%w: internet delay and loss need br_netfilter: %v", ErrUnsupported, err)
	}
	var fd int
	err := inNamespace(ns, func() (err error) {
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("natlab: NFQUEUE socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("natlab: bind NFQUEUE socket: %w", err)
	}
	// Room for bursts; overflowing the socket would lose packets.
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) //nolint:errcheck // best effort
	s := &shaper{
		f:       os.NewFile(uintptr(fd), "nfqueue"),
		delay:   in.Delay,
		loss:    in.Loss,
		pending: make(chan pendingVerdict, nfqMaxLen),
		done:    make(chan struct{}),
		rng:     rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}
	if err := s.configure(); err != nil {
		s.f.Close()
		return nil, err
	}
	s.wg.Add(2)
	go s.read()
	go s.release()
	// This kernel has the xtables NFQUEUE target but not nftables' queue
	// expression, so the rule is an iptables-legacy one, in the internet
	// namespace's own legacy filter table.
	if _, err := nsExec(ctx, ns, "", "iptables-legacy", "-w", "-A", "FORWARD", "-j", "NFQUEUE",
		"--queue-num", fmt.Sprint(nfqQueueNum), "--queue-bypass"); err != nil {
		s.Close()
		return nil, fmt.Errorf("%w: %v", ErrUnsupported, err)
	}
	return s, nil
}

// configure binds the queue, asks for metadata only, and sets its length,
// checking each acknowledgement. It runs before the reader starts.
func (s *shaper) configure() error {
	cmd := make([]byte, 4)
	cmd[0] = nfqCmdBind
	binary.BigEndian.PutUint16(cmd[2:], unix.AF_INET)
	params := make([]byte, 5)
	params[4] = nfqCopyMeta
	maxlen := binary.BigEndian.AppendUint32(nil, nfqMaxLen)
	for _, a := range []struct {
		typ  uint16
		data []byte
	}{{nfqaCfgCmd, cmd}, {nfqaCfgParams, params}, {nfqaCfgQueueMax, maxlen}} {
		msg := s.message(nfqMsgConfig, unix.NLM_F_REQUEST|unix.NLM_F_ACK, a.typ, a.data)
		if _, err := s.f.Write(msg); err != nil {
			return fmt.Errorf("natlab: NFQUEUE config: %w", err)
		}
		if err := s.ack(); err != nil {
			return fmt.Errorf("natlab: NFQUEUE config attribute %d: %w", a.typ, err)
		}
	}
	return nil
}

// ack reads the acknowledgement of the last request.
func (s *shaper) ack() error {
	s.f.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer s.f.SetReadDeadline(time.Time{})
	buf := make([]byte, 4096)
	n, err := s.f.Read(buf)
	if err != nil {
		return err
	}
	msgs, err := parseNetlink(buf[:n])
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if m.typ == unix.NLMSG_ERROR && len(m.data) >= 4 {
			if code := int32(binary.NativeEndian.Uint32(m.data)); code != 0 {
				return unix.Errno(-code)
			}
			return nil
		}
	}
	return errors.New("no acknowledgement")
}

// message builds an nfnetlink queue message with one attribute.
func (s *shaper) message(msgType, flags uint16, attrType uint16, attr []byte) []byte {
	s.mu.Lock()
	s.seq++
	seq := s.seq
	s.mu.Unlock()
	attrLen := 4 + len(attr)
	total := unix.NLMSG_HDRLEN + 4 + nlAlign(attrLen)
	b := make([]byte, 0, total)
	b = binary.NativeEndian.AppendUint32(b, uint32(total))
	b = binary.NativeEndian.AppendUint16(b, unix.NFNL_SUBSYS_QUEUE<<8|msgType)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = append(b, unix.AF_UNSPEC, unix.NFNETLINK_V0)
	b = binary.BigEndian.AppendUint16(b, nfqQueueNum)
	b = binary.NativeEndian.AppendUint16(b, uint16(attrLen))
	b = binary.NativeEndian.AppendUint16(b, attrType)
	b = append(b, attr...)
	for len(b) < total {
		b = append(b, 0)
	}
	return b
}

func (s *shaper) verdict(id, v uint32) {
	attr := binary.BigEndian.AppendUint32(nil, v)
	attr = binary.BigEndian.AppendUint32(attr, id)
	s.f.Write(s.message(nfqMsgVerdict, unix.NLM_F_REQUEST, nfqaVerdictHdr, attr)) //nolint:errcheck // a lost verdict drops the packet once the queue is unbound
}

// read receives queued packets until Close.
func (s *shaper) read() {
	defer s.wg.Done()
	defer close(s.pending)
	buf := make([]byte, 1<<16)
	for {
		n, err := s.f.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			continue // ENOBUFS: the kernel dropped messages; go on
		}
		msgs, err := parseNetlink(buf[:n])
		if err != nil {
			continue
		}
		now := time.Now()
		for _, m := range msgs {
			id, ok := packetID(m)
			if !ok {
				continue
			}
			s.mu.Lock()
			drop := s.loss > 0 && s.rng.Float64() < s.loss
			s.mu.Unlock()
			if drop {
				s.verdict(id, nfDrop)
				continue
			}
			select {
			case s.pending <- pendingVerdict{id: id, due: now.Add(s.delay)}:
			default:
				s.verdict(id, nfDrop) // more in flight than the queue holds
			}
		}
	}
}

// release issues accept verdicts when they are due.
func (s *shaper) release() {
	defer s.wg.Done()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for p := range s.pending {
		if d := time.Until(p.due); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-s.done:
				return
			}
		}
		s.verdict(p.id, nfAccept)
	}
}

// Close stops the shaper. Packets still queued are dropped by the kernel
// when the socket closes; the namespace is going away anyway.
func (s *shaper) Close() error {
	close(s.done)
	err := s.f.Close()
	s.wg.Wait()
	return err
}

type nlMessage struct {
	typ  uint16
	data []byte // after the netlink header
}

func nlAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// parseNetlink splits a datagram into netlink messages.
func parseNetlink(b []byte) ([]nlMessage, error) {
	var out []nlMessage
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return out, errors.New("natlab: malformed netlink message")
		}
		out = append(out, nlMessage{typ: binary.NativeEndian.Uint16(b[4:6]), data: b[unix.NLMSG_HDRLEN:l]})
		b = b[min(nlAlign(l), len(b)):]
	}
	return out, nil
}

// packetID returns the packet id of an NFQUEUE packet message.
func packetID(m nlMessage) (uint32, bool) {
	if m.typ != unix.NFNL_SUBSYS_QUEUE<<8|nfqMsgPacket || len(m.data) < 4 {
		return 0, false
	}
	attrs := m.data[4:] // after nfgenmsg
	for len(attrs) >= 4 {
		l := int(binary.NativeEndian.Uint16(attrs[0:2]))
		typ := binary.NativeEndian.Uint16(attrs[2:4]) & 0x3fff // drop nested/byte-order flags
		if l < 4 || l > len(attrs) {
			return 0, false
		}
		if typ == nfqaPacketHdr && l >= 4+4 {
			return binary.BigEndian.Uint32(attrs[4:8]), true
		}
		attrs = attrs[min(nlAlign(l), len(attrs)):]
	}
	return 0, false
}
