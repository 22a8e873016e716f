package standby

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2pos/rendezvous"
	"github.com/p2pos/rendezvous/relay"
)

// rdvTracker follows `rendezvous node --json`: a ready line holding the
// node's Status, then one line per Event.
type rdvTracker struct {
	want int // relays the node should hold

	id      string
	held    []string // relay peer IDs, sorted
	publish *rendezvous.PublishStatus
	nat     *rendezvous.NATStatus
	// Line numbers of the latest publish, relay change, and end of a NAT
	// survey: the record is current when it came after both.
	seq, publishSeq, relaysSeq, natDoneSeq int

	win window
}

// rdvLine is any line of `rendezvous node --json`.
type rdvLine struct {
	rendezvous.Event
	PeerID string             `json:"peer_id"`
	Status *rendezvous.Status `json:"status"`
}

func (t *rdvTracker) apply(b []byte, now time.Time) {
	var l rdvLine
	if json.Unmarshal(b, &l) != nil {
		return
	}
	t.seq++
	switch l.Type {
	case "ready":
		t.id = l.PeerID
		if st := l.Status; st != nil {
			t.held = relayIDs(st.Relays)
			t.publish, t.nat = st.Publish, st.NAT
			t.publishSeq, t.relaysSeq = t.seq, t.seq
			if natDone(st.NAT) {
				t.natDoneSeq = t.seq
			}
		}
	case rendezvous.EventRelays:
		held := relayIDs(l.Relays)
		var lost []string
		for _, r := range t.held {
			if !slices.Contains(held, r) {
				lost = append(lost, short(r))
			}
		}
		if t.win.open {
			t.win.lost += len(lost)
		}
		t.win.note(now, "relays: %d held, lost %s", len(held), strings.Join(lost, ","))
		t.held, t.relaysSeq = held, t.seq
	case rendezvous.EventPublished:
		t.publish, t.publishSeq = l.Publish, t.seq
		if t.win.open {
			t.win.republishes++
		}
		if l.Publish != nil && l.Publish.Error != "" {
			t.win.note(now, "publish failed: %s", l.Publish.Error)
		}
	case rendezvous.EventNAT:
		t.nat = l.NAT
		if natDone(l.NAT) {
			t.natDoneSeq = t.seq
		}
		t.win.note(now, "NAT survey event")
	case rendezvous.EventReachability:
		if t.win.open {
			t.win.reachChanges++
		}
		t.win.note(now, "reachability %s", l.Reachability)
	}
}

func natDone(n *rendezvous.NATStatus) bool { return n != nil && !n.TimeoutMeasuring }

func relayIDs(rs []rendezvous.RelayStatus) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, r.Relay)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// recordRelays returns the relays (peer IDs, sorted) named by a record's
// relay addresses.
func recordRelays(addrs []string) []string {
	out := []string{}
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			continue
		}
		if r := relay.RelayOf(a); r != "" {
			out = append(out, r.String())
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func (t *rdvTracker) settled() (bool, string) {
	var missing []string
	if t.id == "" {
		missing = append(missing, "not ready")
	}
	if len(t.held) < t.want {
		missing = append(missing, fmt.Sprintf("%d of %d relays held", len(t.held), t.want))
	}
	switch pub := t.publish; {
	case pub == nil:
		missing = append(missing, "record not published")
	case pub.Error != "":
		missing = append(missing, "last publish failed: "+pub.Error)
	case len(pub.RelayAddrs) == 0 || !slices.Equal(recordRelays(pub.RelayAddrs), t.held) || t.publishSeq < t.relaysSeq:
		missing = append(missing, "record lacks the relays held")
	}
	switch {
	case t.nat == nil:
		missing = append(missing, "NAT survey not done")
	case t.nat.TimeoutMeasuring:
		missing = append(missing, "NAT binding timeout still measuring")
	case t.nat.Error == "" && t.publishSeq < t.natDoneSeq:
		missing = append(missing, "record not republished after the NAT survey")
	}
	return len(missing) == 0, strings.Join(missing, "; ")
}

func (t *rdvTracker) openWindow(now time.Time) {
	t.win = window{open: true, relaysStart: slices.Clone(t.held)}
}

func (t *rdvTracker) closeWindow(now time.Time) {
	t.win.open = false
	t.win.relaysEnd = slices.Clone(t.held)
}

func (t *rdvTracker) window() window { return t.win }
func (t *rdvTracker) peerID() string { return t.id }

// vanillaTracker follows vanillapeer: a ready line, periodic status lines
// and connection events.
type vanillaTracker struct {
	want int // relays it should hold: one per public node

	id     string
	status *vanillaLine // the latest status line

	win window
}

// vanillaLine is any line of vanillapeer.
type vanillaLine struct {
	Event        string   `json:"event"`
	PeerID       string   `json:"peer_id"`
	Peer         string   `json:"peer"`
	RemoteAddr   string   `json:"remote_addr"`
	Limited      bool     `json:"limited"`
	Reachability string   `json:"reachability"`
	Connections  int      `json:"connections"`
	RoutingTable int      `json:"routing_table"`
	Relays       []string `json:"relays"`
	RelayAddrs   []string `json:"relay_addrs"`
	CircuitAddrs []string `json:"circuit_addrs"`
}

func (t *vanillaTracker) apply(b []byte, now time.Time) {
	var l vanillaLine
	if json.Unmarshal(b, &l) != nil {
		return
	}
	switch l.Event {
	case "ready":
		t.id = l.PeerID
	case "status":
		l.Relays = slices.Compact(slices.Sorted(slices.Values(l.Relays)))
		if t.status != nil && !slices.Equal(t.status.Relays, l.Relays) {
			t.win.note(now, "relays: %d held", len(l.Relays))
		}
		t.status = &l
	case "connected":
		t.win.note(now, "connected %s %s", short(l.Peer), l.RemoteAddr)
	case "disconnected":
		if t.win.open {
			t.win.lost++
		}
		t.win.note(now, "disconnected %s %s", short(l.Peer), l.RemoteAddr)
	}
}

func (t *vanillaTracker) settled() (bool, string) {
	var missing []string
	if t.id == "" {
		missing = append(missing, "not ready")
	}
	switch st := t.status; {
	case st == nil:
		missing = append(missing, "no status yet")
	default:
		if len(st.Relays) < t.want {
			missing = append(missing, fmt.Sprintf("%d of %d relays held", len(st.Relays), t.want))
		}
		if st.RoutingTable == 0 {
			missing = append(missing, "empty routing table")
		}
	}
	return len(missing) == 0, strings.Join(missing, "; ")
}

func (t *vanillaTracker) openWindow(now time.Time) {
	t.win = window{open: true, relaysStart: t.relays()}
}

func (t *vanillaTracker) closeWindow(now time.Time) {
	t.win.open = false
	t.win.relaysEnd = t.relays()
}

func (t *vanillaTracker) window() window { return t.win }
func (t *vanillaTracker) peerID() string { return t.id }

func (t *vanillaTracker) relays() []string {
	if t.status == nil {
		return []string{}
	}
	return slices.Clone(t.status.Relays)
}

// circuitAddrs returns the latest status's addresses through the relays.
func (t *vanillaTracker) circuitAddrs() []string {
	if t.status == nil {
		return nil
	}
	return slices.Clone(t.status.CircuitAddrs)
}

// short abbreviates a peer ID: its end tells Ed25519 IDs apart.
func short(id string) string {
	if len(id) <= 10 {
		return id
	}
	return "…" + id[len(id)-6:]
}
