package rendezvous

import (
	"slices"
	"sync"
	"time"
)

// Status is a snapshot of what a node is doing. It marshals to JSON as the
// CLI prints it.
type Status struct {
	PeerID       string              `json:"peer_id"`
	Addrs        []string            `json:"addrs"`
	Scope        string              `json:"scope"`
	Reachability string              `json:"reachability"`
	DHTMode      string              `json:"dht_mode"`
	RoutingTable int                 `json:"routing_table"`
	Connections  int                 `json:"connections"`
	RelayService bool                `json:"relay_service"`
	Relays       []RelayStatus       `json:"relays,omitempty"`
	Publish      *PublishStatus      `json:"publish,omitempty"`
	NAT          *NATStatus          `json:"nat,omitempty"`
	KeepAlive    *KeepAliveStatus    `json:"keepalive,omitempty"`
	PortMappings []PortMappingStatus `json:"port_mappings,omitempty"`
	Topics       []string            `json:"topics,omitempty"`
	Bootstrap    []string            `json:"bootstrap_errors,omitempty"`
}

// RelayStatus is a relay reservation the node holds.
type RelayStatus struct {
	Relay   string    `json:"relay"`
	Addr    string    `json:"addr"`
	Expires time.Time `json:"expires"`
}

// PublishStatus is the outcome of the latest publish of the node's record.
type PublishStatus struct {
	Time       time.Time `json:"time"`
	Seq        uint64    `json:"seq"`
	Expires    time.Time `json:"expires"`
	Addrs      []string  `json:"addrs"`
	RelayAddrs []string  `json:"relay_addrs"`
	Holders    int       `json:"holders"`
	Keepers    int       `json:"keepers,omitempty"` // relays that took the record to keep it
	Fresh      bool      `json:"fresh_lookup"`
	RPCs       int64     `json:"rpcs"`
	Bytes      int64     `json:"bytes"`
	Error      string    `json:"error,omitempty"`
}

// Status returns a snapshot of the node.
func (n *Node) Status() Status {
	st := Status{
		PeerID:       n.h.ID().String(),
		Addrs:        addrStrings(n.h.Addrs()),
		Scope:        n.s.scope.String(),
		Reachability: n.Reachability().String(),
		DHTMode:      n.d.Mode().String(),
		RoutingTable: n.d.RoutingTableSize(),
		Connections:  len(n.h.Network().Conns()),
		RelayService: n.service.Enabled(),
		Relays:       n.relayStatus(),
		KeepAlive:    n.keepAliveStatus(),
		PortMappings: n.portMappingStatus(),
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.lastPublish != nil {
		p := *n.lastPublish
		st.Publish = &p
	}
	if n.nat != nil {
		v := *n.nat
		st.NAT = &v
	}
	for t := range n.advertised {
		st.Topics = append(st.Topics, t)
	}
	for _, e := range n.bootErrs {
		st.Bootstrap = append(st.Bootstrap, e.Error())
	}
	slices.Sort(st.Topics)
	return st
}

func (n *Node) relayStatus() []RelayStatus {
	var out []RelayStatus
	for _, r := range n.reserver.Reservations() {
		out = append(out, RelayStatus{Relay: r.Relay.String(), Addr: r.Addr.String(), Expires: r.Expires})
	}
	return out
}

// EventType names what changed.
type EventType string

// Event types.
const (
	EventPublished    EventType = "published"
	EventRelays       EventType = "relays"
	EventReachability EventType = "reachability"
	EventNAT          EventType = "nat"
	EventKeepAlive    EventType = "keepalive" // standing connections or their keep-alive changed
	EventPath         EventType = "path"      // a relayed connection became direct
)

// Event is a change in a node's status.
type Event struct {
	Type         EventType        `json:"event"`
	Time         time.Time        `json:"time"`
	Reachability string           `json:"reachability,omitempty"`
	Relays       []RelayStatus    `json:"relays,omitempty"`
	Publish      *PublishStatus   `json:"publish,omitempty"`
	NAT          *NATStatus       `json:"nat,omitempty"`
	KeepAlive    *KeepAliveStatus `json:"keepalive,omitempty"`
	PathChange   *PathEvent       `json:"path,omitempty"`
}

// Subscribe returns a channel of status events and a function that ends the
// subscription. Events are dropped, not queued without bound, when the
// subscriber falls more than 64 behind. The channel is closed by cancel or
// when the node closes.
func (n *Node) Subscribe() (<-chan Event, func()) { return n.events.subscribe() }

func (n *Node) emit(e Event) {
	e.Time = time.Now()
	n.events.send(e)
}

type broadcaster struct {
	mu     sync.Mutex
	subs   map[chan Event]struct{} // guarded by mu
	closed bool                    // guarded by mu
}

func newBroadcaster() *broadcaster { return &broadcaster{subs: map[chan Event]struct{}{}} }

func (b *broadcaster) subscribe() (<-chan Event, func()) {
	ch := make(chan Event, 64)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		close(ch)
		return ch, func() {}
	}
	b.subs[ch] = struct{}{}
	return ch, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if _, ok := b.subs[ch]; ok {
			delete(b.subs, ch)
			close(ch)
		}
	}
}

func (b *broadcaster) send(e Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

func (b *broadcaster) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for ch := range b.subs {
		close(ch)
	}
	clear(b.subs)
}
