// Command rendezvous runs and inspects nodes of a rendezvous network: peers
// that find each other by ID through a DHT of signed address records and
// connect across NATs, directly or through a relay.
//
// Usage:
//
//	rendezvous <command> [flags]
//
// Run "rendezvous help" for the list of commands and
// "rendezvous <command> --help" for the flags of one.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1 // the command ran and failed
	exitUsage = 2 // the command line is wrong
)

// A command is one subcommand of the tool. Its run function owns the whole
// command: it parses args, writes results to stdout and errors to stderr, and
// returns the process exit code.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

// commands lists the subcommands in the order help shows them.
func commands() []command {
	return []command{
		{"node", "run a node until interrupted", cmdNode},
		{"lookup", "find a peer's signed address record by peer ID", cmdLookup},
		{"connect", "connect to a peer by ID and show the path taken", cmdConnect},
		{"netcheck", "report reachability, NAT type, port mapping and UDP timeout", cmdNetcheck},
		{"demo", "run a small network on loopback and show it at work", cmdDemo},
		{"bench", "measure records, lookups and publishes on a loopback network", cmdBench},
	}
}

// run runs the command named by args[0] and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printUsage(stderr)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		if name == "help" && len(rest) > 0 {
			// "rendezvous help lookup" is "rendezvous lookup --help".
			if _, ok := findCommand(rest[0]); ok {
				return run(ctx, []string{rest[0], "--help"}, stdout, stderr)
			}
			fmt.Fprintf(stderr, "rendezvous: help: unknown command %q\n", rest[0])
			return exitUsage
		}
		printUsage(stdout)
		return exitOK
	}
	cmd, ok := findCommand(name)
	if !ok {
		fmt.Fprintf(stderr, "rendezvous: unknown command %q\nRun 'rendezvous help' for the list of commands.\n", name)
		return exitUsage
	}
	return cmd.run(ctx, rest, stdout, stderr)
}

func findCommand(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: rendezvous <command> [flags]

rendezvous finds peers by their ID through a Kademlia DHT of signed address
records, and connects to them across NATs: directly when it can, through a
public peer acting as a relay when it must.

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Run 'rendezvous <command> --help' for the flags of a command.

Nodes started by node, lookup and connect join the network through the peers
given with --bootstrap, or else through those in $`+envBootstrap+`.
`)
}
