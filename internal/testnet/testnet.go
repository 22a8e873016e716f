// Package testnet builds networks of rendezvous nodes on loopback, for tests,
// the demo and benchmarks. Public nodes are forced public (DHT servers and
// relays) and private nodes forced private (DHT clients holding relay
// reservations); 127.0.0.0/8 counts as public so that everything runs on one
// machine. All traffic stays on loopback.
package testnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	circuit "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"

	"github.com/p2pos/rendezvous"
	"github.com/p2pos/rendezvous/scope"
)

// Loopback is the scope of a loopback network.
var Loopback = netip.MustParsePrefix("127.0.0.0/8")

// Transport selects what nodes listen on.
type Transport string

// Transports.
const (
	QUIC Transport = "quic"
	TCP  Transport = "tcp"
	Both Transport = "both"
)

// Config describes a network.
type Config struct {
	Public    int
	Private   int
	Transport Transport // default QUIC
	// Bootstraps is how many public nodes each node bootstraps from (default 3).
	Bootstraps int
	// Parallel is how many nodes start at once (default 8).
	Parallel int
	// Options are added to every node's options.
	Options []rendezvous.Option
}

// Network is a running network. Close stops every node.
type Network struct {
	cfg     Config
	mu      sync.Mutex
	Public  []*rendezvous.Node
	Private []*rendezvous.Node
}

// ListenAddrs returns loopback listen addresses for t.
func ListenAddrs(t Transport) []string {
	switch t {
	case TCP:
		return []string{"/ip4/127.0.0.1/tcp/0"}
	case Both:
		return []string{"/ip4/127.0.0.1/udp/0/quic-v1", "/ip4/127.0.0.1/tcp/0"}
	}
	return []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
}

// RelayResources are relay limits for a loopback network: every node has the
// same IP, so the per-IP limits are lifted.
func RelayResources() circuit.Resources {
	r := circuit.DefaultResources()
	r.MaxReservations = 1024
	r.MaxReservationsPerIP = 1024
	r.MaxReservationsPerASN = 1024
	r.MaxCircuits = 64
	return r
}

// BaseOptions are the options every node of a loopback network gets. They
// keep all traffic on loopback.
func BaseOptions(t Transport) []rendezvous.Option {
	return []rendezvous.Option{
		rendezvous.WithListenAddrStrings(ListenAddrs(t)...),
		rendezvous.WithScope(scope.With(Loopback)),
		rendezvous.WithRelayResources(RelayResources()),
		rendezvous.WithRepublishDebounce(100 * time.Millisecond),
		// Nodes left on auto would ask the machine's real gateway for port
		// mappings: a loopback network keeps to loopback.
		rendezvous.WithoutPortMapping(),
	}
}

