package natlab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// The runner starts programs (the rendezvous command above all) inside lab
// hosts and reads the JSON lines they print. Processes are stopped by
// Proc.Stop, and in any case by Lab.Close, which kills whatever still runs in
// the lab's namespaces: a failed or interrupted run leaves nothing behind.

// Proc is a program running inside a lab host.
type Proc struct {
	host  *Host
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan []byte
	done  chan struct{}

	mu      sync.Mutex
	stderr  bytes.Buffer // guarded by mu; the last stderrLimit bytes
	waitErr error        // guarded by mu; set when done is closed
}

const (
	stderrLimit = 16 << 10
	maxLine     = 1 << 20
)

// Start runs name with args inside h's namespace. Each line the program
// prints on stdout is delivered by Next; stderr is kept for error messages.
func (h *Host) Start(ctx context.Context, name string, args ...string) (*Proc, error) {
	if h.lab.isClosed() {
		return nil, errClosed
	}
	cmd := h.Command(context.WithoutCancel(ctx), name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	p := &Proc{host: h, cmd: cmd, stdin: stdin, lines: make(chan []byte, maxQueued), done: make(chan struct{})}
	cmd.Stderr = (*tailWriter)(p)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("natlab: start %s in %s: %w", name, h.name, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), maxLine)
		for sc.Scan() {
			p.queue(append([]byte(nil), sc.Bytes()...))
		}
		io.Copy(io.Discard, stdout)
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(p.lines)
		close(p.done)
	}()
	return p, nil
}

type tailWriter Proc

func (w *tailWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stderr.Write(b)
	if extra := w.stderr.Len() - stderrLimit; extra > 0 {
		w.stderr.Next(extra)
	}
	return len(b), nil
}

// WriteLine writes line and a newline to the program's standard input.
func (p *Proc) WriteLine(line string) error {
	_, err := io.WriteString(p.stdin, line+"\n")
	return err
}

// Stderr returns the end of what the program wrote on stderr.
func (p *Proc) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// ErrExited is returned by Next once the program has exited and every line
// was read.
var ErrExited = errors.New("natlab: program exited")

// Next returns the next line the program printed. After the last line it
// returns an error wrapping ErrExited with the program's exit status and the
// end of its stderr.
func (p *Proc) Next(ctx context.Context) ([]byte, error) {
	select {
	case l, ok := <-p.lines:
		if ok {
			return l, nil
		}
		<-p.done
		p.mu.Lock()
		defer p.mu.Unlock()
		return nil, fmt.Errorf("%w (%v): %s", ErrExited, p.waitErr, lastLine(p.stderr.String()))
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// maxQueued is how many unread output lines a Proc keeps.
const maxQueued = 1024

// queue keeps l for Next. A program never waits on its output: when nobody
// reads it, the oldest lines are dropped.
func (p *Proc) queue(l []byte) {
	for {
		select {
		case p.lines <- l:
			return
		default:
		}
		select {
		case <-p.lines:
		default:
		}
	}
}

// NextJSON returns the next line that decodes as a JSON object into v,
// skipping lines that do not.
func (p *Proc) NextJSON(ctx context.Context, v any) error {
	for {
		l, err := p.Next(ctx)
		if err != nil {
			return err
		}
		if len(l) > 0 && l[0] == '{' && json.Unmarshal(l, v) == nil {
			return nil
		}
	}
}

// Wait waits for the program to exit and returns its exit error.
func (p *Proc) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.waitErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop asks the program to stop (SIGTERM), waits up to grace, then kills it.
// Lines not read yet are dropped. It is safe to call more than once.
func (p *Proc) Stop(grace time.Duration) error {
	go func() { // keep the reader moving so the program can exit
		for range p.lines {
		}
	}()
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("natlab: %s in %s did not stop within %v; killed", p.cmd.Args[len(p.cmd.Args)-1], p.host.name, grace)
}

func lastLine(s string) string {
	s = string(bytes.TrimSpace([]byte(s)))
	if i := bytes.LastIndexByte([]byte(s), '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// BuildCommand builds the main package at pkg (for example
// "./cmd/rendezvous") of the module in moduleDir into dir and returns the
// binary's path.
func BuildCommand(ctx context.Context, moduleDir, pkg, dir string) (string, error) {
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("natlab: go build %s: %w: %s", pkg, err, b)
	}
	return out, nil
}
