package rendezvous_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/p2pos/rendezvous"
)

// TestServices: a node handles a service; another opens streams to it
// (through a relay: the shared network does not punch), and they behave
// as net.Conns: data both ways, half-close, deadlines.
func TestServices(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	tn := sharedNetwork(t)
	a, b := tn.Private[0], tn.Private[1]
	// b echoes what it reads, then closes its side.
	err := b.Handle("echo/1", func(s *rendezvous.Stream) {
		defer s.Close()
		io.Copy(s, s)
		s.CloseWrite()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Unhandle("echo/1")
	if err := b.Handle("echo/1", func(*rendezvous.Stream) {}); !errors.Is(err, rendezvous.ErrServiceTaken) {
		t.Fatalf("second Handle: %v", err)
	}
	for _, bad := range []string{"echo", "Echo/1", "echo/x", "/echo/1", "echo/1/2", ""} {
		if err := b.Handle(bad, func(*rendezvous.Stream) {}); !errors.Is(err, rendezvous.ErrBadService) {
			t.Errorf("Handle(%q): %v", bad, err)
		}
	}

	s, err := a.Open(ctx, b.ID(), "echo/1")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Peer() != b.ID() || s.Service() != "echo/1" || !s.Relayed() {
		t.Fatalf("stream to %s, service %s, relayed %v", s.Peer(), s.Service(), s.Relayed())
	}
	if s.RemoteAddr().Network() != "p2p" || !bytes.Contains([]byte(s.RemoteAddr().String()), []byte(b.ID().String())) {
		t.Fatalf("remote addr %s", s.RemoteAddr())
	}
	data := make([]byte, 64<<10) // within a relay's 128 KiB
	rand.Read(data)
	errc := make(chan error, 1)
	go func() {
		_, err := s.Write(data)
		if err == nil {
			err = s.CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("echoed %d bytes, sent %d", len(got), len(data))
	}

	// A read deadline in the past fails the read at once.
	s2, err := a.Open(ctx, b.ID(), "echo/1")
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	s2.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := s2.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v", err)
	}

	// A service the peer does not handle.
	if _, err := a.Open(ctx, b.ID(), "nothing/1"); !errors.Is(err, rendezvous.ErrNoService) {
		t.Fatalf("open of an unhandled service: %v", err)
	}
}
