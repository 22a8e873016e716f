package natlab

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// rootState is what the lab must never touch in the root namespace.
func rootState(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var b strings.Builder
	for _, args := range [][]string{{"ip", "-o", "link", "show"}, {"ip", "-o", "addr", "show"}, {"ip", "route", "show", "table", "all"}, {"nft", "list", "ruleset"}} {
		out, err := run(ctx, "", args[0], args[1:]...)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(out)
	}
	return b.String()
}

// TestCloseRemovesEverything builds a lab with every moving part, checks
// names and that the root namespace is untouched, closes it twice and
// checks that nothing is left.
func TestCloseRemovesEverything(t *testing.T) {
	t.Parallel()
	Require(t)
	before := rootState(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := New(ctx, Spec{
		Routers: []RouterSpec{{Name: "u", Kind: UPnP}, {Name: "c", Kind: CGNAT}},
		Hosts:   []HostSpec{{Name: "hu", Router: "u"}, {Name: "hc", Router: "c"}, {Name: "p"}},
	}, WithLogf(t.Logf))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })

	nss, err := l.Namespaces()
	if err != nil {
		t.Fatal(err)
	}
	// internet, stun, u, c, c/home, 3 hosts
	if len(nss) != 8 {
		t.Errorf("namespaces %v, want 8", nss)
	}
	for _, ns := range nss {
		if !strings.HasPrefix(ns, l.Prefix()+"-") {
			t.Errorf("namespace %s lacks the run prefix %s", ns, l.Prefix())
		}
		out, err := run(ctx, "", "ip", "-n", ns, "-o", "link", "show")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(line)
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if name == "lo" {
				continue
			}
			if !strings.HasPrefix(name, l.Prefix()) || len(name) > 15 {
				t.Errorf("link %q in %s: want the run prefix and at most 15 characters", name, ns)
			}
		}
	}
	upnpd := l.Router("u").upnp
	if upnpd == nil {
		t.Fatal("no miniupnpd on the UPnP router")
	}
	if during := rootState(t); during != before {
		t.Errorf("the root namespace changed while the lab runs:\nbefore:\n%s\nduring:\n%s", before, during)
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if left, _ := namespaces(l.Prefix()); len(left) > 0 {
		t.Errorf("namespaces left after Close: %v", left)
	}
	if _, err := os.Stat(filepath.Join(stateDir, l.Prefix())); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("state directory left after Close: %v", err)
	}
	select {
	case <-upnpd.exited:
	default:
		t.Error("miniupnpd still running after Close")
	}
	if after := rootState(t); after != before {
		t.Errorf("the root namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if _, err := l.Host("p").ListenUDP(netip.AddrPort{}); err == nil {
		t.Error("ListenUDP after Close succeeded")
	}
}

// TestCleanStale plants the leftovers of a run whose owner is dead (a
// namespace with a process inside, and a state directory) and of a run
// without an owner record, and checks that CleanStale removes both and
// kills the process, while a live lab is left alone.
func TestCleanStale(t *testing.T) {
	t.Parallel()
	Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	live := newLab(t, Spec{Hosts: []HostSpec{{Name: "a"}}})

	// A process that has exited: its pid is the dead owner.
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	dead := owner{pid: gone.ProcessState.Pid(), start: 1}

	withOwner, err := newPrefix()
	if err != nil {
		t.Fatal(err)
	}
	withoutOwner, err := newPrefix()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		removeRun(context.Background(), withOwner)
		removeRun(context.Background(), withoutOwner)
	})
	if _, err := claim(withOwner, dead); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{withOwner + "-x", withOwner + "-y", withoutOwner + "-x"} {
		nsAddMu.Lock()
		err := ip(ctx, "netns", "add", ns)
		nsAddMu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
	}
	// The process says "in" once it runs inside the namespace.
	sleeper := exec.Command("ip", "netns", "exec", withOwner+"-x", "sh", "-c", "echo in; exec sleep 60")
	stdout, err := sleeper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	pipe := stdout.(*os.File)
	pipe.SetReadDeadline(time.Now().Add(10 * time.Second))
	line := make([]byte, 3)
	_, rerr := io.ReadFull(pipe, line)
	pipe.SetReadDeadline(time.Time{})
	exited := make(chan error, 1)
	go func() {
		io.Copy(io.Discard, pipe) // ends when the process does
		exited <- sleeper.Wait()
	}()
	t.Cleanup(func() {
		sleeper.Process.Kill()
		<-exited
	})
	if rerr != nil || string(line) != "in\n" {
		t.Fatalf("process in the stale namespace did not start: %q %v", line, rerr)
	}

	if err := CleanStale(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{withOwner, withoutOwner} {
		if left, _ := namespaces(p); len(left) > 0 {
			t.Errorf("stale namespaces left: %v", left)
		}
	}
	if _, err := os.Stat(filepath.Join(stateDir, withOwner)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale state directory left: %v", err)
	}
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err == nil {
			t.Error("the process in the stale namespace exited cleanly, want killed")
		}
	case <-timer.C:
		t.Error("the process in the stale namespace survived")
	}
	if nss, _ := live.Namespaces(); len(nss) != 2 {
		t.Errorf("live lab namespaces %v, want internet and a", nss)
	}
}

