package rendezvous

import (
	"context"
	"net"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2pos/rendezvous/nat"
	"github.com/p2pos/rendezvous/nat/tcpprobe"
)

// A node that is not public proves how long its router keeps an idle TCP
// mapping: it holds idle TCP connections to the hold server of one of its
// relays, all at once, for each of tcpprobe.DefaultHolds (2 min to 2 h).
// Each hold that survives lets the standing connections idle longer; the
// first that expires caps the idle time. The measurement starts once the
// node holds a relay over TCP, and again after its reachability changes.

// startTCPMeasure starts the TCP lifetime measurement through relay if none
// ran since the last reset. It is called by tend.
func (n *Node) startTCPMeasure(relay peer.ID) {
	n.mu.Lock()
	if n.tcpStarted || n.closed() {
		n.mu.Unlock()
		return
	}
	n.tcpStarted = true
	n.keep.TCPMeasuring = true
	ctx, cancel := context.WithCancel(n.ctx)
	n.tcpCancel = cancel
	n.mu.Unlock()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.measureTCP(ctx, relay)
	}()
}

// resetTCPMeasure forgets what was proven (the network changed) and stops
// a running measurement.
func (n *Node) resetTCPMeasure() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.tcpCancel != nil {
		n.tcpCancel()
		n.tcpCancel = nil
	}
	n.tcpStarted = false
	n.tcpLower, n.tcpUpper = 0, 0
	n.keep.TCPMeasuring = false
}

func (n *Node) measureTCP(ctx context.Context, relay peer.ID) {
	defer func() {
		n.mu.Lock()
		n.keep.TCPMeasuring = false
		n.mu.Unlock()
	}()
	server, err := nat.AskHoldServer(ctx, n.h, relay)
	if err != nil {
		n.log.Debugw("TCP lifetime: no hold server", "relay", relay, "error", err)
		return
	}
	var d net.Dialer
	progress := func(r tcpprobe.Result) {
		n.mu.Lock()
		switch r.Outcome {
		case tcpprobe.Survived:
			n.tcpLower = max(n.tcpLower, r.Hold)
		case tcpprobe.Expired:
			if n.tcpUpper == 0 || r.Hold < n.tcpUpper {
				n.tcpUpper = r.Hold
			}
		}
		n.mu.Unlock()
		n.log.Debugw("TCP lifetime", "hold", r.Hold, "outcome", r.Outcome)
		n.emit(Event{Type: EventKeepAlive, KeepAlive: n.keepAliveStatus()})
	}
	_, err = tcpprobe.Prove(ctx, d.DialContext, server, n.s.tcpHolds, tcpprobe.WithProgress(progress))
	if err != nil && ctx.Err() == nil {
		n.log.Debugw("TCP lifetime", "error", err)
	}
}
