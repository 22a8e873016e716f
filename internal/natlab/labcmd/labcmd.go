// Package labcmd holds what the NAT lab's commands share: interrupt
// handling, the lab's preconditions, building the programs they run inside
// the lab, and writing results as JSON.
package labcmd

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/p2pos/rendezvous/internal/natlab"
)

// Main runs run with a context that ends on SIGINT or SIGTERM, so that the
// lab is removed on interrupt, and exits 1 with the error prefixed by name.
func Main(name string, run func(ctx context.Context) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// Workspace checks that the lab can run here, removes what earlier runs
// left behind, and returns a temporary directory for built programs and a
// function that removes it.
func Workspace(ctx context.Context, name string) (dir string, cleanup func(), err error) {
	if err := natlab.Check(); err != nil {
		return "", nil, err
	}
	if err := natlab.CleanStale(ctx); err != nil {
		return "", nil, err
	}
	dir, err = os.MkdirTemp("", "rendezvous-"+name+"-")
	if err != nil {
		return "", nil, err
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}

// Build builds the main package pkg of the module in the working directory
// into dir and returns the binary's path.
func Build(ctx context.Context, dir, pkg string) (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	return natlab.BuildCommand(ctx, wd, pkg, dir)
}

// WriteJSON writes v, indented, to path; an empty path writes nothing.
func WriteJSON(path string, v any) error {
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Clean(path), append(b, '\n'), 0o644)
}

// Logf returns a printf-style logger to stderr when verbose, else nil.
func Logf(verbose bool) func(format string, args ...any) {
	if !verbose {
		return nil
	}
	return func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
}
