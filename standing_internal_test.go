package rendezvous

import (
	"testing"
	"time"

	"github.com/p2pos/rendezvous/nat/keepalive"
)

func TestKeepIdle(t *testing.T) {
	for _, tc := range []struct {
		name               string
		udpLower           time.Duration
		tcpLower, tcpUpper time.Duration
		want               time.Duration
		wantBasis          string
	}{
		{name: "nothing known", want: initialIdle, wantBasis: "initial"},
		{name: "udp only", udpLower: 107 * time.Second, want: 85600 * time.Millisecond, wantBasis: "udp"},
		{name: "tcp beats udp", udpLower: 25 * time.Second, tcpLower: 15 * time.Minute, want: 12 * time.Minute, wantBasis: "tcp"},
		{name: "udp beats a short tcp proof", udpLower: 107 * time.Second, tcpLower: time.Minute, want: 85600 * time.Millisecond, wantBasis: "udp"},
		{name: "capped by an expiry", tcpLower: 60 * time.Minute, tcpUpper: 30 * time.Minute, want: 24 * time.Minute, wantBasis: "tcp"},
		{name: "never below the minimum", tcpLower: 2 * time.Second, want: keepalive.MinIdle, wantBasis: "tcp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &Node{tcpLower: tc.tcpLower, tcpUpper: tc.tcpUpper}
			if tc.udpLower > 0 {
				n.nat = &NATStatus{UDPTimeoutLower: tc.udpLower}
			}
			got, basis := n.keepIdle()
			if got != tc.want || basis != tc.wantBasis {
				t.Fatalf("keepIdle = %v (%s), want %v (%s)", got, basis, tc.want, tc.wantBasis)
			}
		})
	}
}
