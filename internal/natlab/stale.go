package natlab

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// stateDir holds one directory per lab run, named after the run's prefix.
// Its "owner" file records the owning process, so that a later run can tell
// leftovers of a dead process from a lab that is still in use.
const stateDir = "/run/rendezvous-natlab"

const (
	prefixLead  = "rdvl"
	prefixChars = "abcdefghijklmnopqrstuvwxyz234567" // base32, lower case
	prefixLen   = len(prefixLead) + 5
)

var (
	prefixRE  = regexp.MustCompile(`^` + prefixLead + `[a-z2-7]{5}$`)
	nsNameRE  = regexp.MustCompile(`^(` + prefixLead + `[a-z2-7]{5})-`)
	ownerFile = "owner"
)

// newPrefix returns a fresh random run prefix such as "rdvlk3x9q".
func newPrefix() (string, error) {
	var b [5]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	var sb strings.Builder
	sb.WriteString(prefixLead)
	for _, c := range b {
		sb.WriteByte(prefixChars[int(c)%len(prefixChars)])
	}
	return sb.String(), nil
}

// owner identifies a process across pid reuse.
type owner struct {
	pid   int
	start uint64 // start time in clock ticks since boot, /proc/<pid>/stat field 22
}

func (o owner) String() string { return fmt.Sprintf("pid %d start %d\n", o.pid, o.start) }

func parseOwner(s string) (owner, error) {
	var o owner
	if _, err := fmt.Sscanf(s, "pid %d start %d", &o.pid, &o.start); err != nil {
		return owner{}, fmt.Errorf("natlab: bad owner record %q: %w", s, err)
	}
	return o, nil
}

// procStart returns the start time of a live process.
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	// The command name may hold spaces and parentheses: fields start after
	// the last ')'. Field 3 (state) is then the first.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("natlab: malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	const startField = 22 - 3
	if len(f) <= startField {
		return 0, fmt.Errorf("natlab: short /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[startField], 10, 64)
}

func self() (owner, error) {
	pid := os.Getpid()
	start, err := procStart(pid)
	if err != nil {
		return owner{}, err
	}
	return owner{pid: pid, start: start}, nil
}

func (o owner) alive() bool {
	start, err := procStart(o.pid)
	return err == nil && start == o.start
}

// claim creates the state directory of a prefix with its owner record, in
// one rename, so that no other process ever sees it without an owner.
func claim(prefix string, o owner) (dir string, err error) {
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(stateDir, "."+prefix+".")
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.WriteFile(filepath.Join(tmp, ownerFile), []byte(o.String()), 0o644); err != nil {
		return "", err
	}
	dir = filepath.Join(stateDir, prefix)
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	return dir, nil
}

// ownerOf reads the owner record of a prefix.
func ownerOf(prefix string) (owner, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, prefix, ownerFile))
	if err != nil {
		return owner{}, err
	}
	return parseOwner(string(b))
}

// namespaces lists the named network namespaces that start with prefix+"-".
func namespaces(prefix string) ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// runPrefixes lists the prefixes of every lab run that left a namespace or
// a state directory behind.
func runPrefixes() (map[string]bool, error) {
	found := map[string]bool{}
	ents, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, e := range ents {
		if m := nsNameRE.FindStringSubmatch(e.Name()); m != nil {
			found[m[1]] = true
		}
	}
	ents, err = os.ReadDir(stateDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, e := range ents {
		if prefixRE.MatchString(e.Name()) {
			found[e.Name()] = true
		}
	}
	return found, nil
}

// CleanStale removes what earlier lab runs left behind: for every run whose
// owning process is gone (or whose owner record is missing), it kills the
// processes inside the run's namespaces, deletes the namespaces (which
// deletes their links) and removes the run's state directory. Labs of live
// processes, this one included, are left alone. New calls it first.
func CleanStale(ctx context.Context) error {
	prefixes, err := runPrefixes()
	if err != nil {
		return fmt.Errorf("natlab: list lab runs: %w", err)
	}
	var errs []error
	for p := range prefixes {
		if o, err := ownerOf(p); err == nil && o.alive() {
			continue
		}
		if err := removeRun(ctx, p); err != nil {
			errs = append(errs, err)
		}
	}
	// claim's temporary directories live for microseconds; older ones are
	// from a process that died inside claim.
	ents, _ := os.ReadDir(stateDir)
	for _, e := range ents {
		if info, err := e.Info(); err == nil && strings.HasPrefix(e.Name(), "."+prefixLead) && time.Since(info.ModTime()) > time.Minute {
			errs = append(errs, os.RemoveAll(filepath.Join(stateDir, e.Name())))
		}
	}
	return errors.Join(errs...)
}

// removeRun deletes every namespace of a run, the processes in them, and the
// run's state directory.
func removeRun(ctx context.Context, prefix string) error {
	nss, err := namespaces(prefix)
	if err != nil {
		return err
	}
	errs := []error{killNamespaceProcs(ctx, nss)}
	for _, ns := range nss {
		errs = append(errs, deleteNamespace(ctx, ns))
	}
	if err := os.RemoveAll(filepath.Join(stateDir, prefix)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func deleteNamespace(ctx context.Context, ns string) error {
	if _, err := os.Stat(filepath.Join(netnsDir, ns)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return ip(ctx, "netns", "del", ns)
}

// killNamespaceProcs kills every process whose network namespace is one of
// nss and waits (bounded) for each to exit.
func killNamespaceProcs(ctx context.Context, nss []string) error {
	var targets []unix.Stat_t
	for _, ns := range nss {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(netnsDir, ns), &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return fmt.Errorf("natlab: stat namespace %s: %w", ns, err)
		}
		targets = append(targets, st)
	}
	if len(targets) == 0 {
		return nil
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := killIfIn(ctx, pid, targets); err != nil {
			errs = append(errs, fmt.Errorf("natlab: kill pid %d: %w", pid, err))
		}
	}
	return errors.Join(errs...)
}

// killIfIn kills pid if its network namespace is one of nss, through a
// pidfd so that a reused pid is never signalled.
func killIfIn(ctx context.Context, pid int, nss []unix.Stat_t) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil // gone
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
		return nil // gone, or a kernel thread
	}
	if !slices.ContainsFunc(nss, func(ns unix.Stat_t) bool { return st.Dev == ns.Dev && st.Ino == ns.Ino }) {
		return nil
	}
	// The pidfd was opened before the check, so it still names the process
	// that was checked.
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return err
	}
	return waitPidfd(ctx, fd, 5*time.Second)
}

// waitPidfd waits until the process behind a pidfd has exited.
func waitPidfd(ctx context.Context, fd int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return errors.New("still running after SIGKILL")
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
	}
}
