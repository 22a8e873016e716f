package keepalive

import (
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// readTCPState reads the kernel's TCP_INFO of rc, taken at now.
func readTCPState(rc syscall.RawConn, now time.Time) (tcpState, error) {
	var info *unix.TCPInfo
	var serr error
	if err := rc.Control(func(fd uintptr) {
		info, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		return tcpState{}, err
	}
	if serr != nil {
		return tcpState{}, serr
	}
	ms := func(v uint32) time.Duration { return time.Duration(v) * time.Millisecond }
	return tcpState{
		lastData:   now.Add(-min(ms(info.Last_data_sent), ms(info.Last_data_recv))),
		lastAck:    now.Add(-ms(info.Last_ack_recv)),
		rtt:        time.Duration(info.Rtt) * time.Microsecond,
		unanswered: int(info.Probes),
	}, nil
}
