package matrix

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/p2pos/rendezvous/internal/natlab"
)

// TestNetcheckBehindRouters runs `rendezvous netcheck --quick --json` on
// hosts behind several kinds of router, with two public servers, and checks
// the reachability, mapping and filtering it reports against what the lab
// built, and that a UPnP gateway is found with a UDP mapping.
func TestNetcheckBehindRouters(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := buildForLab(t, ctx)
	kinds := []natlab.Kind{natlab.FullCone, natlab.PortRestricted, natlab.Symmetric, natlab.UPnP}
	spec := natlab.Spec{Hosts: []natlab.HostSpec{{Name: "server1"}, {Name: "server2"}, {Name: "pub"}}}
	for _, k := range kinds {
		spec.Routers = append(spec.Routers, natlab.RouterSpec{Name: "r-" + string(k), Kind: k})
		spec.Hosts = append(spec.Hosts, natlab.HostSpec{Name: "h-" + string(k), Router: "r-" + string(k)})
	}
	lab, err := natlab.New(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	boot := startServers(t, ctx, lab, bin, "server1", "server2")

	want := map[string]struct{ reach, mapping, filtering string }{
		"pub":                                {"public", "endpoint-independent", ""},
		"h-" + string(natlab.FullCone):       {"private", "endpoint-independent", ""},
		"h-" + string(natlab.PortRestricted): {"private", "endpoint-independent", "address-and-port-dependent"},
		"h-" + string(natlab.Symmetric):      {"private", "address-and-port-dependent", "address-and-port-dependent"},
		"h-" + string(natlab.UPnP):           {"public", "endpoint-independent", "address-and-port-dependent"},
	}
	for host, w := range want {
		p, err := lab.Host(host).Start(ctx, bin, append([]string{"netcheck", "--quick", "--json", "--bootstrap", strings.Join(boot, ",")}, labArgs...)...)
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			Reachability string `json:"reachability"`
			NAT          *struct {
				Mapping   string `json:"mapping"`
				Filtering string `json:"filtering"`
			} `json:"nat"`
			NATError    string `json:"nat_error"`
			PortMapping *struct {
				UDP *struct {
					Protocol string `json:"protocol"`
				} `json:"udp_mapping"`
			} `json:"port_mapping"`
		}
		if err := p.NextJSON(ctx, &r); err != nil {
			t.Fatalf("%s: netcheck: %v: %s", host, err, p.Stderr())
		}
		t.Logf("%s: reachability %s, nat %+v %s", host, r.Reachability, r.NAT, r.NATError)
		if r.Reachability != w.reach {
			t.Errorf("%s: reachability %s, want %s", host, r.Reachability, w.reach)
		}
		if r.NAT == nil || r.NAT.Mapping != w.mapping || (w.filtering != "" && r.NAT.Filtering != w.filtering) {
			t.Errorf("%s: nat %+v (%s), want mapping %s filtering %s", host, r.NAT, r.NATError, w.mapping, w.filtering)
		}
		if host == "h-"+string(natlab.UPnP) && (r.PortMapping == nil || r.PortMapping.UDP == nil) {
			t.Errorf("%s: no UDP mapping from the UPnP router", host)
		}
	}
}
