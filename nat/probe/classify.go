package probe

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"time"
)

// Behavior is a NAT's mapping or filtering behaviour, named as in RFC 4787.
type Behavior int

const (
	// BehaviorUnknown: not measured, or the samples did not say.
	BehaviorUnknown Behavior = iota
	EndpointIndependent
	AddressDependent
	AddressAndPortDependent
)

func (b Behavior) String() string {
	switch b {
	case EndpointIndependent:
		return "endpoint-independent"
	case AddressDependent:
		return "address-dependent"
	case AddressAndPortDependent:
		return "address-and-port-dependent"
	}
	return "unknown"
}

// MarshalText encodes b as its String.
func (b Behavior) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// PortPattern is how a NAT picks the external ports of new mappings.
type PortPattern string

const (
	// PortPreserving: the external port is the local socket's port.
	PortPreserving PortPattern = "preserving"
	// PortSequential: each new mapping's port is a little above the last.
	PortSequential PortPattern = "sequential"
	// PortRandom: anything else.
	PortRandom PortPattern = "random"
	// PortUnknown: too few mappings were seen.
	PortUnknown PortPattern = "unknown"
)

// maxSequentialStep is the largest port step between consecutive mappings
// still called sequential.
const maxSequentialStep = 16

// Result is what Classify learned about the NAT in front of its sockets.
type Result struct {
	Mapping   Behavior
	Filtering Behavior
	// PortPattern is how external ports relate to local ports and to each
	// other.
	PortPattern PortPattern
	// Hairpin tells whether a packet sent to the socket's own external
	// address came back; nil when not tested.
	Hairpin *bool
	// External is the address the first server saw the first socket as.
	External netip.AddrPort
	// Samples is how many times the tests were repeated.
	Samples int
	// Confidence of each field, in [0, 1]: the share of samples that agreed
	// with the reported value, halved when the servers available cannot
	// tell the value from another (see the package doc). Confidence is the
	// smallest of MappingConfidence and FilteringConfidence.
	MappingConfidence   float64
	FilteringConfidence float64
	PortConfidence      float64
	Confidence          float64
	// Servers is how many server addresses the tests used (1 or 2);
	// Siblings whether the second server sent on the first's behalf.
	Servers  int
	Siblings bool
	// Packets and Bytes count what the sockets sent and received.
	Packets, Bytes int
	Elapsed        time.Duration
}

// verdict is one sample's answer for one behaviour.
type verdict struct {
	b    Behavior
	sure bool // false when the servers cannot rule out a neighbouring behaviour
}

// classifier holds the state of one Classify call.
type classifier struct {
	s       settings
	socket  func() (net.PacketConn, error)
	a, b    netip.AddrPort // first server; second (b invalid without one)
	altPort uint16
	res     Result
	// mappings are the distinct external mappings seen, in the order they
	// were made, with the local port of their socket.
	mappings []portObs
}

type portObs struct{ local, external uint16 }

// Classify finds out how the NAT in front of the sockets socket makes maps
// and filters, as RFC 5780 §4.3-4.5 describe, with the probe servers given
// (see the package doc for what one server cannot tell). The first server
// that answers is "A"; the next one at another IP address is "B". The
// sockets are closed before Classify returns. Every wait is a read deadline
// of at most WithWait, and every request is sent at most WithAttempts
// times, so Classify takes at most a few seconds per sample.
//
// When no server answers, Classify returns ErrUDPBlocked.
func Classify(ctx context.Context, servers []netip.AddrPort, socket func() (net.PacketConn, error), opts ...Option) (Result, error) {
	s := defaultSettings()
	for _, o := range opts {
		o(&s)
	}
	if len(servers) == 0 {
		return Result{}, errors.New("probe: no servers")
	}
	if socket == nil {
		return Result{}, errors.New("probe: nil socket factory")
	}
	start := time.Now()
	c := &classifier{s: s, socket: socket}
	c.res.PortPattern = PortUnknown
	err := c.run(ctx, servers)
	c.res.Elapsed = time.Since(start)
	return c.res, err
}

