package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2pos/rendezvous"
	"github.com/p2pos/rendezvous/nat"
	"github.com/p2pos/rendezvous/nat/portmap"
	"github.com/p2pos/rendezvous/nat/probe"
	"github.com/p2pos/rendezvous/scope"
)

const netcheckHelp = `
Report what the network this machine sits on does to peer-to-peer traffic:

  - the node's own addresses, IPv4 and IPv6, and which are in scope (public);
  - port mapping: which of UPnP, NAT-PMP and PCP the gateway answers, the
    external address each reports, and whether a UDP mapping can be obtained
    (it is removed again at once);
  - reachability, as dial-back by other peers finds it: public or private;
  - the NAT's mapping and filtering behaviour (RFC 4787), measured against
    the probe servers that public peers run: port pattern, hairpinning and
    the external address;
  - how long the NAT keeps an idle UDP mapping (the binding timeout), and the
    keep-alive interval that follows. This takes as long as the longest
    candidate idle time (7 minutes by default); --quick skips it.

The checks run on a short-lived node (reachability left on auto) that joins
the network through the bootstrap peers and stops before the binding timeout
is measured. --timeout bounds everything but that measurement, whose deadline
is the longest candidate plus one minute.

The keep-alive interval suggested is 2/3 of the lower bound of the binding
timeout, the longest idle time a mapping was seen to survive: the margin
covers a lost keep-alive and timers that run late.
`

// Bounds of the checks.
const (
	// reachabilityWait is how long netcheck waits for a dial-back verdict.
	reachabilityWait = 10 * time.Second
	// mapLifetime is the lifetime asked for the trial UDP mapping.
	mapLifetime = 2 * time.Minute
	// measureSlack is added to the longest candidate for the deadline of
	// the binding timeout measurement.
	measureSlack = time.Minute
	// maxCandidate and maxCandidateCount are what probe.MeasureTimeout
	// accepts.
	maxCandidate      = 600 * time.Second
	maxCandidateCount = 32
	// probeServers is how many probe servers Classify is given.
	probeServers = 4
)

func cmdNetcheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return exitCode(stderr, "netcheck", runNetcheck(ctx, args, stdout, stderr))
}

// netcheckFlags are the flags of netcheck: those of a client command but
// --mode, since reachability is what netcheck finds out, and --nat-timeouts,
// since the node does not survey its NAT (--candidates is for netcheck's own
// measurement).
type netcheckFlags struct {
	clientFlags
	quick      bool
	candidates string
}

func (nf *netcheckFlags) register(fs *flag.FlagSet) {
	all := flag.NewFlagSet("", flag.ContinueOnError)
	nf.clientFlags.register(all)
	all.VisitAll(func(f *flag.Flag) {
		switch f.Name {
		case "mode", "nat-timeouts":
			return
		case "timeout":
			f.Usage = "give up after `DURATION`, joining the network included; the binding timeout\nmeasurement has its own deadline (the longest candidate plus 1m)"
		}
		fs.Var(f.Value, f.Name, f.Usage)
	})
	nf.mode = "auto"
	fs.BoolVar(&nf.quick, "quick", false, "skip the binding timeout measurement, which takes minutes")
	fs.StringVar(&nf.candidates, "candidates", "", "idle `DURATIONS` (comma-separated) the binding timeout measurement tries;\nwhole milliseconds up to 10m, at most 32 (default "+fmtDurations(probe.DefaultCandidates())+")")
}

// candidateList parses --candidates: sorted, without duplicates, or the
// defaults when the flag is not given.
func (nf *netcheckFlags) candidateList() ([]time.Duration, error) {
	list := splitList(nf.candidates)
	if len(list) == 0 {
		return probe.DefaultCandidates(), nil
	}
	var out []time.Duration
	for _, s := range list {
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, usageErrorf("--candidates: %q is not a duration", s)
		}
		if d < time.Millisecond || d > maxCandidate || d%time.Millisecond != 0 {
			return nil, usageErrorf("--candidates: %v is not a whole number of milliseconds from 1ms to %v", d, maxCandidate)
		}
		out = append(out, d)
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) > maxCandidateCount {
		return nil, usageErrorf("--candidates: %d durations, at most %d", len(out), maxCandidateCount)
	}
	return out, nil
}

