package host

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/relayfw/relayfw/config"
	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/firewall/fake"
)

// fakeDNS answers host names from a table (a name not in it does not
// resolve) and records every lookup's deadline.
type fakeDNS struct {
	answers   map[string][]netip.Addr
	anyName   []netip.Addr // the answer for a name not in answers, if any
	names     []string
	deadlines []time.Time
}

func (d *fakeDNS) install(sys *System) {
	sys.LookupNetIP = func(ctx context.Context, _, name string) ([]netip.Addr, error) {
		dl, _ := ctx.Deadline()
		d.deadlines = append(d.deadlines, dl)
		d.names = append(d.names, name)
		if a, ok := d.answers[name]; ok {
			return a, nil
		}
		if d.anyName != nil {
			return d.anyName, nil
		}
		<-ctx.Done() // a resolver that does not answer
		return nil, ctx.Err()
	}
}

func writeTorrc(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "torrc")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestShippedConfigIsInert: the relayfw.toml the package installs as
// /etc/relayfw/relayfw.toml sets nothing, so it compiles to exactly the
// ruleset of no relayfw.toml at all, and resolves no name (every name
// would resolve here, so that a live example would show).
func TestShippedConfigIsInert(t *testing.T) {
	sys := testSystem(t)
	dns := &fakeDNS{anyName: []netip.Addr{netip.MustParseAddr("192.0.2.1")}}
	dns.install(sys)
	build, err := os.ReadFile("../packaging/build-deb")
	if err != nil || !strings.Contains(string(build), "cp ../examples/relayfw.toml ") {
		t.Fatalf("packaging/build-deb no longer ships examples/relayfw.toml: %v", err)
	}
	shipped, err := sys.LoadConfig("../examples/relayfw.toml", false)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(config.Config{}, shipped); diff != "" {
		t.Errorf("the shipped relayfw.toml sets something (-none +shipped):\n%s", diff)
	}
	ruleset := func(cfg config.Config) any {
		in, err := Load(context.Background(), Options{Torrcs: []string{"../examples/torrc"}, Config: cfg, System: sys})
		if err != nil {
			t.Fatal(err)
		}
		rs, h := in.Ruleset()
		return []any{rs, h}
	}
	netipEqual := cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}, netip.AddrPort{})
	if diff := cmp.Diff(ruleset(DefaultConfig()), ruleset(shipped), netipEqual); diff != "" {
		t.Errorf("the shipped relayfw.toml changes the ruleset (-none +shipped):\n%s", diff)
	}
	if len(dns.names) > 0 {
		t.Errorf("host-name lookups: %q", dns.names)
	}
}

// TestDNSWaitShared: every host-name lookup of a run (allow.extra's
// names, a torrc's Address) shares one deadline, DNSWait after the first,
// and each name is looked up once however often the ruleset is built.
func TestDNSWaitShared(t *testing.T) {
	sys := testSystem(t)
	dns := &fakeDNS{answers: map[string][]netip.Addr{"up.example.test": {netip.MustParseAddr("192.0.2.25")}}}
	dns.install(sys)
	sys.DNSWait = 10 * time.Millisecond
	torrc := writeTorrc(t, "ORPort 9001\nExitRelay 1\nAddress relay.example.test\nExitPolicy accept *:443,reject *:*\n")
	cfg := config.Config{Allow: config.Allow{Resolvers: []string{"192.0.2.53"}, Extra: []config.Extra{
		{Name: "a", To: []string{"down1.example.test", "up.example.test"}, Ports: []string{"587"}},
		{Name: "b", To: []string{"down2.example.test"}, Ports: []string{"25"}},
	}}}
	start := time.Now()
	in, err := Load(context.Background(), Options{Torrcs: []string{torrc}, Config: cfg, System: sys})
	if err != nil {
		t.Fatal(err)
	}
	h1 := in.Host()
	n := len(dns.names)
	h2 := in.Host()
	if len(dns.names) != n {
		t.Errorf("the second Host looked up %v again", dns.names[n:])
	}
	extra := slices.DeleteFunc(slices.Clone(dns.names), func(s string) bool { return s == "relay.example.test" })
	if !slices.Equal(extra, []string{"down1.example.test", "up.example.test", "down2.example.test"}) || len(extra) == len(dns.names) {
		t.Fatalf("lookups %q, want Address's and allow.extra's three names once each", dns.names)
	}
	for i, dl := range dns.deadlines {
		if dl.IsZero() || !dl.Equal(dns.deadlines[0]) || dl.Before(start) || dl.After(start.Add(time.Hour)) {
			t.Errorf("lookup %d: deadline %v, want the run's one deadline %v", i, dl, dns.deadlines[0])
		}
	}
	if names, unresolved := in.ExtraNames(); names != 3 || unresolved != 2 {
		t.Errorf("ExtraNames: %d names, %d unresolved; want 3, 2", names, unresolved)
	}
	if len(h1.Extra) != 1 || h1.Extra[0].Name != "a" || !cmp.Equal(h1.Extra, h2.Extra, cmpopts.EquateComparable(netip.Prefix{})) {
		t.Errorf("allowances: %+v then %+v; want a, to 192.0.2.25, both times", h1.Extra, h2.Extra)
	}
}