func (c *classifier) run(ctx context.Context, servers []netip.AddrPort) error {
	var mapping, filtering []verdict
	for i := range c.s.samples {
		v, err := c.mappingSample(ctx, servers, i == 0)
		if err != nil {
			return err
		}
		mapping = append(mapping, v)
	}
	for range c.s.samples {
		v, err := c.filteringSample(ctx)
		if err != nil {
			return err
		}
		filtering = append(filtering, v)
	}
	c.res.Samples = c.s.samples
	c.res.Servers = 1
	if c.b.IsValid() {
		c.res.Servers = 2
	}
	c.res.Mapping, c.res.MappingConfidence = vote(mapping)
	c.res.Filtering, c.res.FilteringConfidence = vote(filtering)
	c.res.Confidence = min(c.res.MappingConfidence, c.res.FilteringConfidence)
	c.res.PortPattern, c.res.PortConfidence = portPattern(c.mappings)
	return nil
}

// mappingSample sends BINDING from one fresh socket to A's two ports and
// to B. The first sample also picks A and B, and tests hairpinning.
func (c *classifier) mappingSample(ctx context.Context, servers []netip.AddrPort, first bool) (verdict, error) {
	p, err := openConn(ctx, c.socket)
	if err != nil {
		return verdict{}, err
	}
	defer func() {
		c.res.Packets += p.pkts
		c.res.Bytes += p.nbytes
		p.close()
	}()
	binding := func(dst netip.AddrPort) (message, bool, error) {
		m, _, ok, err := p.exchange(ctx, c.s, message{Type: typeBinding, TxID: newTxID()}, dst,
			func(m message, from netip.AddrPort) bool {
				return m.Type == typeBindingResponse && sameHost(from, dst)
			})
		return m, ok, err
	}

	var r1 message
	if first {
		ok := false
		for i, srv := range servers {
			if r1, ok, err = binding(srv); err != nil {
				return verdict{}, err
			}
			if ok {
				c.a, c.altPort = srv, r1.AltPort
				for _, o := range servers[i+1:] {
					if o.Addr().Unmap() != srv.Addr().Unmap() {
						c.b = o
						break
					}
				}
				break
			}
		}
		if !ok {
			return verdict{}, ErrUDPBlocked
		}
		c.res.External = r1.Addr
	} else {
		ok := false
		if r1, ok, err = binding(c.a); err != nil || !ok {
			return verdict{}, err
		}
	}
	c.note(p.local, r1.Addr)

	var e2, e3 netip.AddrPort
	if c.altPort != 0 {
		r2, ok, err := binding(netip.AddrPortFrom(c.a.Addr(), c.altPort))
		if err != nil {
			return verdict{}, err
		}
		if ok {
			e2 = r2.Addr
			c.note(p.local, e2)
		}
	}
	if c.b.IsValid() {
		r3, ok, err := binding(c.b)
		if err != nil {
			return verdict{}, err
		}
		if ok {
			e3 = r3.Addr
			c.note(p.local, e3)
		}
	}
	if first && c.s.hairpin {
		h, err := c.hairpin(ctx, p, r1.Addr)
		if err != nil {
			return verdict{}, err
		}
		c.res.Hairpin = &h
	}
	return mappingVerdict(r1.Addr, e2, e3), nil
}

// mappingVerdict compares the addresses seen by A (e1), A's other port (e2)
// and B (e3); e2 and e3 are invalid when not measured.
func mappingVerdict(e1, e2, e3 netip.AddrPort) verdict {
	switch {
	case e2.IsValid() && e2 != e1:
		return verdict{AddressAndPortDependent, true}
	case e3.IsValid() && e3 == e1:
		return verdict{EndpointIndependent, true}
	case e3.IsValid() && e2.IsValid():
		return verdict{AddressDependent, true}
	case e3.IsValid():
		// Without A's other port, the port dependence is not measured.
		return verdict{AddressAndPortDependent, false}
	case e2.IsValid():
		// Without a second address, address dependence is not measured.
		return verdict{EndpointIndependent, false}
	}
	return verdict{}
}

// note records the mapping e of a socket bound to local, if new.
func (c *classifier) note(local, e netip.AddrPort) {
	for _, o := range c.mappings {
		if o.external == e.Port() && o.local == local.Port() {
			return
		}
	}
	c.mappings = append(c.mappings, portObs{local: local.Port(), external: e.Port()})
}

// hairpin sends a BINDING request from p to its own external address and
// reports whether it came back (RFC 5780 §4.5).
func (c *classifier) hairpin(ctx context.Context, p *probeConn, external netip.AddrPort) (bool, error) {
	req := message{Type: typeBinding, TxID: newTxID()}
	_, _, ok, err := p.exchange(ctx, settings{attempts: 1, wait: c.s.wait}, req, external,
		func(m message, _ netip.AddrPort) bool { return m.Type == typeBinding })
	return ok, err
}