// TestInNamespace checks that sockets land in the namespace, that errors
// come back, and that no thread is left in a lab namespace.
func TestInNamespace(t *testing.T) {
	t.Parallel()
	l := newLab(t, Spec{Hosts: []HostSpec{{Name: "a"}}})
	a := l.Host("a")
	rootNS := threadNS(t)
	var labNS unix.Stat_t
	if err := unix.Stat(filepath.Join(netnsDir, a.Namespace()), &labNS); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := a.Do(func() error {
				if got := threadNS(t); got != labNS.Ino {
					t.Errorf("inside Do: namespace inode %d, want %d", got, labNS.Ino)
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()

	sentinel := errors.New("sentinel")
	if err := a.Do(func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Errorf("Do returned %v, want fn's error", err)
	}
	if err := inNamespace(l.Prefix()+"-nonexistent", func() error { return nil }); err == nil {
		t.Error("entering a missing namespace succeeded")
	}

	// Every thread the scheduler hands out is back in the root namespace.
	for range 4 * runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got := threadNS(t); got != rootNS {
				t.Errorf("a thread is in namespace %d, want the root's %d", got, rootNS)
			}
		}()
	}
	wg.Wait()
}

// threadNS returns the inode of the calling thread's network namespace.
func threadNS(t *testing.T) uint64 {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		t.Error(err)
	}
	return st.Ino
}

// TestNewFailureLeavesNothing makes New fail at various points of the build
// by giving it short deadlines, and checks that a failed New leaves no
// namespace, process or state directory behind. It does not run in
// parallel, so every run it sees appear is its own.
func TestNewFailureLeavesNothing(t *testing.T) {
	Require(t)
	before, err := runPrefixes()
	if err != nil {
		t.Fatal(err)
	}
	spec := Spec{
		Routers: []RouterSpec{{Name: "u", Kind: UPnP}, {Name: "c", Kind: CGNAT}, {Name: "f", Kind: FullCone, Behind: "c"}},
		Hosts:   []HostSpec{{Name: "hu", Router: "u"}, {Name: "hf", Router: "f"}, {Name: "p"}},
	}
	failed := 0
	for _, d := range []time.Duration{time.Millisecond, 10 * time.Millisecond, 30 * time.Millisecond, 60 * time.Millisecond, 100 * time.Millisecond, 150 * time.Millisecond, 250 * time.Millisecond, 400 * time.Millisecond, 700 * time.Millisecond} {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		l, err := New(ctx, spec)
		cancel()
		if err == nil {
			if err := l.Close(); err != nil {
				t.Error(err)
			}
			continue
		}
		failed++
		after, err := runPrefixes()
		if err != nil {
			t.Fatal(err)
		}
		for p := range after {
			// Runs of other live processes (another package's tests, say)
			// are not ours to judge.
			if o, err := ownerOf(p); err == nil && o.pid != os.Getpid() && o.alive() {
				continue
			}
			if !before[p] {
				nss, _ := namespaces(p)
				t.Errorf("New failed after %v but left run %s behind: namespaces %v", d, p, nss)
			}
		}
	}
	if failed == 0 {
		t.Skip("New never failed: this machine builds labs faster than the deadlines")
	}
	t.Logf("%d builds failed midway and left nothing", failed)
}
