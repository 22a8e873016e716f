package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	logging "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2pos/rendezvous"
	"github.com/p2pos/rendezvous/dht"
	"github.com/p2pos/rendezvous/scope"
)

// envBootstrap names the environment variable that holds the default
// bootstrap addresses, comma-separated like --bootstrap.
const envBootstrap = "RENDEZVOUS_BOOTSTRAP"

// defaultTimeout bounds lookup and connect unless --timeout says otherwise.
const defaultTimeout = 30 * time.Second

// usageError is a mistake on the command line: it exits with exitUsage.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// exitCode reports err on stderr as "rendezvous: <cmd>: <err>" and returns the
// exit code it calls for. A nil err and a request for help exit 0.
func exitCode(stderr io.Writer, cmd string, err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	fmt.Fprintf(stderr, "rendezvous: %s: %s\n", cmd, strings.TrimPrefix(err.Error(), "rendezvous: "))
	if errors.As(err, new(usageError)) {
		fmt.Fprintf(stderr, "Run 'rendezvous %s --help' for usage.\n", cmd)
		return exitUsage
	}
	return exitFail
}

// newFlagSet returns a flag set for cmd whose --help output starts with the
// synopsis (the arguments after the command name) and the description.
func newFlagSet(cmd, synopsis, description string) *flag.FlagSet {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: rendezvous %s %s\n\n%s\n", cmd, synopsis, strings.TrimSpace(description))
		fmt.Fprintf(w, "\nFlags:\n")
		printFlags(w, fs)
	}
	return fs
}

// printFlags lists the flags of fs the way they are usually typed: --name.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		dashes := "--"
		if len(f.Name) == 1 {
			dashes = "-"
		}
		line := "  " + dashes + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintf(w, "%s\n    \t%s", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}