// netcheckJSON is the output of netcheck --json, and what the text report
// is written from. Durations are in milliseconds; a section that was
// skipped or failed is null, with the reason in its _error field.
type netcheckJSON struct {
	PeerID      string       `json:"peer_id"`
	Scope       string       `json:"scope"`
	IPv4        []addrJSON   `json:"ipv4"`
	IPv6        []addrJSON   `json:"ipv6"`
	PortMapping *portmapJSON `json:"port_mapping"`
	// Reachability is "public", "private" or "unknown" (no verdict within
	// the wait); ReachabilityMS is how long the verdict took.
	Reachability   string            `json:"reachability"`
	ReachabilityMS float64           `json:"reachability_ms"`
	ProbeServers   []probeServerJSON `json:"probe_servers"`
	NAT            *natReportJSON    `json:"nat"`
	NATError       string            `json:"nat_error,omitempty"`
	Quick          bool              `json:"quick"`
	Timeout        *bindingJSON      `json:"binding_timeout"`
	TimeoutError   string            `json:"binding_timeout_error,omitempty"`
	ElapsedMS      float64           `json:"elapsed_ms"`
}

// addrJSON is one of the node's addresses.
type addrJSON struct {
	Addr    string `json:"addr"`
	InScope bool   `json:"in_scope"`
}

// portmapJSON is what the gateway answered. Error is set when it could
// not be asked at all (no gateway); the services are null then.
type portmapJSON struct {
	Gateway   string           `json:"gateway,omitempty"`
	Error     string           `json:"error,omitempty"`
	ErrorKind string           `json:"error_kind,omitempty"`
	UPnP      *serviceJSON     `json:"upnp"`
	NATPMP    *serviceJSON     `json:"nat_pmp"`
	PCP       *serviceJSON     `json:"pcp"`
	UDP       *udpMappingJSON  `json:"udp_mapping"`
	UDPError  string           `json:"udp_mapping_error,omitempty"`
	UDPKind   string           `json:"udp_mapping_error_kind,omitempty"`
	ElapsedMS float64          `json:"elapsed_ms"`
	mapping   *portmap.Mapping // for the text report
}

// serviceJSON is one protocol's answer to the gateway probe.
type serviceJSON struct {
	OK        bool   `json:"ok"`
	External  string `json:"external,omitempty"`
	Error     string `json:"error,omitempty"`
	ErrorKind string `json:"error_kind,omitempty"`
}

// udpMappingJSON is the trial UDP mapping, removed again at once.
type udpMappingJSON struct {
	Protocol     portmap.Protocol `json:"protocol"`
	InternalPort uint16           `json:"internal_port"`
	External     string           `json:"external"`
	LifetimeMS   float64          `json:"lifetime_ms"`
	Deleted      bool             `json:"deleted"`
	DeleteError  string           `json:"delete_error,omitempty"`
}

// probeServerJSON is a probe server found through a public peer.
type probeServerJSON struct {
	Peer    string `json:"peer"`
	Primary string `json:"primary"`
	Alt     string `json:"alt,omitempty"`
}

// natReportJSON is what probe.Classify found.
type natReportJSON struct {
	Mapping             string  `json:"mapping"`
	MappingConfidence   float64 `json:"mapping_confidence"`
	Filtering           string  `json:"filtering"`
	FilteringConfidence float64 `json:"filtering_confidence"`
	PortPattern         string  `json:"port_pattern"`
	PortConfidence      float64 `json:"port_confidence"`
	Hairpin             *bool   `json:"hairpin"`
	External            string  `json:"external"`
	Servers             int     `json:"servers"`
	Siblings            bool    `json:"siblings"`
	SiblingChecked      bool    `json:"sibling_checked"`
	// MappingAmbiguousWith and FilteringAmbiguousWith name the behaviour
	// the measurement could not tell Mapping and Filtering from; empty
	// when it could.
	MappingAmbiguousWith   string  `json:"mapping_ambiguous_with,omitempty"`
	FilteringAmbiguousWith string  `json:"filtering_ambiguous_with,omitempty"`
	Samples                int     `json:"samples"`
	Packets                int     `json:"packets"`
	Bytes                  int     `json:"bytes"`
	ElapsedMS              float64 `json:"elapsed_ms"`
	elapsed                time.Duration
}

