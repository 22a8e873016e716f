package natlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns` keeps its named namespaces.
const netnsDir = "/run/netns"

// cmdTimeout bounds every helper command the lab runs.
const cmdTimeout = 20 * time.Second

// inNamespace runs fn on an OS thread that is switched into the named network
// namespace for the duration of the call. Sockets fn creates belong to that
// namespace for their whole life, whichever thread uses them later.
//
// fn must do its work synchronously: goroutines it starts run on other
// threads, in the caller's namespace.
//
// The thread is switched back before it is released to the scheduler. If
// switching back fails, the thread stays locked to its goroutine, which then
// exits, so the runtime destroys the thread instead of reusing it in the
// wrong namespace.
func inNamespace(ns string, fn func() error) error {
	target, err := unix.Open(filepath.Join(netnsDir, ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("natlab: open namespace %s: %w", ns, err)
	}
	defer unix.Close(target)

	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("natlab: open current namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			// setns failed, so the thread is where it was.
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("natlab: enter namespace %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// Keep the thread locked: it dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("natlab: leave namespace %s: %w", ns, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// run runs a helper program and returns its standard output. The error
// carries the command line and whatever the program printed.
func run(ctx context.Context, stdin string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String() + " " + stdout.String())
		return stdout.String(), fmt.Errorf("natlab: %s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return stdout.String(), nil
}

// ip runs `ip args...`.
func ip(ctx context.Context, args ...string) error {
	_, err := run(ctx, "", "ip", args...)
	return err
}

// nsExec runs a program inside a namespace with `ip netns exec`.
func nsExec(ctx context.Context, ns, stdin string, name string, args ...string) (string, error) {
	return run(ctx, stdin, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// sysctl sets keys (k=v) inside a namespace. Missing keys are errors unless
// optional is set.
func sysctl(ctx context.Context, ns string, optional bool, kv ...string) error {
	args := []string{"-q", "-w"}
	if optional {
		args = append(args, "-e")
	}
	_, err := nsExec(ctx, ns, "", "sysctl", append(args, kv...)...)
	return err
}

// sysctlRead reads an integer sysctl inside a namespace.
func sysctlRead(ctx context.Context, ns, key string) (int, error) {
	out, err := nsExec(ctx, ns, "", "sysctl", "-n", key)
	if err != nil {
		return 0, err
	}
	var v int
	if _, err := fmt.Sscan(strings.TrimSpace(out), &v); err != nil {
		return 0, fmt.Errorf("natlab: sysctl %s: %q: %w", key, out, err)
	}
	return v, nil
}

// nft loads a ruleset into a namespace.
func nft(ctx context.Context, ns, ruleset string) error {
	_, err := nsExec(ctx, ns, ruleset, "nft", "-f", "-")
	return err
}