// parseArgs parses args with fs, allowing flags before and after the
// positional arguments, which it returns. On --help it writes the usage to
// stdout and returns flag.ErrHelp; other mistakes come back as a usageError.
func parseArgs(fs *flag.FlagSet, args []string, stdout io.Writer) ([]string, error) {
	var help bytes.Buffer
	fs.SetOutput(&help)
	var positional []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			stdout.Write(help.Bytes())
			return nil, err
		}
		if err != nil {
			return nil, usageError{err}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		// The parser stops at the first argument that is not a flag, and
		// after a "--", from which on everything is positional.
		if i := len(args) - len(rest) - 1; i >= 0 && args[i] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// nodeFlags are the flags of every command that starts a node.
type nodeFlags struct {
	keyFile      string
	dataDir      string
	listen       string
	bootstrap    string
	publicRanges string
	mode         string
	noPortMap    bool
	natTimeouts  string
	tcpHolds     string
	verbose      bool
	noHolePunch  bool
	dataRelay    string
}

// register adds the node flags to fs; mode is the default of --mode.
func (nf *nodeFlags) register(fs *flag.FlagSet, mode string) {
	fs.StringVar(&nf.keyFile, "key", "", "load the identity key (Ed25519) from `FILE`, or create it there with mode 0600;\nwithout --key or --data-dir the node gets a new identity")
	fs.StringVar(&nf.dataDir, "data-dir", "", "keep the identity, record sequence number and served records in `DIR`")
	fs.StringVar(&nf.listen, "listen", strings.Join(rendezvous.DefaultListenAddrs(), ","), "listen on `ADDRS`, comma-separated multiaddrs")
	fs.StringVar(&nf.bootstrap, "bootstrap", "", "join the network through the peers at `ADDRS`, comma-separated /.../p2p/<id>\nmultiaddrs (default $"+envBootstrap+")")
	fs.StringVar(&nf.publicRanges, "public-ranges", "", "address ranges (comma-separated `CIDRS`) that count as public besides the\ninternet's, for private networks: 10.0.0.0/8, or 127.0.0.0/8 on one machine")
	fs.StringVar(&nf.mode, "mode", mode, "reachability `MODE`: auto follows what the network says; public serves the DHT\nand relays; private is a DHT client reachable through relays")
	fs.BoolVar(&nf.noPortMap, "no-portmap", false, "in auto mode, do not ask the gateway for port mappings (UPnP, NAT-PMP, PCP)")
	fs.BoolVar(&nf.noHolePunch, "no-hole-punch", false, "do not punch holes: reach NATed peers through their relays, and be reached only\nthrough yours")
	fs.StringVar(&nf.natTimeouts, "nat-timeouts", "", "in auto mode behind a NAT, the idle `DURATIONS` (comma-separated) tried when\nmeasuring the NAT's UDP binding timeout (default 10s up to 7.5m, each 20% above the last)")
	fs.StringVar(&nf.tcpHolds, "tcp-holds", "", "when not public, the idle `DURATIONS` (comma-separated) a relay's hold server holds\nTCP connections for, to prove how long the router keeps an idle TCP mapping;\n\"none\" skips it (default 2m,4m,8m,15m,30m,60m,120m)")
	fs.StringVar(&nf.dataRelay, "data-relay", "", "while public, volunteer as a data relay with these `CAPS`: the longest a relayed\nconnection lasts, the most it carries each way, and how many one peer may have\nat once, for example 1h,64MiB,16")
	fs.BoolVar(&nf.verbose, "v", false, "log what the node does (debug level) to stderr")
}

// bootstrapAddrs returns the --bootstrap addresses, or those of the
// environment when the flag is not given.
func (nf *nodeFlags) bootstrapAddrs() []string {
	s := nf.bootstrap
	if s == "" {
		s = os.Getenv(envBootstrap)
	}
	return splitList(s)
}

// options turns the flags into node options. With needBootstrap, a missing
// bootstrap list is a usage error: the node would have no one to ask.
func (nf *nodeFlags) options(needBootstrap bool) ([]rendezvous.Option, error) {
	if nf.verbose {
		if err := setVerbose(); err != nil {
			return nil, err
		}
	}
	var opts []rendezvous.Option
	if nf.keyFile != "" {
		opts = append(opts, rendezvous.WithKeyFile(nf.keyFile))
	}
	if nf.dataDir != "" {
		opts = append(opts, rendezvous.WithDataDir(nf.dataDir))
	}
	listen := splitList(nf.listen)
	if len(listen) == 0 {
		return nil, usageErrorf("--listen: no address given")
	}
	opts = append(opts, rendezvous.WithListenAddrStrings(listen...))

	boot := nf.bootstrapAddrs()
	switch {
	case len(boot) > 0:
		peers, err := rendezvous.ParseBootstrap(boot...)
		if err != nil {
			return nil, usageError{err}
		}
		opts = append(opts, rendezvous.WithBootstrap(peers...))
	case needBootstrap:
		return nil, usageErrorf("no bootstrap peers: give --bootstrap or set $%s", envBootstrap)
	}

	sc, err := nf.scope()
	if err != nil {
		return nil, err
	}
	if len(sc.Ranges()) > 0 {
		opts = append(opts, rendezvous.WithPublicRanges(sc.Ranges()...))
	}

	if nf.noPortMap {
		opts = append(opts, rendezvous.WithoutPortMapping())
	}
	if nf.noHolePunch {
		opts = append(opts, rendezvous.WithoutHolePunching())
	}
	if nf.dataRelay != "" {
		caps, err := parseDataRelay(nf.dataRelay)
		if err != nil {
			return nil, usageErrorf("--data-relay: %v", err)
		}
		opts = append(opts, rendezvous.WithDataRelay(caps))
	}
	if list := splitList(nf.natTimeouts); len(list) > 0 {
		var ds []time.Duration
		for _, v := range list {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return nil, usageErrorf("--nat-timeouts: bad duration %q", v)
			}
			ds = append(ds, d)
		}
		opts = append(opts, rendezvous.WithTimeoutCandidates(ds...))
	}
	switch list := splitList(nf.tcpHolds); {
	case len(list) == 1 && list[0] == "none":
		opts = append(opts, rendezvous.WithTCPLifetimeHolds())
	case len(list) > 0:
		var ds []time.Duration
		for _, v := range list {
			d, err := time.ParseDuration(v)
			if err != nil || d < time.Second {
				return nil, usageErrorf("--tcp-holds: bad duration %q", v)
			}
			ds = append(ds, d)
		}
		opts = append(opts, rendezvous.WithTCPLifetimeHolds(ds...))
	}
	var r rendezvous.Reachability
	switch nf.mode {
	case "auto":
		r = rendezvous.ReachabilityUnknown
	case "public":
		r = rendezvous.ReachabilityPublic
	case "private":
		r = rendezvous.ReachabilityPrivate
	default:
		return nil, usageErrorf("--mode: want auto, public or private, not %q", nf.mode)
	}
	return append(opts, rendezvous.WithReachability(r)), nil
}

