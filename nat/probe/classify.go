package probe

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
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
	// MappingAmbiguousWith and FilteringAmbiguousWith name the neighbouring
	// behaviour the servers could not tell Mapping and Filtering from (see
	// the package doc: RFC 5780 needs a second server address, and for
	// filtering a sibling, to tell them apart), or BehaviorUnknown when the
	// samples determined the behaviour. When set, the reported behaviour is
	// only the likelier of the two and its confidence is halved: the
	// behaviour is undetermined between the two, and callers should say so
	// rather than report the guess.
	MappingAmbiguousWith   Behavior
	FilteringAmbiguousWith Behavior
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
	// Servers is how many server addresses answered the tests (1 or 2).
	// Siblings tells whether the first server accepted to have a sibling
	// send on its behalf, and SiblingChecked whether such a packet reached
	// a socket that had sent to the sibling before, which proves the path
	// works: only then does a filtered packet from the sibling tell
	// address-dependent filtering for sure.
	Servers        int
	Siblings       bool
	SiblingChecked bool
	// Packets and Bytes count what the sockets sent and received.
	Packets, Bytes int
	Elapsed        time.Duration
}

// Determined reports whether both the mapping and the filtering behaviour
// were told apart from their neighbours.
func (r Result) Determined() bool {
	return r.Mapping != BehaviorUnknown && r.Filtering != BehaviorUnknown &&
		r.MappingAmbiguousWith == BehaviorUnknown && r.FilteringAmbiguousWith == BehaviorUnknown
}

// verdict is one sample's answer for one behaviour.
type verdict struct {
	b Behavior
	// or is the neighbouring behaviour the servers could not rule out;
	// BehaviorUnknown when b is sure.
	or Behavior
}

func sure(b Behavior) verdict       { return verdict{b: b} }
func either(b, or Behavior) verdict { return verdict{b: b, or: or} }
func (v verdict) sure() bool        { return v.or == BehaviorUnknown }
func (v verdict) String() string    { return v.b.String() + "|" + v.or.String() }

// classifier holds the state of one Classify call. Only the filtering
// samples run at once; they write nothing but the counters of res, which
// mu guards.
type classifier struct {
	s      settings
	socket func() (net.PacketConn, error)
	mu     sync.Mutex
	// a is the first server that answered, altPort its alternate port
	// (0: none), altSeen whether that port answered a BINDING.
	a       netip.AddrPort
	altPort uint16
	altSeen bool
	// b is the first server at another IP address that answered (invalid
	// without one); others are the servers at other addresses than a's,
	// the candidates for a's sibling.
	b      netip.AddrPort
	others []netip.AddrPort
	// sib is the sibling a accepted to forward to (invalid without one);
	// sibChecked whether the forwarding path was seen to work.
	sib        netip.AddrPort
	sibChecked bool
	res        Result
	// mappings are the distinct external mappings seen, in the order they
	// were made, with the local port of their socket.
	mappings []portObs
}

type portObs struct{ local, external uint16 }

