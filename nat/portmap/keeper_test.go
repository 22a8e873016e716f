package portmap

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	logging "github.com/ipfs/go-log/v2"
)

// scriptedMapper answers mapPort from a script, then repeats its last
// entry, and records every call.
type scriptedMapper struct {
	mu      sync.Mutex
	script  []error // nil: grant
	life    time.Duration
	calls   []time.Time
	prevs   []Mapping
	deleted []Mapping
	port    uint16
}

func (s *scriptedMapper) mapPort(_ context.Context, req request, prev Mapping) (Mapping, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, time.Now())
	s.prevs = append(s.prevs, prev)
	err := s.script[0]
	if len(s.script) > 1 {
		s.script = s.script[1:]
	}
	if err != nil {
		return Mapping{}, err
	}
	s.port++
	return Mapping{Protocol: PCP, Transport: req.transport, InternalPort: req.internalPort,
		External: netip.AddrPortFrom(testExternal, s.port), Lifetime: s.life, Obtained: time.Now()}, nil
}

func (s *scriptedMapper) Delete(_ context.Context, m Mapping) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleted = append(s.deleted, m)
	return nil
}

type change struct {
	m   Mapping
	err error
	at  time.Time
}

func startKeeper(m mapper, life time.Duration) (*Keeper, *[]change) {
	var changes []change
	req, _ := checkRequest("udp", 4000, life)
	k := newKeeper(m, req, func(m Mapping, err error) {
		changes = append(changes, change{m, err, time.Now()})
	}, time.Now, logging.Logger("test"), time.Second, 4*time.Second)
	return k, &changes
}

func TestKeeperRenewsAtHalfLifetime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		sm := &scriptedMapper{script: []error{nil}, life: 10 * time.Second}
		k, changes := startKeeper(sm, time.Hour)
		time.Sleep(12 * time.Second) // fake time: attempts at 0, 5 and 10 s
		synctest.Wait()
		m, ok := k.Mapping()
		if !ok || m.External.Port() != 3 {
			t.Errorf("Mapping() = %v, %v", m, ok)
		}
		if err := k.Close(); err != nil {
			t.Fatal(err)
		}
		if err := k.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if _, ok := k.Mapping(); ok {
			t.Error("a mapping after Close")
		}
		if len(sm.calls) != 3 {
			t.Fatalf("%d attempts, want 3", len(sm.calls))
		}
		for i, at := range sm.calls {
			if want := start.Add(time.Duration(i) * 5 * time.Second); !at.Equal(want) {
				t.Errorf("attempt %d at +%v, want +%v", i, at.Sub(start), want.Sub(start))
			}
		}
		if sm.prevs[0].Protocol != "" || sm.prevs[1].External.Port() != 1 || sm.prevs[2].External.Port() != 2 {
			t.Errorf("renewals did not pass the previous mapping: %v", sm.prevs)
		}
		if len(*changes) != 3 || (*changes)[2].err != nil || (*changes)[2].m.External.Port() != 3 {
			t.Errorf("changes %v", *changes)
		}
		if len(sm.deleted) != 1 || sm.deleted[0].External.Port() != 3 {
			t.Errorf("deleted %v, want the last mapping", sm.deleted)
		}
	})
}

func TestKeeperBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		refused := &ResultError{Protocol: PCP, Code: 8}
		sm := &scriptedMapper{script: []error{refused, refused, refused, refused, nil}, life: time.Hour}
		k, changes := startKeeper(sm, time.Hour)
		time.Sleep(20 * time.Second)
		synctest.Wait()
		// Attempts at 0, 1, 3, 7 (backoff 1, 2, 4), then 11 (capped at 4).
		want := []time.Duration{0, 1, 3, 7, 11}
		if len(sm.calls) != len(want) {
			t.Fatalf("%d attempts, want %d", len(sm.calls), len(want))
		}
		for i, at := range sm.calls {
			if at.Sub(start) != want[i]*time.Second {
				t.Errorf("attempt %d at +%v, want +%v", i, at.Sub(start), want[i]*time.Second)
			}
		}
		for i, c := range *changes {
			if (i < 4) != (c.err != nil) || (i < 4 && !errors.Is(c.err, refused)) {
				t.Errorf("change %d: %v", i, c.err)
			}
		}
		if err := k.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestKeeperCloseBeforeMapping(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sm := &scriptedMapper{script: []error{ErrNotSupported}, life: time.Hour}
		k, _ := startKeeper(sm, time.Hour)
		synctest.Wait()
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				if err := k.Close(); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if len(sm.deleted) != 0 {
			t.Errorf("deleted %v without a mapping", sm.deleted)
		}
	})
}

// TestKeeperWithClient runs a Keeper against the loopback gateway.
func TestKeeperWithClient(t *testing.T) {
	t.Parallel()
	g := startFakeGW(t)
	g.set(func(g *fakeGW) { g.lifetimeCap = 2 })
	c := newTestClient(t, g, nil, WithProtocols(NATPMP))
	got := make(chan change, 16)
	k, err := c.Keep("udp", 4000, func(m Mapping, err error) { got <- change{m: m, err: err} })
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 { // obtained, then renewed after 1 s
		select {
		case ch := <-got:
			if ch.err != nil || ch.m.Lifetime != 2*time.Second {
				t.Fatalf("change %d: %v %v", i, ch.m, ch.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no change %d", i)
		}
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := g.mapped("udp/4000"); ok {
		t.Error("Close did not delete the mapping")
	}
}