// bindingJSON is what probe.MeasureTimeout found. LowerMS is null when no
// probe survived, UpperMS when every one did.
type bindingJSON struct {
	Server           string    `json:"server"`
	CandidatesMS     []float64 `json:"candidates_ms"`
	LowerMS          *float64  `json:"lower_ms"`
	UpperMS          *float64  `json:"upper_ms"`
	EstimateMS       float64   `json:"estimate_ms"`
	KeepAliveMS      float64   `json:"keepalive_ms"`
	KeepAliveRule    string    `json:"keepalive_rule"`
	AliveMS          []float64 `json:"alive_ms"`
	ExpiredMS        []float64 `json:"expired_ms"`
	UnacknowledgedMS []float64 `json:"unacknowledged_ms"`
	Consistent       bool      `json:"consistent"`
	Packets          int       `json:"packets"`
	Bytes            int       `json:"bytes"`
	ElapsedMS        float64   `json:"elapsed_ms"`
	res              probe.TimeoutResult
}

func runNetcheck(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := newFlagSet("netcheck", "[flags]", netcheckHelp)
	var nf netcheckFlags
	nf.register(fs)
	rest, err := parseArgs(fs, args, stdout)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("unexpected arguments: %s", strings.Join(rest, " "))
	}
	if nf.quick && nf.candidates != "" {
		return usageErrorf("--candidates is for the binding timeout measurement, which --quick skips")
	}
	candidates, err := nf.candidateList()
	if err != nil {
		return err
	}
	if nf.timeout <= 0 {
		return usageErrorf("--timeout must be positive")
	}
	opts, err := nf.options(true)
	if err != nil {
		return err
	}
	sc, err := nf.scope()
	if err != nil {
		return err
	}

	start := time.Now()
	report, servers, err := quickChecks(ctx, &nf, opts, sc)
	if err != nil {
		return err
	}
	report.Quick = nf.quick
	if !nf.quick && len(servers) > 0 {
		report.Timeout, err = measureBinding(ctx, servers[0].Primary, candidates, stderr)
		if err != nil {
			if errors.Is(ctx.Err(), context.Canceled) {
				return errors.New("measuring the binding timeout: interrupted")
			}
			if ctx.Err() != nil {
				return fmt.Errorf("measuring the binding timeout: %w", ctx.Err())
			}
			report.TimeoutError = describeProbeError(err)
		}
	} else if !nf.quick {
		report.TimeoutError = "not measured: no probe server"
	}
	report.ElapsedMS = ms(time.Since(start))

	if nf.json {
		return writeJSON(stdout, report)
	}
	return printNetcheck(stdout, report)
}

