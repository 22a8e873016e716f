// Package classify measures, in the NAT lab, how well nodes tell what is in
// front of them: for every router kind (and a public host) it runs
// `rendezvous netcheck --quick --json` on a host behind a router of that
// kind, in networks of one or more public peers, and compares what netcheck
// reports with what the lab built. The public peers are real nodes
// (`rendezvous node --mode public`), whose probe servers are found and
// become siblings of each other as they would on the internet.
//
// It does not build the rendezvous command (the caller passes the binary)
// and does not judge timing: it reports it.
package classify

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/p2pos/rendezvous/internal/natlab"
)

// Public is the kind of a host on the internet, behind no router.
const Public = "public"

// DefaultKinds returns every kind measured: a public host and the lab's
// router kinds but the deliberately broken one.
func DefaultKinds() []string {
	return []string{Public, string(natlab.FullCone), string(natlab.Restricted), string(natlab.PortRestricted),
		string(natlab.Symmetric), string(natlab.CGNAT), string(natlab.UDPBlocked), string(natlab.UPnP)}
}

// Config says what to measure.
type Config struct {
	// Binary is the rendezvous command.
	Binary string
	// Kinds are the kinds measured (default DefaultKinds).
	Kinds []string
	// Peers are the sizes of the networks: how many public peers each has
	// (default 1 and 3). Each network is a lab of its own.
	Peers []int
	// Runs is how many times each kind is classified in each network
	// (default 10), each time by a new netcheck.
	Runs int
	// Parallel bounds the netchecks running at once (default 4).
	Parallel int
	// Timeout bounds one netcheck (default 60s).
	Timeout time.Duration
	// SecondAddr gives every public peer a second address, as RFC 5780
	// servers have: its probe service then runs two servers, siblings of
	// each other.
	SecondAddr bool
	// Logf, if set, hears of progress, and at the end of each network of
	// what its public peers logged (with GOLOG_LOG_LEVEL, for example
	// "error,rendezvous/nat=debug", they log their probe siblings).
	Logf func(format string, args ...any)
}