// filteringSample sends ALT-PORT and PEER-SEND to A from a fresh socket,
// and sees what comes back (RFC 5780 §4.4).
func (c *classifier) filteringSample(ctx context.Context) (verdict, error) {
	p, err := openConn(ctx, c.socket)
	if err != nil {
		return verdict{}, err
	}
	defer func() {
		c.res.Packets += p.pkts
		c.res.Bytes += p.nbytes
		p.close()
	}()
	alt := netip.AddrPortFrom(c.a.Addr(), c.altPort)
	altReq := message{Type: typeAltPort, TxID: newTxID()}
	peerReq := message{Type: typePeerSend, TxID: newTxID(), Addr: c.b}
	testAlt, testPeer := c.altPort != 0, c.b.IsValid()
	if !testAlt && !testPeer {
		return verdict{}, nil
	}
	var gotAlt, gotPeer, acked, sibling bool
	for range c.s.attempts {
		if testAlt && !gotAlt {
			if err := p.send(altReq, c.a); err != nil {
				return verdict{}, err
			}
		}
		if testPeer && !gotPeer && (!acked || sibling) {
			if err := p.send(peerReq, c.a); err != nil {
				return verdict{}, err
			}
		}
		deadline := time.Now().Add(c.s.wait)
		for {
			m, from, ok, err := p.read(ctx, deadline)
			if err != nil {
				return verdict{}, err
			}
			if !ok {
				break
			}
			switch {
			case m.TxID == altReq.TxID && m.Type == typeAltPortResponse && sameHost(from, alt):
				gotAlt = true
			case m.TxID == peerReq.TxID && m.Type == typePeerSendAck && sameHost(from, c.a):
				acked, sibling = true, m.Status == statusOK
			case m.TxID == peerReq.TxID && m.Type == typePeerSendResponse && sameHost(from, c.b):
				gotPeer = true
			}
		}
		if (gotAlt || !testAlt) && (gotPeer || !testPeer || (acked && !sibling)) {
			break
		}
	}
	if sibling {
		c.res.Siblings = true
	}
	return filteringVerdict(testAlt, gotAlt, sibling, gotPeer), nil
}

// filteringVerdict names the filtering from what arrived: the answer from
// A's other port (when A has one), and the packet from sibling B (when B is
// a sibling of A).
func filteringVerdict(testAlt, gotAlt, sibling, gotPeer bool) verdict {
	switch {
	case sibling && gotPeer:
		return verdict{EndpointIndependent, true}
	case testAlt && gotAlt:
		// With a sibling, B's packet was filtered: address-dependent.
		// Without one, it may as well be endpoint-independent.
		return verdict{AddressDependent, sibling}
	case testAlt:
		return verdict{AddressAndPortDependent, true}
	case sibling:
		// No other port to tell the two apart.
		return verdict{AddressAndPortDependent, false}
	}
	return verdict{}
}

// vote returns the behaviour most samples saw and the confidence in it.
func vote(vs []verdict) (Behavior, float64) {
	if len(vs) == 0 {
		return BehaviorUnknown, 0
	}
	count := map[Behavior]int{}
	unsure := map[Behavior]bool{}
	for _, v := range vs {
		if v.b == BehaviorUnknown {
			continue
		}
		count[v.b]++
		if !v.sure {
			unsure[v.b] = true
		}
	}
	best, n := BehaviorUnknown, 0
	for _, b := range []Behavior{EndpointIndependent, AddressDependent, AddressAndPortDependent} {
		if count[b] > n {
			best, n = b, count[b]
		}
	}
	if best == BehaviorUnknown {
		return best, 0
	}
	conf := float64(n) / float64(len(vs))
	if unsure[best] {
		conf /= 2
	}
	return best, conf
}

// portPattern names how the NAT picked the external ports of the mappings,
// listed in the order they were made.
func portPattern(obs []portObs) (PortPattern, float64) {
	if len(obs) < 2 {
		return PortUnknown, 0
	}
	preserved := 0
	for _, o := range obs {
		if o.local == o.external {
			preserved++
		}
	}
	if preserved == len(obs) {
		return PortPreserving, 1
	}
	if len(obs) >= 3 {
		seq := 0
		for i := 1; i < len(obs); i++ {
			if step := obs[i].external - obs[i-1].external; step >= 1 && step <= maxSequentialStep {
				seq++
			}
		}
		if seq == len(obs)-1 {
			return PortSequential, 1
		}
	}
	return PortRandom, 1 - float64(preserved)/float64(len(obs))
}
