//go:build !linux

package keepalive

import (
	"errors"
	"syscall"
	"time"
)

// readTCPState needs Linux's TCP_INFO; elsewhere probes are not counted.
func readTCPState(syscall.RawConn, time.Time) (tcpState, error) {
	return tcpState{}, errors.ErrUnsupported
}