// parseDataRelay parses "DURATION,SIZE,CIRCUITS", SIZE in bytes with an
// optional KiB, MiB or GiB suffix.
func parseDataRelay(s string) (dht.DataRelay, error) {
	parts := strings.Split(s, ",")
	if len(parts) != 3 {
		return dht.DataRelay{}, fmt.Errorf("want DURATION,SIZE,CIRCUITS, not %q", s)
	}
	d, err := time.ParseDuration(strings.TrimSpace(parts[0]))
	if err != nil {
		return dht.DataRelay{}, fmt.Errorf("duration: %w", err)
	}
	size := strings.TrimSpace(parts[1])
	mult := int64(1)
	for suffix, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if strings.HasSuffix(size, suffix) {
			size, mult = strings.TrimSuffix(size, suffix), m
		}
	}
	n, err := strconv.ParseInt(size, 10, 64)
	if err != nil || n <= 0 || n > (1<<40)/mult {
		return dht.DataRelay{}, fmt.Errorf("bad size %q", parts[1])
	}
	c, err := strconv.Atoi(strings.TrimSpace(parts[2]))
	if err != nil {
		return dht.DataRelay{}, fmt.Errorf("bad circuit count %q", parts[2])
	}
	caps := dht.DataRelay{Duration: d, Data: n * mult, Circuits: c}
	if err := caps.Validate(); err != nil {
		return dht.DataRelay{}, err
	}
	return caps, nil
}

// scope returns the address scope the node runs in, as --public-ranges says.
func (nf *nodeFlags) scope() (scope.Scope, error) {
	ranges := splitList(nf.publicRanges)
	if len(ranges) == 0 {
		return scope.Internet(), nil
	}
	prefixes, err := scope.Parse(ranges...)
	if err != nil {
		return scope.Scope{}, usageErrorf("--public-ranges: %w", err)
	}
	return scope.With(prefixes...), nil
}

// setVerbose turns on debug logs for the loggers of this module, which are
// all named "rendezvous" or "rendezvous/<package>".
func setVerbose() error {
	for _, name := range []string{"rendezvous", "rendezvous/dht", "rendezvous/relay"} {
		if err := logging.SetLogLevel(name, "debug"); err != nil {
			return err
		}
	}
	// Loggers of packages not listed above, if any were created already.
	return logging.SetLogLevelRegex("^rendezvous", "debug")
}

// parsePeerID parses a peer ID argument.
func parsePeerID(s string) (peer.ID, error) {
	id, err := peer.Decode(s)
	if err != nil {
		return "", usageErrorf("%q is not a peer ID: %w", s, err)
	}
	return id, nil
}

// onePeerID returns the single peer ID among the positional args.
func onePeerID(args []string) (peer.ID, error) {
	switch len(args) {
	case 0:
		return "", usageErrorf("missing PEERID")
	case 1:
		return parsePeerID(args[0])
	}
	return "", usageErrorf("want one PEERID, got %d arguments: %s", len(args), strings.Join(args, " "))
}

// splitList splits a comma-separated list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