// quickChecks runs everything but the binding timeout measurement on a
// short-lived node, bounded by --timeout, and returns the report so far
// with the probe servers found. The node is closed when it returns.
func quickChecks(ctx context.Context, nf *netcheckFlags, opts []rendezvous.Option, sc scope.Scope) (_ *netcheckJSON, _ []nat.ProbeServer, err error) {
	ctx, cancel := context.WithTimeout(ctx, nf.timeout)
	defer cancel()

	// The gateway is asked while the node starts: it needs no node.
	pmDone := make(chan *portmapJSON, 1)
	if nf.noPortMap {
		pmDone <- &portmapJSON{Error: "not asked (--no-portmap)"}
	} else {
		go func() { pmDone <- checkPortmap(ctx) }()
	}
	portmapResult := sync.OnceValue(func() *portmapJSON { return <-pmDone })
	defer func() {
		if err != nil {
			cancel()
			portmapResult()
		}
	}()

	started := time.Now()
	n, err := nf.startNode(ctx, opts)
	if err != nil {
		return nil, nil, err
	}
	defer func() { err = errors.Join(err, closeError(n.Close())) }()

	r := &netcheckJSON{PeerID: n.ID().String(), Scope: sc.String()}
	reach := waitReachability(ctx, n, reachabilityWait)
	if ctx.Err() != nil {
		return nil, nil, fmt.Errorf("waiting for a dial-back verdict: %w", timeoutError(ctx, nf.timeout))
	}
	r.Reachability = reach.String()
	r.ReachabilityMS = ms(time.Since(started))
	r.IPv4, r.IPv6 = splitAddrs(n.Addrs(), sc)

	servers, err := nat.FindProbeServers(ctx, n.Host(), sc, probePeers(n), probeServers)
	switch {
	case ctx.Err() != nil:
		return nil, nil, fmt.Errorf("finding probe servers: %w", timeoutError(ctx, nf.timeout))
	case errors.Is(err, nat.ErrNoProbeServers):
		r.NATError = "no probe server found: public peers run them, and none of the peers known answered"
	case err != nil:
		r.NATError = "finding probe servers: " + err.Error()
	}
	r.ProbeServers = make([]probeServerJSON, 0, len(servers))
	if len(servers) > 0 {
		primaries := make([]netip.AddrPort, 0, len(servers))
		for _, s := range servers {
			primaries = append(primaries, s.Primary)
			ps := probeServerJSON{Peer: s.Peer.String(), Primary: s.Primary.String()}
			if s.Alt.IsValid() {
				ps.Alt = s.Alt.String()
			}
			r.ProbeServers = append(r.ProbeServers, ps)
		}
		res, err := probe.Classify(ctx, primaries, udpSocket)
		switch {
		case ctx.Err() != nil:
			return nil, nil, fmt.Errorf("classifying the NAT: %w", timeoutError(ctx, nf.timeout))
		case err != nil:
			r.NATError = describeProbeError(err)
		default:
			r.NAT = natReport(res)
		}
	}

	r.PortMapping = portmapResult()
	if ctx.Err() != nil {
		return nil, nil, fmt.Errorf("asking the gateway: %w", timeoutError(ctx, nf.timeout))
	}
	return r, servers, nil
}

// startNode starts the short-lived node of netcheck, bounded by ctx. The
// node does not survey its NAT on its own: netcheck does, and two surveys
// from one address would run into the probe servers' rate limits.
func (nf *netcheckFlags) startNode(ctx context.Context, opts []rendezvous.Option) (*rendezvous.Node, error) {
	n, err := rendezvous.New(ctx, append(opts, rendezvous.WithoutNATSurvey())...)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, rendezvous.ErrBootstrap) {
			return nil, fmt.Errorf("no bootstrap peer reachable: %w", timeoutError(ctx, nf.timeout))
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("joining the network: %w", timeoutError(ctx, nf.timeout))
		}
		return nil, startError(err)
	}
	return n, nil
}

// udpSocket opens the sockets the NAT probes send from.
func udpSocket() (net.PacketConn, error) { return net.ListenUDP("udp4", nil) }

// waitReachability waits, on the node's events, for a dial-back verdict,
// at most wait; it returns unknown if none came.
func waitReachability(ctx context.Context, n *rendezvous.Node, wait time.Duration) rendezvous.Reachability {
	events, unsubscribe := n.Subscribe()
	defer unsubscribe()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		if r := n.Reachability(); r != rendezvous.ReachabilityUnknown {
			return r
		}
		select {
		case <-ctx.Done():
			return rendezvous.ReachabilityUnknown
		case <-timer.C:
			return rendezvous.ReachabilityUnknown
		case _, ok := <-events:
			if !ok {
				return n.Reachability()
			}
		}
	}
}

// probePeers are the peers asked for probe servers: the DHT servers of the
// routing table, then the peers connected (the bootstrap peers among them).
func probePeers(n *rendezvous.Node) []peer.ID {
	peers := n.DHT().RoutingTablePeers()
	for _, p := range n.Host().Network().Peers() {
		if !slices.Contains(peers, p) {
			peers = append(peers, p)
		}
	}
	return peers
}

