package standby

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/p2pos/rendezvous/internal/natlab"
)

// reachTimeout bounds one reachability check.
const reachTimeout = 30 * time.Second

// reachable checks from the prober that the peer can still be reached and
// fills in row.Reachable, Path and ReachError.
func reachable(ctx context.Context, lab *natlab.Lab, cfg Config, p *peer, boot []string, servers []netip.Addr, row *Row) {
	if row.PeerID == "" {
		row.ReachError = "no peer ID"
		return
	}
	prober := lab.Host(proberHost)
	switch p.impl {
	case Rendezvous:
		args := append([]string{"connect", "--json", "--mode", "private", "--bootstrap", strings.Join(boot, ","),
			"--ping", "1", "--timeout", reachTimeout.String()}, labArgs()...)
		var out struct {
			Path  string `json:"path"`
			Relay string `json:"relay"`
		}
		if err := runOnce(ctx, prober, cfg.RendezvousBinary, append(args, row.PeerID), &out); err != nil {
			row.ReachError = err.Error()
			return
		}
		row.Reachable, row.Path = true, out.Path
	case Vanilla:
		p.mu.Lock()
		addrs := p.t.(*vanillaTracker).circuitAddrs()
		p.mu.Unlock()
		row.ReachError = "no address through a relay"
		for _, a := range addrs {
			if !viaServer(a, servers) {
				continue
			}
			var out struct {
				OK    bool   `json:"ok"`
				Path  string `json:"path"`
				Error string `json:"error"`
			}
			err := runOnce(ctx, prober, cfg.VanillaBinary, []string{"--dial", a + "/p2p/" + row.PeerID,
				"--timeout", reachTimeout.String()}, &out)
			switch {
			case err != nil:
				row.ReachError = err.Error()
			case !out.OK:
				row.ReachError = out.Error
			default:
				row.Reachable, row.Path, row.ReachError = true, out.Path, ""
				return
			}
		}
	}
}

// viaServer reports whether a circuit address goes through one of the
// public nodes.
func viaServer(addr string, servers []netip.Addr) bool {
	a, err := ma.NewMultiaddr(addr)
	if err != nil {
		return false
	}
	ip, err := manet.ToIP(a)
	if err != nil {
		return false
	}
	ipa, ok := netip.AddrFromSlice(ip)
	if !ok {
		return false
	}
	for _, s := range servers {
		if s == ipa.Unmap() {
			return true
		}
	}
	return false
}

// runOnce runs a program that prints one JSON object and exits, and
// decodes that object into v. When it prints none, the error is the end of
// its stderr.
func runOnce(ctx context.Context, h *natlab.Host, bin string, args []string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, reachTimeout+15*time.Second)
	defer cancel()
	proc, err := h.Start(ctx, bin, args...)
	if err != nil {
		return err
	}
	defer proc.Stop(5 * time.Second)
	if err := proc.NextJSON(ctx, v); err != nil {
		if msg := lastLine(proc.Stderr()); msg != "" && errors.Is(err, natlab.ErrExited) {
			return errors.New(msg)
		}
		return err
	}
	return nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
