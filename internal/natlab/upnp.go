package natlab

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// NATPMPPort is where miniupnpd answers NAT-PMP and PCP, on the router's
// LAN address.
const NATPMPPort = 5351

const (
	upnpStartTimeout = 20 * time.Second
	upnpStopTimeout  = 5 * time.Second
)

// upnpd is a miniupnpd process running in a router's namespace.
//
// miniupnpd refuses to map ports when its WAN address is private (as every
// lab address is) unless a STUN test shows that nothing filters in front of
// it; then it enables port forwarding and reports the STUN-observed address.
// The lab's STUN server gives it that answer: the router's WAN address.
type upnpd struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed when the process has been waited for
	wg      sync.WaitGroup
}

// upnpConfig renders miniupnpd.conf for a router.
func (r *Router) upnpConfig(dir string) (string, error) {
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		return "", err
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	uuid := fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
	lines := []string{
		"ext_ifname=" + r.wanIf,
		"listening_ip=" + r.lanIf,
		"http_port=0",
		"enable_upnp=yes",
		"enable_natpmp=yes", // NAT-PMP and PCP, both on port 5351
		"secure_mode=yes",   // LAN hosts map only their own address
		"system_uptime=no",
		"ipv6_disable=yes",
		"uuid=" + uuid,
		"upnp_table_name=" + nftTable,
		"upnp_nat_table_name=" + nftTable,
		"upnp_forward_chain=" + upnpForwardChain,
		"upnp_nat_chain=" + upnpPreChain,
		"upnp_nat_postrouting_chain=" + upnpPostChain,
		"lease_file=" + filepath.Join(dir, "leases"),
		"minissdpdsocket=" + filepath.Join(dir, "minissdpd.sock"),
		"ext_perform_stun=yes",
		"ext_stun_host=" + stunAddr1.String(),
		fmt.Sprintf("ext_stun_port=%d", stunPorts[0]),
		"min_lifetime=1",
		"max_lifetime=86400",
		fmt.Sprintf("allow 1024-65535 %s 1024-65535", r.lan.Masked()),
		"deny 0-65535 0.0.0.0/0 0-65535",
	}
	return strings.Join(lines, "\n") + "\n", nil
}

// startUPnP starts miniupnpd and waits until it has enabled port forwarding
// and listens for NAT-PMP.
func (r *Router) startUPnP(ctx context.Context) error {
	dir := filepath.Join(r.lab.dir, fmt.Sprintf("miniupnpd-r%d", r.n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	conf, err := r.upnpConfig(dir)
	if err != nil {
		return err
	}
	confPath := filepath.Join(dir, "miniupnpd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return err
	}
	logFile, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		return err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		logFile.Close()
		return err
	}
	// -d: stay in the foreground and log to stderr.
	cmd := exec.Command("ip", "netns", "exec", r.ns, "miniupnpd", "-d", "-f", confPath, "-P", filepath.Join(dir, "pid"))
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		logFile.Close()
		return fmt.Errorf("natlab: start miniupnpd: %w", err)
	}
	pw.Close()
	u := &upnpd{cmd: cmd, logPath: logFile.Name(), exited: make(chan struct{})}
	r.upnp = u

	ready := make(chan error, 1)
	u.wg.Add(2)
	go func() {
		defer u.wg.Done()
		defer logFile.Close()
		defer pr.Close()
		u.scan(pr, logFile, ready, r.upstream == nil)
	}()
	go func() {
		defer u.wg.Done()
		cmd.Wait() //nolint:errcheck // the exit is reported through exited and the log
		close(u.exited)
	}()

	timer := time.NewTimer(upnpStartTimeout)
	defer timer.Stop()
	select {
	case err = <-ready:
	case <-u.exited:
		err = errors.New("exited")
	case <-timer.C:
		err = errors.New("not ready in time")
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("natlab: miniupnpd on %s: %w; log:\n%s", r.name, err, u.log())
	}
	return nil
}

// scan copies miniupnpd's output to its log file and reports readiness once,
// when miniupnpd listens for NAT-PMP. On a router on the internet port
// forwarding must be on by then, or that is an error. Behind another router
// miniupnpd's STUN test may find the upstream NAT filtering and turn port
// forwarding off, as it would on a real double NAT.
func (u *upnpd) scan(r io.Reader, log io.Writer, ready chan<- error, mustForward bool) {
	sc := bufio.NewScanner(r)
	enabled, reported := false, false
	report := func(err error) {
		if !reported {
			reported = true
			ready <- err
		}
	}
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(log, line)
		switch {
		case strings.Contains(line, "Port forwarding is now enabled"):
			enabled = true
		case strings.Contains(line, "Listening for NAT-PMP"):
			if enabled || !mustForward {
				report(nil)
			} else {
				report(errors.New("port forwarding is off"))
			}
		}
	}
}

func (u *upnpd) log() string {
	b, err := os.ReadFile(u.logPath)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// stop sends SIGTERM, then SIGKILL if miniupnpd is still there after a
// while, and waits for its goroutines.
func (u *upnpd) stop() error {
	u.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // may have exited
	timer := time.NewTimer(upnpStopTimeout)
	defer timer.Stop()
	select {
	case <-u.exited:
		u.wg.Wait()
		return nil
	case <-timer.C:
	}
	u.cmd.Process.Kill() //nolint:errcheck // may have exited
	timer.Reset(upnpStopTimeout)
	select {
	case <-u.exited:
		u.wg.Wait()
		return errors.New("natlab: miniupnpd needed SIGKILL")
	case <-timer.C:
		// Its goroutines end when it does; Close deletes the namespace
		// regardless.
		return fmt.Errorf("natlab: miniupnpd (pid %d) survived SIGKILL", u.cmd.Process.Pid)
	}
}