// splitAddrs sorts the node's IP addresses into IPv4 and IPv6, each marked
// in scope or not. Relay addresses are not the node's own and are left out.
func splitAddrs(addrs []ma.Multiaddr, sc scope.Scope) (v4, v6 []addrJSON) {
	v4, v6 = []addrJSON{}, []addrJSON{}
	for _, a := range addrs {
		if len(a) == 0 {
			continue
		}
		if _, err := a.ValueForProtocol(ma.P_CIRCUIT); err == nil {
			continue
		}
		aj := addrJSON{Addr: a.String(), InScope: sc.IsPublic(a)}
		switch a[0].Protocol().Code {
		case ma.P_IP4:
			v4 = append(v4, aj)
		case ma.P_IP6:
			v6 = append(v6, aj)
		}
	}
	return v4, v6
}

// checkPortmap asks the gateway which protocols it speaks, and for a UDP
// mapping of a temporary socket's port, which it deletes again.
func checkPortmap(ctx context.Context) *portmapJSON {
	start := time.Now()
	pm := &portmapJSON{}
	defer func() { pm.ElapsedMS = ms(time.Since(start)) }()
	c, err := portmap.NewClient()
	if err != nil {
		pm.Error, pm.ErrorKind = describePortmapError(err)
		return pm
	}
	// Probe and Map each wait out a silent gateway's timeout: ask both at once.
	probed := make(chan struct{})
	go func() {
		defer close(probed)
		av, err := c.Probe(ctx)
		if err != nil {
			pm.Error, pm.ErrorKind = describePortmapError(err)
			return
		}
		pm.Gateway = av.Gateway.String()
		pm.UPnP, pm.NATPMP, pm.PCP = service(av.UPnP), service(av.NATPMP), service(av.PCP)
	}()
	defer func() { <-probed }()

	sock, err := net.ListenUDP("udp4", nil)
	if err != nil {
		pm.UDPError, pm.UDPKind = "opening a UDP socket: "+err.Error(), "failed"
		return pm
	}
	defer sock.Close()
	port := uint16(sock.LocalAddr().(*net.UDPAddr).Port)
	m, err := c.Map(ctx, "udp", port, mapLifetime)
	if err != nil {
		pm.UDPError, pm.UDPKind = describePortmapError(err)
		return pm
	}
	pm.mapping = &m
	pm.UDP = &udpMappingJSON{
		Protocol:     m.Protocol,
		InternalPort: m.InternalPort,
		External:     m.External.String(),
		LifetimeMS:   ms(m.Lifetime),
		Deleted:      true,
	}
	// The mapping is deleted even if ctx has just ended.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), portmap.DefaultTimeout)
	defer cancel()
	if err := c.Delete(dctx, m); err != nil {
		pm.UDP.Deleted = false
		pm.UDP.DeleteError = err.Error()
	}
	return pm
}

func service(s portmap.Service) *serviceJSON {
	sj := &serviceJSON{OK: s.OK}
	if s.External.IsValid() {
		sj.External = s.External.String()
	}
	if !s.OK && s.Err != nil {
		sj.Error, sj.ErrorKind = describePortmapError(s.Err)
	}
	return sj
}

// describePortmapError says what a port mapping failure means, and names
// its kind for JSON: no_gateway, not_supported, refused or failed.
func describePortmapError(err error) (text, kind string) {
	var re *portmap.ResultError
	switch {
	case errors.Is(err, portmap.ErrNoGateway):
		return "no gateway (no IPv4 default route)", "no_gateway"
	case errors.As(err, &re) && !re.Is(portmap.ErrNotSupported):
		return "refused by the gateway: " + re.Error(), "refused"
	case errors.Is(err, portmap.ErrNotSupported):
		return "not supported by the gateway", "not_supported"
	}
	return err.Error(), "failed"
}

// describeProbeError says what a failed NAT probe means.
func describeProbeError(err error) string {
	switch {
	case errors.Is(err, probe.ErrUDPBlocked):
		return "no probe server answered: UDP is blocked on the path, or the servers are down"
	case errors.Is(err, probe.ErrRefused):
		return "the probe server refused the requests (a limit, or a delay above its maximum)"
	}
	return err.Error()
}

