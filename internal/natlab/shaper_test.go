package natlab

import (
	"net/netip"
	"testing"
	"time"
)

// TestInternetDelay checks that every packet crossing the internet is
// delayed: a round trip through a router to a public reflector crosses it
// twice.
func TestInternetDelay(t *testing.T) {
	t.Parallel()
	const delay = 40 * time.Millisecond
	l := newLab(t, Spec{
		Internet: Internet{Delay: delay},
		Routers:  []RouterSpec{{Name: "r", Kind: PortRestricted}},
		Hosts:    []HostSpec{{Name: "h", Router: "r"}, {Name: "s1"}, {Name: "p"}},
	})
	refl := startReflector(t, l.Host("s1"))
	for _, h := range []*Host{l.Host("h"), l.Host("p")} {
		c, err := h.ListenUDP(netip.AddrPort{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var worst, best time.Duration = 0, time.Hour
		for range 10 {
			start := time.Now()
			if _, ok := discover(t, c, refl.addr(0)); !ok {
				t.Fatalf("%s: no answer", h.Name())
			}
			rtt := time.Since(start)
			worst, best = max(worst, rtt), min(best, rtt)
		}
		t.Logf("%s: round trips %v to %v with a one-way delay of %v", h.Name(), best, worst, delay)
		if best < 2*delay {
			t.Errorf("%s: round trip %v, want at least %v", h.Name(), best, 2*delay)
		}
		if worst > 2*delay+500*time.Millisecond {
			t.Errorf("%s: round trip %v, want about %v", h.Name(), worst, 2*delay)
		}
	}
}

// TestInternetLoss checks that about the configured share of packets is
// lost on each crossing.
func TestInternetLoss(t *testing.T) {
	t.Parallel()
	const loss = 0.3
	l := newLab(t, Spec{
		Internet: Internet{Loss: loss},
		Hosts:    []HostSpec{{Name: "a"}, {Name: "b"}},
	})
	b := l.Host("b")
	rx, err := b.ListenUDP(netip.AddrPortFrom(b.Addr(), 0))
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	tx, err := l.Host("a").DialUDP(netip.AddrPort{}, netip.MustParseAddrPort(rx.LocalAddr().String()))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	const n = 400
	for i := range n {
		if _, err := tx.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	got := 0
	buf := make([]byte, 16)
	rx.SetReadDeadline(time.Now().Add(time.Second))
	for {
		if _, err := rx.Read(buf); err != nil {
			break
		}
		got++
	}
	// Binomial(400, 0.7): mean 280, sd about 9.2; allow 5 sd.
	t.Logf("%d of %d packets arrived with loss %v", got, n, loss)
	if got < 234 || got > 326 {
		t.Errorf("%d of %d packets arrived, want about %d", got, n, int(n*(1-loss)))
	}
}
