package natlab

import (
	"strings"
	"testing"
	"time"
)

func TestSpecValidate(t *testing.T) {
	r := func(name string, k Kind) RouterSpec { return RouterSpec{Name: name, Kind: k} }
	for _, tc := range []struct {
		name string
		spec Spec
		want string // substring of the error; "" = valid
	}{
		{"empty", Spec{}, ""},
		{"everything", Spec{
			Routers: []RouterSpec{r("isp", CGNAT), {Name: "home", Kind: FullCone, Behind: "isp", UDPTimeout: 5 * time.Second}, r("u", UPnP)},
			Hosts:   []HostSpec{{Name: "a", Router: "home"}, {Name: "b", Router: "isp"}, {Name: "p"}},
		}, ""},
		{"shaped", Spec{Internet: Internet{Delay: time.Millisecond, Loss: 0.1}}, ""},
		{"delay", Spec{Internet: Internet{Delay: time.Minute}}, "delay"},
		{"negative delay", Spec{Internet: Internet{Delay: -1}}, "delay"},
		{"loss", Spec{Internet: Internet{Loss: 1}}, "loss"},
		{"bad name", Spec{Hosts: []HostSpec{{Name: "A b"}}}, "host name"},
		{"long name", Spec{Routers: []RouterSpec{r(strings.Repeat("x", 25), FullCone)}}, "router name"},
		{"duplicate", Spec{Routers: []RouterSpec{r("x", FullCone)}, Hosts: []HostSpec{{Name: "x"}}}, "used twice"},
		{"kind", Spec{Routers: []RouterSpec{r("x", "public")}}, "unknown kind"},
		{"no router", Spec{Hosts: []HostSpec{{Name: "a", Router: "nope"}}}, "no router"},
		{"behind nothing", Spec{Routers: []RouterSpec{{Name: "x", Kind: FullCone, Behind: "nope"}}}, "Behind names no router"},
		{"cycle", Spec{Routers: []RouterSpec{{Name: "x", Kind: FullCone, Behind: "y"}, {Name: "y", Kind: FullCone, Behind: "x"}}}, "cycle"},
		{"behind blackhole", Spec{Routers: []RouterSpec{r("b", Blackhole), {Name: "x", Kind: FullCone, Behind: "b"}}}, "blackhole"},
		{"fractional timeout", Spec{Routers: []RouterSpec{{Name: "x", Kind: FullCone, UDPTimeout: 1500 * time.Millisecond}}}, "whole seconds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.spec.validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("valid spec rejected: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestSpecOrder(t *testing.T) {
	order, err := Spec{Routers: []RouterSpec{
		{Name: "c", Kind: FullCone, Behind: "b"},
		{Name: "b", Kind: FullCone, Behind: "a"},
		{Name: "a", Kind: CGNAT},
	}}.validate()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range order {
		names = append(names, r.Name)
	}
	if got := strings.Join(names, ","); got != "a,b,c" {
		t.Errorf("build order %s, want a,b,c", got)
	}
}
