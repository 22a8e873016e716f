package matrix

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/p2pos/rendezvous/internal/natlab"
)

// TestAutoModeBehindRouters runs nodes left on --mode auto: one on a public
// host must be confirmed public by dial-back, one behind a port-restricted
// router must find itself private, and one behind a UPnP router must map
// its port and be confirmed public through the mapping.
func TestAutoModeBehindRouters(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := buildForLab(t, ctx)
	lab, err := natlab.New(ctx, natlab.Spec{
		Routers: []natlab.RouterSpec{{Name: "home", Kind: natlab.PortRestricted, UDPTimeout: 6 * time.Second}, {Name: "igd", Kind: natlab.UPnP}},
		Hosts: []natlab.HostSpec{
			{Name: "server1"}, {Name: "server2"}, {Name: "pub"}, {Name: "natted", Router: "home"}, {Name: "mapped", Router: "igd"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	common := append([]string{"--json"}, labArgs...)
	boot := startServers(t, ctx, lab, bin, "server1", "server2")

	// The host behind the UPnP router maps its port with the real
	// miniupnpd, is confirmed by dial-back through the mapping, and serves
	// the DHT.
	var mappedID string
	for _, c := range []struct{ host, want string }{{"pub", "public"}, {"natted", "private"}, {"mapped", "public"}} {
		p, err := lab.Host(c.host).Start(ctx, bin, append([]string{"node", "--mode", "auto", "--bootstrap", strings.Join(boot, ","),
			"--nat-timeouts", "2s,4s,6s,8s,10s"}, common...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Stop(5 * time.Second) })
		start := time.Now()
		for {
			var line struct {
				Event        string `json:"event"`
				PeerID       string `json:"peer_id"`
				Reachability string `json:"reachability"`
				Status       struct {
					Reachability string `json:"reachability"`
					DHTMode      string `json:"dht_mode"`
				} `json:"status"`
			}
			if err := p.NextJSON(ctx, &line); err != nil {
				t.Fatalf("%s: waiting for reachability %s: %v", c.host, c.want, err)
			}
			raw, _ := json.Marshal(line)
			t.Logf("%s: %s", c.host, raw)
			if c.host == "mapped" && line.PeerID != "" {
				mappedID = line.PeerID
			}
			if line.Reachability == c.want || line.Status.Reachability == c.want {
				t.Logf("%s found itself %s in %v", c.host, c.want, time.Since(start))
				break
			}
		}
		if c.host == "natted" {
			// Behind the router it surveys its NAT: behaviour first, then
			// the binding timeout (6 s), each into its status and record.
			for {
				var line struct {
					Event string `json:"event"`
					NAT   *struct {
						Mapping, Filtering string
						UDPTimeout         time.Duration `json:"udp_timeout_ns"`
						Measuring          bool          `json:"timeout_measuring"`
						Error              string
					} `json:"nat"`
				}
				if err := p.NextJSON(ctx, &line); err != nil {
					t.Fatalf("natted: waiting for its NAT survey: %v", err)
				}
				if line.Event != "nat" || line.NAT == nil || line.NAT.Measuring {
					continue
				}
				raw, _ := json.Marshal(line.NAT)
				t.Logf("natted: NAT survey %s in %v", raw, time.Since(start))
				if line.NAT.Mapping != "endpoint-independent" || line.NAT.Filtering != "address-and-port-dependent" {
					t.Errorf("port-restricted router classified as %s / %s", line.NAT.Mapping, line.NAT.Filtering)
				}
				if d := line.NAT.UDPTimeout; d < 4*time.Second || d > 8*time.Second {
					t.Errorf("UDP timeout %v, want 6s +- 2s", d)
				}
				break
			}
		}
		if c.host != "mapped" {
			continue
		}
		// It publishes the mapped address (the router's WAN address), and
		// any peer finds it in its record.
		// Its status shows the mapping miniupnpd granted and the DHT
		// served.
		wan := "/ip4/" + lab.Router("igd").WANAddr().String() + "/"
		published, serving := false, false
		for !published || !serving {
			var line struct {
				PeerID  string `json:"peer_id"`
				Publish *struct {
					Addrs []string `json:"addrs"`
					Error string   `json:"error"`
				} `json:"publish"`
				Status struct {
					DHTMode      string `json:"dht_mode"`
					PortMappings []struct {
						Protocol, External string
					} `json:"port_mappings"`
				} `json:"status"`
			}
			if err := p.NextJSON(ctx, &line); err != nil {
				t.Fatalf("mapped: waiting for a record with %s and DHT server mode: %v", wan, err)
			}
			if line.Publish != nil && line.Publish.Error == "" && slices.ContainsFunc(line.Publish.Addrs, func(a string) bool { return strings.HasPrefix(a, wan) }) {
				published = true
			}
			if line.Status.DHTMode == "server" && len(line.Status.PortMappings) > 0 && line.Status.PortMappings[0].Protocol != "" {
				serving = true
				t.Logf("mapped: DHT server with port mappings %+v", line.Status.PortMappings)
			}
		}
		lp, err := lab.Host("server1").Start(ctx, bin, "lookup", "--json", "--public-ranges", natlab.InternetPrefix().String(),
			"--listen", "/ip4/0.0.0.0/udp/0/quic-v1", "--bootstrap", boot[1], mappedID)
		if err != nil {
			t.Fatal(err)
		}
		var rec struct {
			Addrs []string `json:"addrs"`
			NAT   struct {
				Reachability string `json:"reachability"`
			} `json:"nat"`
		}
		if err := lp.NextJSON(ctx, &rec); err != nil {
			t.Fatalf("lookup of the mapped peer: %v", err)
		}
		raw, _ := json.Marshal(rec)
		t.Logf("mapped peer's record: %s", raw)
		if !slices.ContainsFunc(rec.Addrs, func(a string) bool { return strings.HasPrefix(a, wan) }) {
			t.Fatalf("record lacks the mapped address %s...: %s", wan, raw)
		}
	}
}