func natReport(res probe.Result) *natReportJSON {
	nr := &natReportJSON{
		Mapping:             res.Mapping.String(),
		MappingConfidence:   res.MappingConfidence,
		Filtering:           res.Filtering.String(),
		FilteringConfidence: res.FilteringConfidence,
		PortPattern:         string(res.PortPattern),
		PortConfidence:      res.PortConfidence,
		Hairpin:             res.Hairpin,
		Servers:             res.Servers,
		Siblings:            res.Siblings,
		SiblingChecked:      res.SiblingChecked,
		Samples:             res.Samples,
		Packets:             res.Packets,
		Bytes:               res.Bytes,
		ElapsedMS:           ms(res.Elapsed),
		elapsed:             res.Elapsed,
	}
	if b := res.MappingAmbiguousWith; b != probe.BehaviorUnknown {
		nr.MappingAmbiguousWith = b.String()
	}
	if b := res.FilteringAmbiguousWith; b != probe.BehaviorUnknown {
		nr.FilteringAmbiguousWith = b.String()
	}
	if res.External.IsValid() {
		nr.External = res.External.String()
	}
	return nr
}

// measureBinding measures the binding timeout with the probe server at
// server, drawing a progress bar on stderr if it is a terminal. Its
// deadline is the longest candidate plus measureSlack.
func measureBinding(ctx context.Context, server netip.AddrPort, candidates []time.Duration, stderr io.Writer) (*bindingJSON, error) {
	longest := slices.Max(candidates)
	ctx, cancel := context.WithTimeout(ctx, longest+measureSlack)
	defer cancel()

	var progress func(done, total int)
	if isTerminal(stderr) {
		// The probes end about the grace (1.5 s by default) after
		// the longest candidate.
		bar := startProgress(stderr, len(candidates), longest+1500*time.Millisecond)
		defer bar.stop()
		progress = bar.update
	}
	res, err := probe.MeasureTimeout(ctx, server, candidates, udpSocket, progress)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			return nil, fmt.Errorf("no result within %v", longest+measureSlack)
		}
		return nil, err
	}
	keep, rule := keepAlive(res)
	return &bindingJSON{
		Server:           server.String(),
		CandidatesMS:     msList(candidates),
		LowerMS:          msOrNull(res.Lower),
		UpperMS:          msOrNull(res.Upper),
		EstimateMS:       ms(res.Estimate),
		KeepAliveMS:      ms(keep),
		KeepAliveRule:    rule,
		AliveMS:          msList(res.Alive),
		ExpiredMS:        msList(res.Expired),
		UnacknowledgedMS: msList(res.Unacknowledged),
		Consistent:       res.Consistent,
		Packets:          res.Packets,
		Bytes:            res.Bytes,
		ElapsedMS:        ms(res.Elapsed),
		res:              res,
	}, nil
}

// keepAlive is the keep-alive interval a binding timeout calls for, and the
// rule it follows: 2/3 of the lower bound, the longest idle time a mapping
// was seen to survive, leaving a margin for a lost keep-alive and late
// timers. When no probe survived, 2/3 of the estimate (half the shortest
// candidate) stands in for it.
func keepAlive(res probe.TimeoutResult) (time.Duration, string) {
	if res.Lower > 0 {
		return roundDuration(res.Lower * 2 / 3), "2/3 of the lower bound"
	}
	return roundDuration(res.Estimate * 2 / 3), "2/3 of the estimate (no probe survived)"
}

// roundDuration rounds d for people: to the second from 10 s up, to 100 ms
// below.
func roundDuration(d time.Duration) time.Duration {
	if d >= 10*time.Second {
		return d.Round(time.Second)
	}
	return d.Round(100 * time.Millisecond)
}

func msOrNull(d time.Duration) *float64 {
	if d == 0 {
		return nil
	}
	v := ms(d)
	return &v
}

// msList is ds in milliseconds; never nil, so that JSON shows [].
func msList(ds []time.Duration) []float64 {
	out := make([]float64, 0, len(ds))
	for _, d := range ds {
		out = append(out, ms(d))
	}
	return out
}

// fmtDurations formats ds comma-separated, as --candidates takes them.
func fmtDurations(ds []time.Duration) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = fmtDuration(d)
	}
	return strings.Join(s, ",")
}

// fmtDuration formats d without the zero units time.Duration prints:
// "2m" rather than "2m0s".
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
