package rendezvous

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/p2pos/rendezvous/dht"
	"github.com/p2pos/rendezvous/nat"
	"github.com/p2pos/rendezvous/nat/probe"
)

// A node left on auto that finds itself behind a NAT surveys it: it asks
// public peers' probe servers what its NAT's mapping and filtering
// behaviour is, then measures how long the NAT keeps an idle UDP mapping
// (which takes about the longest candidate duration). Each result goes into
// the node's record as soon as it is known. The survey runs again after the
// node's reachability changes.

// NATStatus is what the node learned about its NAT.
type NATStatus struct {
	Mapping   string `json:"mapping"`
	Filtering string `json:"filtering"`
	// MappingAmbiguousWith and FilteringAmbiguousWith, when set, name the
	// behaviour the probe servers found could not tell Mapping and
	// Filtering from: the behaviour is undetermined between the two (the
	// node's record then says unknown). See probe.Result.
	MappingAmbiguousWith   string        `json:"mapping_ambiguous_with,omitempty"`
	FilteringAmbiguousWith string        `json:"filtering_ambiguous_with,omitempty"`
	PortPattern            string        `json:"port_pattern,omitempty"`
	Confidence             float64       `json:"confidence"`
	UDPTimeout             time.Duration `json:"udp_timeout_ns,omitempty"`
	UDPTimeoutLower        time.Duration `json:"udp_timeout_lower_ns,omitempty"`
	UDPTimeoutUpper        time.Duration `json:"udp_timeout_upper_ns,omitempty"`
	ProbeServers           int           `json:"probe_servers"`
	Error                  string        `json:"error,omitempty"`
	TimeoutMeasuring       bool          `json:"timeout_measuring,omitempty"`
}

// surveyServers is how many probe servers the survey is given: two at
// distinct addresses are needed, and more let Classify skip one that does
// not answer or find the first one's sibling.
const surveyServers = 4

// A survey that finds no probe server looks again surveyAttempts times,
// surveyRetry apart.
const (
	surveyAttempts = 4
	surveyRetry    = 5 * time.Second
)

// toDHTBehavior is what the record says of a behaviour: unknown when it was
// not told apart from ambiguous.
func toDHTBehavior(b, ambiguous probe.Behavior) dht.Behavior {
	if ambiguous != probe.BehaviorUnknown {
		return dht.BehaviorUnknown
	}
	switch b {
	case probe.EndpointIndependent:
		return dht.EndpointIndependent
	case probe.AddressDependent:
		return dht.AddressDependent
	case probe.AddressAndPortDependent:
		return dht.AddressAndPortDependent
	}
	return dht.BehaviorUnknown
}

// surveyNAT runs the survey once, until ctx ends.
func (n *Node) surveyNAT(ctx context.Context) {
	socket := func() (net.PacketConn, error) { return net.ListenUDP("udp4", nil) }
	var servers []nat.ProbeServer
	var err error
	// Probe servers run on public peers the node may not know yet: look
	// again a few times before giving up.
	for attempt := 0; ; attempt++ {
		cands := append(n.d.RoutingTablePeers(), n.h.Network().Peers()...)
		servers, err = nat.FindProbeServers(ctx, n.h, n.s.scope, cands, surveyServers)
		if err == nil || attempt == surveyAttempts-1 {
			break
		}
		t := time.NewTimer(surveyRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
	if err != nil {
		n.setNAT(func(st *NATStatus) { st.Error = err.Error() })
		return
	}
	primaries := make([]netip.AddrPort, len(servers))
	for i, s := range servers {
		primaries[i] = s.Primary
	}
	res, err := probe.Classify(ctx, primaries, socket)
	n.mu.Lock()
	n.udpBlocked = errors.Is(err, probe.ErrUDPBlocked)
	n.mu.Unlock()
	if err != nil {
		n.setNAT(func(st *NATStatus) { st.Error = err.Error(); st.ProbeServers = len(servers) })
		return
	}
	n.setNAT(func(st *NATStatus) {
		*st = NATStatus{Mapping: res.Mapping.String(), Filtering: res.Filtering.String(),
			MappingAmbiguousWith: ambiguousText(res.MappingAmbiguousWith), FilteringAmbiguousWith: ambiguousText(res.FilteringAmbiguousWith),
			PortPattern: string(res.PortPattern), Confidence: res.Confidence, ProbeServers: res.Servers,
			TimeoutMeasuring: true}
	})
	n.mu.Lock()
	n.natInfo.Mapping = toDHTBehavior(res.Mapping, res.MappingAmbiguousWith)
	n.natInfo.Filtering = toDHTBehavior(res.Filtering, res.FilteringAmbiguousWith)
	n.mu.Unlock()
	n.triggerPublish()

	tr, err := probe.MeasureTimeout(ctx, primaries[0], n.s.timeoutCandidates, socket, nil)
	n.setNAT(func(st *NATStatus) {
		st.TimeoutMeasuring = false
		if err != nil {
			st.Error = err.Error()
			return
		}
		st.UDPTimeout, st.UDPTimeoutLower, st.UDPTimeoutUpper = tr.Estimate, tr.Lower, tr.Upper
	})
	if err != nil {
		return
	}
	n.mu.Lock()
	n.natInfo.UDPTimeout = tr.Estimate.Truncate(time.Second)
	n.mu.Unlock()
	n.triggerPublish()
}

// ambiguousText is the status text of an ambiguity: "" for none.
func ambiguousText(b probe.Behavior) string {
	if b == probe.BehaviorUnknown {
		return ""
	}
	return b.String()
}

func (n *Node) setNAT(f func(*NATStatus)) {
	n.mu.Lock()
	if n.nat == nil {
		n.nat = &NATStatus{}
	}
	f(n.nat)
	v := *n.nat
	n.mu.Unlock()
	n.emit(Event{Type: EventNAT, NAT: &v})
}

// restartSurvey cancels a running survey and starts a new one when the
// node is not public.
func (n *Node) restartSurvey(r Reachability) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.surveyCancel != nil {
		n.surveyCancel()
		n.surveyCancel = nil
	}
	n.natInfo = dht.NATInfo{}
	n.nat = nil
	if r == ReachabilityPublic || n.closed() || n.s.noNATSurvey || n.s.noPublish {
		return
	}
	ctx, cancel := context.WithCancel(n.ctx)
	n.surveyCancel = cancel
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.surveyNAT(ctx)
	}()
}
