package host

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/relayfw/relayfw/config"
	"github.com/relayfw/relayfw/relays"
	"github.com/relayfw/relayfw/torconf"
)

// TestInboundEndpoints: the protection covers where each instance's tor
// listens; host names are resolved as tor resolves them, once a run and
// within one deadline; what cannot be protected is said.
func TestInboundEndpoints(t *testing.T) {
	lookups := map[string]int{}
	sys := DefaultSystem()
	sys.LookupNetIP = func(ctx context.Context, network, name string) ([]netip.Addr, error) {
		lookups[name]++
		if _, ok := ctx.Deadline(); !ok {
			t.Errorf("lookup of %s without a deadline", name)
		}
		switch name {
		case "relay.example.org":
			return []netip.Addr{netip.MustParseAddr("2001:db8::21"), netip.MustParseAddr("192.0.2.21")}, nil
		case "v6.example.org":
			return []netip.Addr{netip.MustParseAddr("2001:db8::22")}, nil
		}
		return nil, errors.New("no such host")
	}
	instance := func(torrc string) *Instance {
		lines, err := torconf.Parse(nil, "torrc", torrc)
		if err != nil {
			t.Fatal(err)
		}
		o, err := torconf.OptionsFromLines(lines)
		if err != nil {
			t.Fatal(err)
		}
		return &Instance{Name: "x", Options: o}
	}
	var log bytes.Buffer
	in := &Inputs{opts: Options{Log: slog.New(slog.NewTextHandler(&log, nil))}, sys: sys,
		cfg: config.Config{Inbound: config.Inbound{Enabled: true, DirPorts: true, SetSize: 1 << 18}}}
	in.Instances = []*Instance{
		instance("ORPort relay.example.org:443\nORPort 9001 IPv4Only\nORPort auto\nDirPort v6.example.org:80\n"),
		instance("ORPort relay.example.org:9100\nORPort gone.example.org:9101\nORPort gone.example.org:9102\nORPort v6.example.org:9103 IPv4Only\n"),
	}
	got := in.inbound(context.Background(), relays.Network{})
	if got == nil {
		t.Fatalf("no protection:\n%s", log.String())
	}
	var eps []string
	for _, e := range got.Endpoints {
		eps = append(eps, e.String())
	}
	if want := "0.0.0.0:9001 192.0.2.21:443 192.0.2.21:9100 [2001:db8::22]:80"; strings.Join(eps, " ") != want {
		t.Errorf("endpoints %v, want %s", eps, want)
	}
	if lookups["relay.example.org"] != 1 || lookups["gone.example.org"] != 1 {
		t.Errorf("lookups %v: want one a name", lookups)
	}
	for _, want := range []string{
		"inbound: torrc:2 ORPort gone.example.org:9101 is not protected: no such host",
		"inbound: torrc:3 ORPort gone.example.org:9102 is not protected: no such host",
		"inbound: torrc:4 ORPort v6.example.org:9103 is not protected: could not interpret ORPort address 2001:db8::22 (v6.example.org) as IPv4 (tor refuses to start)",
		"inbound: torrc:3 ORPort auto is not a fixed port and is not protected",
	} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("no warning %q in:\n%s", want, log.String())
		}
	}
	if err := got.Validate(); err != nil {
		t.Error(err)
	}

	// Nothing tor listens on: no protection.
	log.Reset()
	in.Instances = []*Instance{instance("ORPort 192.0.2.5:443 NoListen\nORPort 127.0.0.1:9090 NoAdvertise\n")}
	in.Instances[0].Options.Ports = in.Instances[0].Options.Ports[:1]
	if got := in.inbound(context.Background(), relays.Network{}); got != nil || !strings.Contains(log.String(), "no tor instance listens on an ORPort") {
		t.Errorf("NoListen only: %+v\n%s", got, log.String())
	}
}