// New starts a network and waits until every node has published its record
// (private nodes: with at least one relay address), or ctx ends. On error
// every node started is closed.
func New(ctx context.Context, cfg Config) (_ *Network, err error) {
	if cfg.Public < 1 {
		return nil, errors.New("testnet: need at least one public node")
	}
	if cfg.Transport == "" {
		cfg.Transport = QUIC
	}
	if cfg.Bootstraps <= 0 {
		cfg.Bootstraps = 3
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 8
	}
	n := &Network{cfg: cfg}
	defer func() {
		if err != nil {
			err = errors.Join(err, n.Close())
		}
	}()
	first, err := n.start(ctx, rendezvous.ReachabilityPublic, nil)
	if err != nil {
		return nil, err
	}
	n.Public = append(n.Public, first)
	if err := n.startMany(ctx, cfg.Public-1, rendezvous.ReachabilityPublic); err != nil {
		return nil, err
	}
	if err := n.startMany(ctx, cfg.Private, rendezvous.ReachabilityPrivate); err != nil {
		return nil, err
	}
	for _, node := range n.All() {
		if err := WaitPublished(ctx, node, node.Reachability() == rendezvous.ReachabilityPrivate); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// AddNode starts one more node with the given reachability and extra
// options, bootstrapped from the public nodes, and waits for its record.
func (n *Network) AddNode(ctx context.Context, r rendezvous.Reachability, opts ...rendezvous.Option) (*rendezvous.Node, error) {
	node, err := n.start(ctx, r, n.bootstrap(), opts...)
	if err != nil {
		return nil, err
	}
	if err := WaitPublished(ctx, node, r == rendezvous.ReachabilityPrivate); err != nil {
		return nil, errors.Join(err, node.Close())
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if r == rendezvous.ReachabilityPublic {
		n.Public = append(n.Public, node)
	} else {
		n.Private = append(n.Private, node)
	}
	return node, nil
}

func (n *Network) startMany(ctx context.Context, count int, r rendezvous.Reachability) error {
	sem := make(chan struct{}, n.cfg.Parallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for range count {
		boot := n.bootstrap()
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			node, err := n.start(ctx, r, boot)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			n.mu.Lock()
			if r == rendezvous.ReachabilityPublic {
				n.Public = append(n.Public, node)
			} else {
				n.Private = append(n.Private, node)
			}
			n.mu.Unlock()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// bootstrap picks up to cfg.Bootstraps public nodes, the most recent ones
// first so that the network does not hang on one node.
func (n *Network) bootstrap() []peer.AddrInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []peer.AddrInfo
	for i := len(n.Public) - 1; i >= 0 && len(out) < n.cfg.Bootstraps; i-- {
		out = append(out, peer.AddrInfo{ID: n.Public[i].ID(), Addrs: n.Public[i].Addrs()})
	}
	return out
}

// Bootstrap returns the address info of every public node.
func (n *Network) Bootstrap() []peer.AddrInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]peer.AddrInfo, 0, len(n.Public))
	for _, p := range n.Public {
		out = append(out, peer.AddrInfo{ID: p.ID(), Addrs: p.Addrs()})
	}
	return out
}

// BootstrapAddrs returns the public nodes' addresses as a command line
// takes them: multiaddrs ending in /p2p/<peer ID>.
func (n *Network) BootstrapAddrs() []string {
	var out []string
	for _, ai := range n.Bootstrap() {
		for _, a := range ai.Addrs {
			out = append(out, a.String()+"/p2p/"+ai.ID.String())
		}
	}
	return out
}

func (n *Network) start(ctx context.Context, r rendezvous.Reachability, boot []peer.AddrInfo, extra ...rendezvous.Option) (*rendezvous.Node, error) {
	opts := append(BaseOptions(n.cfg.Transport), rendezvous.WithReachability(r), rendezvous.WithBootstrap(boot...))
	opts = append(opts, n.cfg.Options...)
	opts = append(opts, extra...)
	node, err := rendezvous.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("testnet: start %s node: %w", r, err)
	}
	return node, nil
}

// All returns every node, public ones first.
func (n *Network) All() []*rendezvous.Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append(slices.Clone(n.Public), n.Private...)
}

// Close stops every node. It is idempotent.
func (n *Network) Close() error {
	n.mu.Lock()
	nodes := append(slices.Clone(n.Public), n.Private...)
	n.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, node := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = node.Close()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// WaitPublished waits until node has published its record successfully and,
// if withRelay, with at least one relay address.
func WaitPublished(ctx context.Context, node *rendezvous.Node, withRelay bool) error {
	return WaitStatus(ctx, node, func(st rendezvous.Status) bool {
		p := st.Publish
		return p != nil && p.Error == "" && (!withRelay || len(p.RelayAddrs) > 0)
	})
}

// WaitStatus waits, on the node's events, until cond holds for its status.
func WaitStatus(ctx context.Context, node *rendezvous.Node, cond func(rendezvous.Status) bool) error {
	events, cancel := node.Subscribe()
	defer cancel()
	for {
		st := node.Status()
		if cond(st) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("testnet: node %s: waiting for status: %w (last status: publish %+v, relays %d)",
				node.ID(), ctx.Err(), st.Publish, len(st.Relays))
		case _, ok := <-events:
			if !ok {
				return fmt.Errorf("testnet: node %s closed", node.ID())
			}
		}
	}
}
