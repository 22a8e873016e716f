package natlab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// MissingError is what Check returns: the list of what this machine lacks
// to build a lab.
type MissingError struct {
	Missing []string
}

func (e *MissingError) Error() string {
	return "natlab: cannot build a lab here: missing " + strings.Join(e.Missing, "; ")
}

// Check reports whether this machine can build labs: root, the programs the
// lab drives, and the kernel features it uses, the latter proved by building
// and removing a throwaway namespace with a veth pair, a bridge, conntrack
// timeouts and every kind of ruleset. The result is computed once per
// process. A failure is a *MissingError.
func Check() error { return checkOnce() }

var checkOnce = sync.OnceValue(check)

func check() error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (namespaces and nftables need CAP_SYS_ADMIN and CAP_NET_ADMIN)")
	}
	for _, t := range []struct{ bin, pkg string }{
		{"ip", "iproute2"},
		{"nft", "nftables"},
		{"conntrack", "conntrack"},
		{"sysctl", "procps"},
		{"miniupnpd", "miniupnpd (nftables build)"},
	} {
		if _, err := exec.LookPath(t.bin); err != nil {
			missing = append(missing, fmt.Sprintf("%s (Debian package %s)", t.bin, t.pkg))
		}
	}
	if _, err := os.Stat("/proc/thread-self/ns/net"); err != nil {
		missing = append(missing, "network namespaces (/proc/thread-self/ns/net)")
	}
	if len(missing) > 0 {
		return &MissingError{Missing: missing}
	}
	if err := probe(); err != nil {
		return &MissingError{Missing: []string{"kernel feature: " + err.Error()}}
	}
	return nil
}

// probe exercises the kernel features the lab needs in a throwaway
// namespace registered like a lab run, so CleanStale would remove it if
// this process died midway.
func probe() (err error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	me, err := self()
	if err != nil {
		return err
	}
	prefix, err := newPrefix()
	if err != nil {
		return err
	}
	if _, err := claim(prefix, me); err != nil {
		return fmt.Errorf("state directory %s: %w", stateDir, err)
	}
	defer func() {
		if rerr := removeRun(ctx, prefix); rerr != nil && err == nil {
			err = fmt.Errorf("removing probe namespace: %w", rerr)
		}
	}()
	ns := prefix + "-probe"
	nsAddMu.Lock()
	err = ip(ctx, "netns", "add", ns)
	nsAddMu.Unlock()
	if err != nil {
		return fmt.Errorf("network namespaces: %w", err)
	}
	for _, s := range [][]string{
		{"-n", ns, "link", "add", prefix + "a", "type", "veth", "peer", "name", prefix + "b"},
		{"-n", ns, "link", "add", prefix + "br", "type", "bridge"},
		{"-n", ns, "link", "set", prefix + "a", "master", prefix + "br"},
	} {
		if err := ip(ctx, s...); err != nil {
			return fmt.Errorf("veth and bridge links: %w", err)
		}
	}
	if err := sysctl(ctx, ns, false,
		"net.ipv4.ip_forward=1",
		"net.netfilter.nf_conntrack_udp_timeout=7",
		"net.netfilter.nf_conntrack_udp_timeout_stream=7",
		"net.netfilter.nf_conntrack_tcp_timeout_established=7"); err != nil {
		return fmt.Errorf("per-namespace forwarding and conntrack timeouts: %w", err)
	}
	base := ruleParams{wan: prefix + "a", lan: prefix + "br", lanPrefix: homeLAN(1), udpTimeout: 7 * time.Second, tcpTimeout: 7 * time.Second}
	variants := []ruleParams{base, base, base, base}
	variants[1].filter = filterNone
	variants[2].filter = filterAddr
	variants[3].mapping, variants[3].upnp, variants[3].blockUDP = mapRandom, true, true
	variants[3].stunServers = []netip.Addr{stunAddr1, stunAddr2}
	for _, v := range variants {
		if err := nft(ctx, ns, ruleset(v)); err != nil {
			return fmt.Errorf("nftables NAT, conntrack and dynamic maps: %w", err)
		}
		if err := nft(ctx, ns, blackholeRules(true)+blackholeRules(false)); err != nil {
			return fmt.Errorf("nftables: %w", err)
		}
		if err := nft(ctx, ns, "delete table inet "+nftTable+"\n"); err != nil {
			return fmt.Errorf("nftables: %w", err)
		}
	}
	err = inNamespace(ns, func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero})
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		return fmt.Errorf("sockets in a namespace (setns): %w", err)
	}
	return nil
}

// TB is the part of testing.TB that Require uses.
type TB interface {
	Helper()
	Fatal(args ...any)
	Skip(args ...any)
}

// RequiredEnv names the environment variable that, set to "required",
// turns a machine that cannot build labs into a test failure instead of a
// skip (CI sets it).
const RequiredEnv = "RENDEZVOUS_NATLAB"

// Require skips the test when this machine cannot build labs, naming what
// is missing, or fails it when RENDEZVOUS_NATLAB=required.
func Require(t TB) {
	t.Helper()
	if err := Check(); err != nil {
		if os.Getenv(RequiredEnv) == "required" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}