// TestExtraReapply: refresh replaces the rules when allow.extra's names
// resolve to new addresses and nothing else changed since the last apply;
// it keeps what is installed when a name does not resolve or other inputs
// changed too.
func TestExtraReapply(t *testing.T) {
	sys := testSystem(t)
	dns := &fakeDNS{answers: map[string][]netip.Addr{}}
	dns.install(sys)
	sys.DNSWait = 10 * time.Millisecond
	torrcA := writeTorrc(t, "ORPort 9001\nExitRelay 1\nExitPolicy accept *:443,reject *:*\n")
	torrcB := writeTorrc(t, "ORPort 9001\nExitRelay 1\nExitPolicy accept *:80,reject *:*\n")
	cfg := config.Config{Allow: config.Allow{Resolvers: []string{"192.0.2.53"}, Extra: []config.Extra{
		{Name: "smarthost", To: []string{"smtp.example.test"}, Ports: []string{"587"}},
	}}}
	nft := fake.New("nftables")
	load := func(torrc string) *Inputs {
		t.Helper()
		in, err := Load(context.Background(), Options{Torrcs: []string{torrc}, Config: cfg, System: sys})
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
	applied := func(in *Inputs) {
		t.Helper()
		rs, _ := in.Ruleset()
		if err := sys.RecordApply("nftables", nil); err != nil {
			t.Fatal(err)
		}
		if err := SaveRuleset(sys.AppliedRulesetPath(), rs); err != nil {
			t.Fatal(err)
		}
	}
	answer := func(addr string) {
		if addr == "" {
			delete(dns.answers, "smtp.example.test")
			return
		}
		dns.answers["smtp.example.test"] = []netip.Addr{netip.MustParseAddr(addr)}
	}
	check := func(step string, in *Inputs, b firewall.Backend, wantReapply bool, wantWarning string) {
		t.Helper()
		rs, _ := in.Ruleset()
		reapply, warning := in.ExtraReapply(b, rs)
		if reapply != wantReapply || (wantWarning == "") != (warning == "") || !strings.Contains(warning, wantWarning) {
			t.Errorf("%s: reapply %v, warning %q; want %v, %q", step, reapply, warning, wantReapply, wantWarning)
		}
	}

	// A boot-time apply before the network was up: the name did not resolve.
	in := load(torrcA)
	check("nothing applied yet", in, nft, false, "")
	applied(in)
	answer("192.0.2.25")
	check("the name resolves now", load(torrcA), nft, true, "")
	check("another backend's apply", load(torrcA), fake.New("iptables"), false, "")
	applied(load(torrcA))
	check("the same answer", load(torrcA), nft, false, "")
	answer("192.0.2.26")
	check("a new answer", load(torrcA), nft, true, "")
	check("a new answer and a new policy", load(torrcB), nft, false, "other inputs changed too")
	answer("")
	check("the name does not resolve", load(torrcA), nft, false, "did not resolve")
}

// TestExtraReapplyNoNames: without host names in allow.extra, refresh
// leaves the rules alone whatever changed.
func TestExtraReapplyNoNames(t *testing.T) {
	sys := testSystem(t)
	torrc := writeTorrc(t, "ORPort 9001\nExitRelay 1\nExitPolicy accept *:443,reject *:*\n")
	in, err := Load(context.Background(), Options{System: sys, Torrcs: []string{torrc}, Config: config.Config{Allow: config.Allow{Resolvers: []string{"192.0.2.53"},
		Extra: []config.Extra{{Name: "net", To: []string{"192.0.2.0/24"}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	rs, _ := in.Ruleset()
	if reapply, warning := in.ExtraReapply(fake.New("nftables"), rs); reapply || warning != "" {
		t.Errorf("reapply %v, warning %q", reapply, warning)
	}
}