func (c *Config) defaults() error {
	if c.Binary == "" {
		return errors.New("classify: no binary")
	}
	if len(c.Kinds) == 0 {
		c.Kinds = DefaultKinds()
	}
	for _, k := range c.Kinds {
		if _, ok := expectations[k]; !ok {
			return fmt.Errorf("classify: unknown kind %q", k)
		}
	}
	if len(c.Peers) == 0 {
		c.Peers = []int{1, 3}
	}
	for _, p := range c.Peers {
		if p < 1 || p > maxPeers {
			return fmt.Errorf("classify: %d public peers: want 1 to %d", p, maxPeers)
		}
	}
	if c.Runs <= 0 {
		c.Runs = 10
	}
	if c.Parallel <= 0 {
		c.Parallel = 4
	}
	if c.Timeout <= 0 {
		c.Timeout = 60 * time.Second
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return nil
}

// maxPeers bounds the public peers of a network.
const maxPeers = 16

// runsPerHost is how many netchecks one host (behind a router of its own)
// runs at most in a network: libp2p's resource manager lets an IP address
// open 16 connections at once to a peer and then one per 5 s, and each
// netcheck opens one or two to each public peer.
const runsPerHost = 4

// Run is one netcheck.
type Run struct {
	Kind  string `json:"kind"`
	Peers int    `json:"peers"`
	Index int    `json:"index"`
	// Matched tells whether netcheck reported what the lab built; Seen is
	// what it reported, in short.
	Matched bool   `json:"matched"`
	Seen    string `json:"seen"`
	// ClassifyMS is how long the NAT classification took (0 when none
	// ran); NetcheckMS how long the whole netcheck took.
	ClassifyMS float64 `json:"classify_ms"`
	NetcheckMS float64 `json:"netcheck_ms"`
	// Error is set when netcheck did not run to the end.
	Error string `json:"error,omitempty"`
}

// Result is every run of a measurement.
type Result struct {
	Runs    []Run         `json:"runs"`
	Elapsed time.Duration `json:"elapsed_ns"`
}

// Measure runs the measurement: for each network size, it builds a lab with
// that many public peers and hosts for every kind, and runs the netchecks.
// The private kinds run first, at once (up to cfg.Parallel); the public
// host and the UPnP router last, one run at a time, since the netcheck node
// there becomes public and would otherwise serve the others as one more
// probe server. Each kind's runs are spread over hosts behind routers of
// their own, at most runsPerHost on each. Every lab is removed before
// Measure returns.
func Measure(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	start := time.Now()
	res := &Result{}
	for _, peers := range cfg.Peers {
		runs, err := measureNetwork(ctx, cfg, peers)
		res.Runs = append(res.Runs, runs...)
		if err != nil {
			return res, err
		}
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

// network is one lab and its public peers.
type network struct {
	lab   *natlab.Lab
	peers int
	boot  string // --bootstrap value
	// hosts are the hosts that run netcheck, by kind.
	hosts map[string][]*natlab.Host
}

func serverName(i int) string            { return fmt.Sprintf("s%d", i+1) }
func hostName(kind string, i int) string { return fmt.Sprintf("h-%s-%d", kind, i+1) }
func routerName(kind string, i int) string {
	return fmt.Sprintf("r-%s-%d", kind, i+1)
}

func measureNetwork(ctx context.Context, cfg Config, peers int) (_ []Run, err error) {
	slots := (cfg.Runs + runsPerHost - 1) / runsPerHost
	spec := natlab.Spec{}
	for i := range peers {
		spec.Hosts = append(spec.Hosts, natlab.HostSpec{Name: serverName(i), SecondAddr: cfg.SecondAddr})
	}
	for _, k := range cfg.Kinds {
		for i := range slots {
			if k == Public {
				spec.Hosts = append(spec.Hosts, natlab.HostSpec{Name: hostName(k, i)})
				continue
			}
			spec.Routers = append(spec.Routers, natlab.RouterSpec{Name: routerName(k, i), Kind: natlab.Kind(k)})
			spec.Hosts = append(spec.Hosts, natlab.HostSpec{Name: hostName(k, i), Router: routerName(k, i)})
		}
	}
	built := time.Now()
	lab, err := natlab.New(ctx, spec)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, lab.Close()) }()
	cfg.Logf("network of %d public peer(s): lab %s built in %v", peers, lab.Prefix(), time.Since(built).Round(time.Millisecond))

	n := &network{lab: lab, peers: peers, hosts: map[string][]*natlab.Host{}}
	stop, err := n.startServers(ctx, cfg)
	defer stop()
	if err != nil {
		return nil, err
	}
	for _, k := range cfg.Kinds {
		for i := range slots {
			n.hosts[k] = append(n.hosts[k], lab.Host(hostName(k, i)))
		}
	}

	var private, public []string
	for _, k := range cfg.Kinds {
		if becomesPublic(k) {
			public = append(public, k)
		} else {
			private = append(private, k)
		}
	}
	runs := n.runKinds(ctx, cfg, private, cfg.Parallel)
	runs = append(runs, n.runOneByOne(ctx, cfg, public)...)
	return runs, ctx.Err()
}

func becomesPublic(k string) bool { return k == Public || k == string(natlab.UPnP) }

// serverArgs are the flags of every node in the lab: the lab's internet is
// public, and nodes listen on QUIC and TCP (for the hosts whose UDP is
// blocked) port 4001.
func labArgs() []string {
	return []string{"--public-ranges", natlab.InternetPrefix().String(),
		"--listen", "/ip4/0.0.0.0/udp/4001/quic-v1,/ip4/0.0.0.0/tcp/4001"}
}

// startServers runs the public peers, each bootstrapping from the ones
// before, and sets n.boot. Their output is read all along: a node whose
// output is not read stops at its next line, and with it its network. stop
// stops them.
func (n *network) startServers(ctx context.Context, cfg Config) (stop func(), err error) {
	var procs []*natlab.Proc
	drainCtx, cancelDrain := context.WithCancel(ctx)
	var drains sync.WaitGroup
	stop = func() {
		cancelDrain()
		drains.Wait()
		for i, p := range procs {
			p.Stop(5 * time.Second)
			if e := p.Stderr(); e != "" {
				cfg.Logf("public peer %s logged:\n%s", serverName(i), e)
			}
		}
	}
	var boot []string
	for i := range n.peers {
		h := n.lab.Host(serverName(i))
		args := append([]string{"node", "--json", "--mode", "public"}, labArgs()...)
		if len(boot) > 0 {
			args = append(args, "--bootstrap", strings.Join(boot, ","))
		}
		p, err := h.Start(ctx, cfg.Binary, args...)
		if err != nil {
			return stop, err
		}
		procs = append(procs, p)
		var ready struct {
			PeerID string `json:"peer_id"`
		}
		rctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		err = p.NextJSON(rctx, &ready)
		cancel()
		if err != nil || ready.PeerID == "" {
			return stop, fmt.Errorf("classify: public peer %s: %v: %s", h.Name(), err, p.Stderr())
		}
		drains.Go(func() {
			for {
				if _, err := p.Next(drainCtx); err != nil {
					if errors.Is(err, natlab.ErrExited) {
						cfg.Logf("public peer %s: %v", h.Name(), err)
					}
					return
				}
			}
		})
		boot = append(boot, fmt.Sprintf("/ip4/%s/udp/4001/quic-v1/p2p/%s", h.Addr(), ready.PeerID),
			fmt.Sprintf("/ip4/%s/tcp/4001/p2p/%s", h.Addr(), ready.PeerID))
	}
	n.boot = strings.Join(boot, ",")
	return stop, nil
}

// runKinds runs cfg.Runs netchecks of each kind, each kind's runs spread
// over its hosts, at most parallel at once.
func (n *network) runKinds(ctx context.Context, cfg Config, kinds []string, parallel int) []Run {
	if len(kinds) == 0 {
		return nil
	}
	sem := make(chan struct{}, parallel)
	var mu sync.Mutex
	var runs []Run
	var wg sync.WaitGroup
	for _, k := range kinds {
		hosts := n.hosts[k]
		for slot, h := range hosts {
			wg.Go(func() {
				for i := slot; i < cfg.Runs; i += len(hosts) {
					select {
					case sem <- struct{}{}:
					case <-ctx.Done():
						return
					}
					r := n.runOne(ctx, cfg, k, i, h)
					<-sem
					n.log(cfg, r)
					mu.Lock()
					runs = append(runs, r)
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	slices.SortFunc(runs, func(a, b Run) int {
		if c := slices.Index(kinds, a.Kind) - slices.Index(kinds, b.Kind); c != 0 {
			return c
		}
		return a.Index - b.Index
	})
	return runs
}

// runOneByOne runs cfg.Runs netchecks of each kind one after the other,
// the kinds and their hosts in turn.
func (n *network) runOneByOne(ctx context.Context, cfg Config, kinds []string) []Run {
	var runs []Run
	for i := range cfg.Runs {
		for _, k := range kinds {
			if ctx.Err() != nil {
				return runs
			}
			hosts := n.hosts[k]
			r := n.runOne(ctx, cfg, k, i, hosts[i%len(hosts)])
			n.log(cfg, r)
			runs = append(runs, r)
		}
	}
	slices.SortStableFunc(runs, func(a, b Run) int { return slices.Index(kinds, a.Kind) - slices.Index(kinds, b.Kind) })
	return runs
}

func (n *network) log(cfg Config, r Run) {
	cfg.Logf("%d peer(s), %s #%d: matched %v, %s (classify %.0f ms, netcheck %.0f ms)%s",
		n.peers, r.Kind, r.Index+1, r.Matched, r.Seen, r.ClassifyMS, r.NetcheckMS, errSuffix(r.Error))
}

func errSuffix(e string) string {
	if e == "" {
		return ""
	}
	return ": " + e
}

// runOne runs netcheck once on h, a host of kind k, after the routers in
// front of it forgot every flow of the runs before.
func (n *network) runOne(ctx context.Context, cfg Config, k string, i int, h *natlab.Host) Run {
	r := Run{Kind: k, Peers: n.peers, Index: i}
	for rt := h.Router(); rt != nil; rt = rt.Upstream() {
		if err := rt.FlushConntrack(ctx); err != nil {
			r.Error = "flushing conntrack: " + err.Error()
			return r
		}
	}
	args := append([]string{"netcheck", "--quick", "--json", "--bootstrap", n.boot,
		"--timeout", cfg.Timeout.String()}, labArgs()...)
	if k != string(natlab.UPnP) {
		// Only the UPnP router has a gateway worth asking.
		args = append(args, "--no-portmap")
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout+10*time.Second)
	defer cancel()
	start := time.Now()
	p, err := h.Start(ctx, cfg.Binary, args...)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer p.Stop(5 * time.Second)
	var rep report
	err = p.NextJSON(ctx, &rep)
	r.NetcheckMS = float64(time.Since(start).Microseconds()) / 1000
	if err != nil {
		r.Error = fmt.Sprintf("netcheck: %v: %s", err, lastLine(p.Stderr()))
		r.Seen = "no report"
		return r
	}
	if rep.NAT != nil {
		r.ClassifyMS = rep.NAT.ElapsedMS
	}
	r.Matched, r.Seen = expectations[k].judge(rep, h.Addr())
	if !r.Matched {
		// What netcheck logged (GOLOG_LOG_LEVEL) tells why.
		if s := strings.TrimSpace(p.Stderr()); s != "" {
			cfg.Logf("%d peer(s), %s #%d, netcheck's log:\n%s", n.peers, k, i, s)
		}
		// And the router's UDP flows whether the answers came back.
		if rt := h.Router(); rt != nil {
			out, _ := rt.Command(ctx, "conntrack", "-L", "-p", "udp").CombinedOutput()
			cfg.Logf("%d peer(s), %s #%d, router %s's UDP flows:\n%s", n.peers, k, i, rt.Name(), out)
		}
	}
	return r
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// report is the part of netcheck's JSON output that is judged.
type report struct {
	Reachability string             `json:"reachability"`
	PortMapping  *portMappingReport `json:"port_mapping"`
	NAT          *natReport         `json:"nat"`
	NATError     string             `json:"nat_error"`
}

type portMappingReport struct {
	UDP *udpMappingReport `json:"udp_mapping"`
}

type udpMappingReport struct {
	External string `json:"external"`
}

type natReport struct {
	Mapping             string  `json:"mapping"`
	MappingConfidence   float64 `json:"mapping_confidence"`
	Filtering           string  `json:"filtering"`
	FilteringConfidence float64 `json:"filtering_confidence"`
	External            string  `json:"external"`
	Servers             int     `json:"servers"`
	Siblings            bool    `json:"siblings"`
	ElapsedMS           float64 `json:"elapsed_ms"`
}

// Names of behaviours as netcheck prints them.
const (
	ei  = "endpoint-independent"
	ad  = "address-dependent"
	apd = "address-and-port-dependent"
)

// expectation is what the lab built behind a kind, and how a report is
// judged against it.
type expectation struct {
	text  string
	judge func(rep report, own netip.Addr) (bool, string)
}

// behaviour expects a NAT whose mapping and filtering are told apart.
func behaviour(mapping, filtering string) expectation {
	return expectation{
		text: short(mapping) + " / " + short(filtering),
		judge: func(rep report, _ netip.Addr) (bool, string) {
			seen := seenNAT(rep)
			n := rep.NAT
			return n != nil && n.Mapping == mapping && n.Filtering == filtering &&
				determined(n.MappingConfidence) && determined(n.FilteringConfidence), seen
		},
	}
}

// determined tells a behaviour told apart from a confidence: netcheck
// halves the confidence of one that was not (see probe.Result).
func determined(confidence float64) bool { return confidence > 0.5 }

var expectations = map[string]expectation{
	Public: {
		text: "no NAT (external address = own)",
		judge: func(rep report, own netip.Addr) (bool, string) {
			ok := rep.Reachability == "public" && rep.NAT != nil && externalIP(rep.NAT.External) == own
			return ok, "reachability " + rep.Reachability + ", " + seenNAT(rep)
		},
	},
	string(natlab.FullCone):       behaviour(ei, ei),
	string(natlab.Restricted):     behaviour(ei, ad),
	string(natlab.PortRestricted): behaviour(ei, apd),
	string(natlab.Symmetric):      behaviour(apd, apd),
	// Both layers map endpoint-independently; the home router filters by
	// address and port, and so does the carrier.
	string(natlab.CGNAT): behaviour(ei, apd),
	string(natlab.UDPBlocked): {
		text: "UDP blocked",
		judge: func(rep report, _ netip.Addr) (bool, string) {
			ok := rep.NAT == nil && strings.HasPrefix(rep.NATError, "no probe server answered")
			return ok, seenNAT(rep)
		},
	},
	string(natlab.UPnP): {
		text: "public through its UPnP mapping",
		judge: func(rep report, _ netip.Addr) (bool, string) {
			mapped := rep.PortMapping != nil && rep.PortMapping.UDP != nil
			seen := "reachability " + rep.Reachability + ", no UDP mapping"
			if mapped {
				seen = "reachability " + rep.Reachability + ", UDP mapping " + rep.PortMapping.UDP.External
			}
			return rep.Reachability == "public" && mapped, seen + ", NAT " + seenNAT(rep)
		},
	},
}

func externalIP(s string) netip.Addr {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

// short abbreviates a behaviour.
func short(b string) string {
	switch b {
	case ei:
		return "EI"
	case ad:
		return "AD"
	case apd:
		return "APD"
	}
	return b
}

// seenNAT says in short what netcheck found of the NAT: behaviours not
// told apart are marked with "?".
func seenNAT(rep report) string {
	n := rep.NAT
	if n == nil {
		if rep.NATError == "" {
			return "no NAT report"
		}
		return rep.NATError
	}
	mark := func(b string, c float64) string {
		if determined(c) {
			return short(b)
		}
		return short(b) + "?"
	}
	sib := ""
	if n.Servers > 1 && !n.Siblings {
		sib = ", no sibling"
	}
	servers := "1 server address"
	if n.Servers != 1 {
		servers = fmt.Sprintf("%d server addresses", n.Servers)
	}
	return fmt.Sprintf("%s / %s (%s%s)", mark(n.Mapping, n.MappingConfidence), mark(n.Filtering, n.FilteringConfidence), servers, sib)
}