// Classify finds out how the NAT in front of the sockets socket makes maps
// and filters, as RFC 5780 §4.3-4.5 describe, with the probe servers given
// (see the package doc for what one server cannot tell). The first server
// that answers is "A"; the next one at another IP address that answers is
// "B"; the first server at another address that A accepts as its sibling
// sends the filtering test's packet. The sockets are closed before
// Classify returns. Every wait is a read deadline of at most WithWait, and
// every request is sent at most WithAttempts times, so Classify takes at
// most a few seconds per sample and server.
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
	c.res.Mapping, c.res.MappingAmbiguousWith, c.res.MappingConfidence = vote(mapping)
	if err := c.findSibling(ctx, c.res.Mapping == EndpointIndependent); err != nil {
		return err
	}
	// The filtering samples mostly wait for answers that a filtering NAT
	// drops; their sockets are independent, so they wait at once.
	filtering = make([]verdict, c.s.samples)
	errs := make([]error, c.s.samples)
	var wg sync.WaitGroup
	for i := range c.s.samples {
		wg.Go(func() { filtering[i], errs[i] = c.filteringSample(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	c.res.Samples = c.s.samples
	c.res.Servers = 1
	if c.b.IsValid() {
		c.res.Servers = 2
	}
	c.res.Siblings, c.res.SiblingChecked = c.sib.IsValid(), c.sibChecked
	c.res.Filtering, c.res.FilteringAmbiguousWith, c.res.FilteringConfidence = vote(filtering)
	c.res.Confidence = min(c.res.MappingConfidence, c.res.FilteringConfidence)
	c.res.PortPattern, c.res.PortConfidence = portPattern(c.mappings)
	return nil
}

// open opens a fresh socket whose traffic is counted in the result when
// the returned function closes it.
func (c *classifier) open(ctx context.Context) (*probeConn, func(), error) {
	p, err := openConn(ctx, c.socket)
	if err != nil {
		return nil, nil, err
	}
	return p, func() {
		c.mu.Lock()
		c.res.Packets += p.pkts
		c.res.Bytes += p.nbytes
		c.mu.Unlock()
		p.close()
	}, nil
}

// binding sends BINDING from p to dst and returns the answer, if one came.
func (c *classifier) binding(ctx context.Context, p *probeConn, dst netip.AddrPort) (message, bool, error) {
	m, _, ok, err := p.exchange(ctx, c.s, message{Type: typeBinding, TxID: newTxID()}, dst,
		func(m message, from netip.AddrPort) bool {
			return m.Type == typeBindingResponse && sameHost(from, dst)
		})
	return m, ok, err
}

// mappingSample sends BINDING from one fresh socket to A's two ports and
// to B. The first sample also picks A and B, and tests hairpinning.
func (c *classifier) mappingSample(ctx context.Context, servers []netip.AddrPort, first bool) (verdict, error) {
	p, done, err := c.open(ctx)
	if err != nil {
		return verdict{}, err
	}
	defer done()

	var r1 message
	if first {
		ok := false
		for i, srv := range servers {
			if r1, ok, err = c.binding(ctx, p, srv); err != nil {
				return verdict{}, err
			}
			if ok {
				c.a, c.altPort = srv, r1.AltPort
				for _, o := range servers[i+1:] {
					if o.Addr().Unmap() != srv.Addr().Unmap() && !slices.Contains(c.others, o) {
						c.others = append(c.others, o)
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
		if r1, ok, err = c.binding(ctx, p, c.a); err != nil || !ok {
			return verdict{}, err
		}
	}
	c.note(p.local, r1.Addr)

	var e2, e3 netip.AddrPort
	if c.altPort != 0 {
		r2, ok, err := c.binding(ctx, p, netip.AddrPortFrom(c.a.Addr(), c.altPort))
		if err != nil {
			return verdict{}, err
		}
		if ok {
			e2 = r2.Addr
			c.altSeen = true
			c.note(p.local, e2)
		}
	}
	// The first sample takes the first other server that answers as B.
	candidates := []netip.AddrPort{c.b}
	if first {
		candidates = c.others
	}
	for _, o := range candidates {
		if !o.IsValid() {
			continue
		}
		r3, ok, err := c.binding(ctx, p, o)
		if err != nil {
			return verdict{}, err
		}
		if ok {
			c.b, e3 = o, r3.Addr
			c.note(p.local, e3)
			break
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
		return sure(AddressAndPortDependent)
	case e3.IsValid() && e3 == e1:
		return sure(EndpointIndependent)
	case e3.IsValid() && e2.IsValid():
		return sure(AddressDependent)
	case e3.IsValid():
		// Without A's other port, the port dependence is not measured.
		return either(AddressAndPortDependent, AddressDependent)
	case e2.IsValid():
		// Without a second address, address dependence is not measured;
		// address-dependent mapping is the rarer of the two.
		return either(EndpointIndependent, AddressDependent)
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

// findSibling picks the server that sends the filtering test's packet: the
// first of the other servers (B first) that A accepts as its sibling. Each
// candidate is tried from a fresh socket that first sends BINDING to it,
// so that whatever the NAT's filtering, the candidate's packet on A's
// behalf gets through when the mapping is endpoint-independent: when it
// arrives, the forwarding path is known to work (sibChecked), and a packet
// that does not arrive later was filtered. A candidate whose forwarded
// packet does not arrive is kept only when no other one is checked.
//
// The check can only succeed when the mapping is endpoint-independent;
// otherwise (check false) a candidate is only asked to be accepted.
func (c *classifier) findSibling(ctx context.Context, check bool) error {
	candidates := c.others
	if c.b.IsValid() {
		candidates = append([]netip.AddrPort{c.b}, slices.DeleteFunc(slices.Clone(c.others),
			func(o netip.AddrPort) bool { return o == c.b })...)
	}
	for _, cand := range candidates {
		accepted, arrived, err := c.trySibling(ctx, cand, check)
		if err != nil {
			return err
		}
		if accepted && !c.sib.IsValid() {
			c.sib = cand
		}
		if accepted && !check {
			return nil
		}
		if arrived {
			c.sib, c.sibChecked = cand, true
			return nil
		}
	}
	return nil
}

// trySibling asks A to have cand send to a socket that has sent to cand.
// Without check, it returns once A accepted.
func (c *classifier) trySibling(ctx context.Context, cand netip.AddrPort, check bool) (accepted, arrived bool, err error) {
	p, done, err := c.open(ctx)
	if err != nil {
		return false, false, err
	}
	defer done()
	if _, ok, err := c.binding(ctx, p, cand); err != nil || !ok {
		return false, false, err
	}
	req := message{Type: typePeerSend, TxID: newTxID(), Addr: cand}
	acked := false
	for range c.s.attempts {
		if err := p.send(req, c.a); err != nil {
			return false, false, err
		}
		deadline := time.Now().Add(c.s.wait)
		for {
			m, from, ok, err := p.read(ctx, deadline)
			if err != nil {
				return false, false, err
			}
			if !ok {
				break
			}
			switch {
			case m.TxID != req.TxID:
			case m.Type == typePeerSendAck && sameHost(from, c.a):
				if m.Status != statusOK {
					return false, false, nil
				}
				if !check {
					return true, false, nil
				}
				acked = true
			case m.Type == typePeerSendResponse && sameHost(from, cand):
				return true, true, nil
			}
		}
	}
	return acked, false, nil
}

// filteringSample sends ALT-PORT and PEER-SEND to A from a fresh socket,
// and sees what comes back (RFC 5780 §4.4).
func (c *classifier) filteringSample(ctx context.Context) (verdict, error) {
	testAlt, testPeer := c.altPort != 0 && c.altSeen, c.sib.IsValid()
	if !testAlt && !testPeer {
		return verdict{}, nil
	}
	p, done, err := c.open(ctx)
	if err != nil {
		return verdict{}, err
	}
	defer done()
	alt := netip.AddrPortFrom(c.a.Addr(), c.altPort)
	altReq := message{Type: typeAltPort, TxID: newTxID()}
	peerReq := message{Type: typePeerSend, TxID: newTxID(), Addr: c.sib}
	var gotAlt, gotPeer bool
	for range c.s.attempts {
		if testAlt && !gotAlt {
			if err := p.send(altReq, c.a); err != nil {
				return verdict{}, err
			}
		}
		if testPeer && !gotPeer {
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
			case m.TxID == peerReq.TxID && m.Type == typePeerSendResponse && sameHost(from, c.sib):
				gotPeer = true
			}
		}
		if (gotAlt || !testAlt) && (gotPeer || !testPeer) {
			break
		}
	}
	return filteringVerdict(testAlt, gotAlt, testPeer, c.sibChecked, gotPeer), nil
}

// filteringVerdict names the filtering from what arrived: the answer from
// A's other port (when A has one that answers), and the packet from A's
// sibling (when it has one), whose forwarding path may have been checked.
func filteringVerdict(testAlt, gotAlt, sibling, checked, gotPeer bool) verdict {
	switch {
	case sibling && gotPeer:
		// A packet from an address the socket never sent to.
		return sure(EndpointIndependent)
	case testAlt && gotAlt && sibling && checked:
		// The sibling's packet was filtered, A's other port's was not.
		return sure(AddressDependent)
	case testAlt && gotAlt:
		// No sibling, or one whose packets may not have been sent:
		// nothing tells endpoint-independent filtering apart.
		return either(AddressDependent, EndpointIndependent)
	case testAlt:
		return sure(AddressAndPortDependent)
	case sibling && checked:
		// No other port to tell the two apart.
		return either(AddressAndPortDependent, AddressDependent)
	}
	return verdict{}
}

// vote returns the behaviour most samples saw, the neighbouring behaviour
// they could not rule out (when no sample that saw it was sure), and the
// confidence in it.
func vote(vs []verdict) (best, or Behavior, conf float64) {
	if len(vs) == 0 {
		return BehaviorUnknown, BehaviorUnknown, 0
	}
	count, sureCount := map[Behavior]int{}, map[Behavior]int{}
	unsure := map[Behavior]Behavior{}
	for _, v := range vs {
		switch {
		case v.b == BehaviorUnknown:
			continue
		case v.sure():
			sureCount[v.b]++
		case unsure[v.b] == BehaviorUnknown:
			unsure[v.b] = v.or
		}
		count[v.b]++
	}
	n := 0
	for _, b := range []Behavior{EndpointIndependent, AddressDependent, AddressAndPortDependent} {
		if count[b] > n {
			best, n = b, count[b]
		}
	}
	if best == BehaviorUnknown {
		return best, BehaviorUnknown, 0
	}
	conf = float64(n) / float64(len(vs))
	if sureCount[best] == 0 {
		or = unsure[best]
		conf /= 2
	}
	return best, or, conf
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
