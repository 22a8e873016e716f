package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2pos/rendezvous/dht"
)

// writeJSON writes v as one line of JSON.
func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// ms is d in milliseconds, to the microsecond, for JSON output.
func ms(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}

// fmtMS formats d in milliseconds for people: "0.42 ms", "12.3 ms", "1520 ms".
func fmtMS(d time.Duration) string {
	m := float64(d) / float64(time.Millisecond)
	switch {
	case m < 10:
		return fmt.Sprintf("%.2f ms", m)
	case m < 100:
		return fmt.Sprintf("%.1f ms", m)
	}
	return fmt.Sprintf("%.0f ms", m)
}

// fmtBytes formats a byte count: "512 B", "3.4 KiB", "1.2 MiB".
func fmtBytes(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// fmtTime formats t with how far it is from now: "2025-06-01 12:00:00 UTC
// (4s ago)" or "(in 59m56s)".
func fmtTime(t, now time.Time) string {
	d := t.Sub(now).Round(time.Second)
	rel := "now"
	switch {
	case d > 0:
		rel = "in " + d.String()
	case d < 0:
		rel = (-d).String() + " ago"
	}
	return fmt.Sprintf("%s (%s)", t.UTC().Format("2006-01-02 15:04:05 MST"), rel)
}

// shortID abbreviates a peer ID for lines meant for people. The IDs of
// Ed25519 keys all start with "12D3KooW", so the end is what tells them
// apart.
func shortID(id peer.ID) string {
	s := id.String()
	if len(s) <= 12 {
		return s
	}
	return "…" + s[len(s)-8:]
}

// addrStrings returns the text form of addrs; never nil, so that JSON shows
// an empty list rather than null.
func addrStrings(addrs []ma.Multiaddr) []string {
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, a.String())
	}
	return out
}

// table writes aligned "key  value" lines.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer) table {
	return table{tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
}

// row writes key and value; a value of several lines (addresses, say) is
// written one line under the other, aligned.
func (t table) row(key string, values ...string) {
	if len(values) == 0 {
		values = []string{"none"}
	}
	for i, v := range values {
		if i > 0 {
			key = ""
		}
		fmt.Fprintf(t.tw, "%s\t%s\n", key, v)
	}
}

func (t table) flush() error { return t.tw.Flush() }

// natJSON is the NAT information of a record as JSON shows it.
type natJSON struct {
	Reachability string  `json:"reachability"`
	Mapping      string  `json:"mapping"`
	Filtering    string  `json:"filtering"`
	UDPTimeoutS  float64 `json:"udp_timeout_s,omitempty"`
}

func natInfo(n dht.NATInfo) natJSON {
	return natJSON{
		Reachability: n.Reachability.String(),
		Mapping:      n.Mapping.String(),
		Filtering:    n.Filtering.String(),
		UDPTimeoutS:  n.UDPTimeout.Seconds(),
	}
}

// recordJSON is a verified address record as JSON shows it.
type recordJSON struct {
	PeerID     string    `json:"peer_id"`
	Seq        uint64    `json:"seq"`
	Issued     time.Time `json:"issued"`
	Expires    time.Time `json:"expires"`
	Addrs      []string  `json:"addrs"`
	RelayAddrs []string  `json:"relay_addrs"`
	NAT        natJSON   `json:"nat"`
	// DataRelay is the peer's offer as a data relay, if it makes one.
	DataRelay *dataRelayJSON `json:"data_relay,omitempty"`
}

type dataRelayJSON struct {
	DurationS float64 `json:"duration_s"`
	Bytes     int64   `json:"bytes"`
	Circuits  int     `json:"circuits"`
}

func recordOf(r *dht.Record) recordJSON {
	return recordJSON{
		PeerID:     r.PeerID.String(),
		Seq:        r.Seq,
		Issued:     r.Issued.UTC(),
		Expires:    r.Expires.UTC(),
		Addrs:      addrStrings(r.Addrs),
		RelayAddrs: addrStrings(r.RelayAddrs),
		NAT:        natInfo(r.NAT),
		DataRelay:  dataRelayOf(r.DataRelay),
	}
}

func dataRelayOf(d dht.DataRelay) *dataRelayJSON {
	if d.IsZero() {
		return nil
	}
	return &dataRelayJSON{DurationS: d.Duration.Seconds(), Bytes: d.Data, Circuits: d.Circuits}
}

// plural returns "1 relay", "2 relays", "2 addresses", "2 replies".
func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	switch {
	case strings.HasSuffix(word, "s"), strings.HasSuffix(word, "x"), strings.HasSuffix(word, "ch"), strings.HasSuffix(word, "sh"):
		word += "es"
	case strings.HasSuffix(word, "y") && !strings.ContainsAny(word[len(word)-2:len(word)-1], "aeiou"):
		word = strings.TrimSuffix(word, "y") + "ies"
	default:
		word += "s"
	}
	return fmt.Sprintf("%d %s", n, word)
}
