package host

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/firewall/fake"
	"github.com/relayfw/relayfw/ruleset"
)

// TestDigestCoversEveryField: a record's digests change with every part
// of the ruleset, each in the right digest (refresh replaces only the
// links'). The field counts guard the parts hashed as bytes: a new field
// there must be hashed too.
func TestDigestCoversEveryField(t *testing.T) {
	for typ, n := range map[reflect.Type]int{
		reflect.TypeFor[ruleset.Region]():      3,
		reflect.TypeFor[ruleset.PortRange]():   2,
		reflect.TypeFor[ruleset.PrefixClass](): 2,
		reflect.TypeFor[ruleset.LinkSet]():     4,
	} {
		if typ.NumField() != n {
			t.Errorf("%s has %d fields, digests hashes %d: hash the new ones", typ, typ.NumField(), n)
		}
	}
	base := func() ruleset.Ruleset {
		rs := policyRuleset(t, "accept *:80,accept 198.51.100.0/24:443,reject *:*")
		rs.Inbound = &ruleset.Inbound{Endpoints: []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:9001")},
			Trusted: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}
		return rs
	}
	r0, l0, err := digests(base())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		change func(rs *ruleset.Ruleset)
		links  bool // the links' digest changes, not the rules'
	}{
		{"relay link address", func(rs *ruleset.Ruleset) {
			rs.Sets[0].Elements[0].AddrLast = netip.MustParseAddr("192.0.2.2")
		}, true},
		{"relay link port", func(rs *ruleset.Ruleset) { rs.Sets[0].Elements[0].Ports.Last++ }, true},
		{"trusted source", func(rs *ruleset.Ruleset) {
			rs.Inbound.Trusted = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/25")}
		}, true},
		{"set comment", func(rs *ruleset.Ruleset) { rs.Sets[0].Comment += "!" }, false},
		{"exit map prefix class", func(rs *ruleset.Ruleset) {
			m := &rs.ExitMaps[0]
			m.Prefixes[len(m.Prefixes)-1].Class = ruleset.NoClass - 1
		}, false},
		{"exit map prefix", func(rs *ruleset.Ruleset) {
			m := &rs.ExitMaps[0]
			m.Prefixes[len(m.Prefixes)-1].Prefix = netip.MustParsePrefix("198.51.100.0/25")
		}, false},
		{"rule comment", func(rs *ruleset.Ruleset) { rs.Outbound[0].Comment += "!" }, false},
		{"inbound limit", func(rs *ruleset.Ruleset) { rs.Inbound.PerMinute++ }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := base()
			rs.Sets = append([]ruleset.Set(nil), rs.Sets...)
			rs.Sets[0].Elements = append([]ruleset.Region(nil), rs.Sets[0].Elements...)
			rs.ExitMaps = append([]ruleset.ExitMap(nil), rs.ExitMaps...)
			rs.ExitMaps[0].Prefixes = append([]ruleset.PrefixClass(nil), rs.ExitMaps[0].Prefixes...)
			tc.change(&rs)
			r, l, err := digests(rs)
			if err != nil {
				t.Fatal(err)
			}
			if (l != l0) != tc.links || (r != r0) == tc.links {
				t.Fatalf("rules digest changed %v, links digest changed %v; want only the %s", r != r0, l != l0, map[bool]string{true: "links'", false: "rules'"}[tc.links])
			}
		})
	}
}

// meddling is a numbered fake backend on which another program commits
// a change while relayfw applies.
type meddling struct{ fake.Numbered }

func (m meddling) Apply(ctx context.Context, rs ruleset.Ruleset) (firewall.Result, error) {
	res, err := m.Numbered.Apply(ctx, rs)
	_ = m.AddForeignRule("another program's rule")
	return res, err
}

// TestKernelHolds: after an apply the record says the kernel holds the
// ruleset, and check believes it without reading the table, until
// anything changes the kernel: a hand edit, another program, an apply
// of something else; a refresh keeps it true.
func TestKernelHolds(t *testing.T) {
	ctx := context.Background()
	rs := policyRuleset(t, "accept *:80,reject *:*")
	other := policyRuleset(t, "accept *:443,reject *:*")
	apply := func(t *testing.T, sys *System, b firewall.Backend, rs ruleset.Ruleset) firewall.Result {
		t.Helper()
		res, _, err := Applier{System: sys, Others: func(context.Context, firewall.Backend) []firewall.Backend { return nil }}.Apply(ctx, b, rs, 0)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	t.Run("record believed until the kernel changes", func(t *testing.T) {
		sys, b := testSystem(t), fake.Numbered{Backend: fake.New("nftables")}
		apply(t, sys, b, rs)
		if res, ok := sys.KernelHolds(ctx, b, rs); !ok || res.Rules != len(rs.Outbound) {
			t.Fatalf("after the apply: holds %v, %+v", ok, res)
		}
		if _, ok := sys.KernelHolds(ctx, b, other); ok {
			t.Fatal("holds another ruleset")
		}
		checks := b.Calls(fake.OpCheck)
		if drift, _, err := sys.Check(ctx, b, rs); err != nil || len(drift) != 0 || b.Calls(fake.OpCheck) != checks {
			t.Fatalf("check: %v %v, table read %d times", drift, err, b.Calls(fake.OpCheck)-checks)
		}
		applies := b.Calls(fake.OpApply)
		if res := apply(t, sys, b, rs); res.Changed || b.Calls(fake.OpApply) != applies {
			t.Fatalf("no-op apply changed %v, asked the backend %d times", res.Changed, b.Calls(fake.OpApply)-applies)
		}
		if err := b.AddForeignRule("a hand edit"); err != nil {
			t.Fatal(err)
		}
		if _, ok := sys.KernelHolds(ctx, b, rs); ok {
			t.Fatal("holds after a hand edit")
		}
		if drift, _, err := sys.Check(ctx, b, rs); err != nil || len(drift) == 0 {
			t.Fatalf("check after a hand edit: %v %v", drift, err)
		}
		if res := apply(t, sys, b, rs); !res.Changed {
			t.Fatal("the apply did not repair the hand edit")
		}
		if _, ok := sys.KernelHolds(ctx, b, rs); !ok {
			t.Fatal("no record after the repair")
		}
	})
	t.Run("an apply takes its plan's finding", func(t *testing.T) {
		sys, b := testSystem(t), fake.Numbered{Backend: fake.New("nftables")}
		apply(t, sys, b, rs)
		for _, want := range []ruleset.Ruleset{rs, other} {
			plan, err := sys.NewPlan(ctx, b, want)
			if err != nil {
				t.Fatal(err)
			}
			applies := b.Calls(fake.OpApply)
			res, _, err := Applier{System: sys, Plan: plan, Others: func(context.Context, firewall.Backend) []firewall.Backend { return nil }}.Apply(ctx, b, want, 0)
			asked := b.Calls(fake.OpApply) > applies
			if err != nil || asked != (plan.holds == nil) || res.Changed != asked {
				t.Fatalf("plan holds %v: backend asked %v, changed %v, %v", plan.holds != nil, asked, res.Changed, err)
			}
		}
		if got := b.Ruleset(); got == nil || !slices.Equal(got.ExitMaps[0].Prefixes, other.ExitMaps[0].Prefixes) {
			t.Fatal("the other ruleset is not installed")
		}
	})
	t.Run("refresh keeps the record", func(t *testing.T) {
		sys, b := testSystem(t), fake.Numbered{Backend: fake.New("nftables")}
		apply(t, sys, b, rs)
		fresh := rs
		fresh.Sets = append([]ruleset.Set(nil), rs.Sets...)
		fresh.Sets[0].Elements = []ruleset.Region{{AddrFirst: netip.MustParseAddr("192.0.2.7"), AddrLast: netip.MustParseAddr("192.0.2.7"),
			Ports: ruleset.PortRange{First: 443, Last: 443}}}
		if added, removed, err := sys.Refresh(ctx, b, fresh); err != nil || added != 1 || removed != 1 {
			t.Fatalf("refresh: +%d -%d %v", added, removed, err)
		}
		if _, ok := sys.KernelHolds(ctx, b, fresh); !ok {
			t.Fatal("no record after the refresh")
		}
		if _, ok := sys.KernelHolds(ctx, b, rs); ok {
			t.Fatal("holds the links the refresh replaced")
		}
	})
	t.Run("another program changed the kernel during the apply", func(t *testing.T) {
		sys := testSystem(t)
		b := meddling{fake.Numbered{Backend: fake.New("nftables")}}
		apply(t, sys, b, rs)
		if _, ok := sys.KernelHolds(ctx, b, rs); ok {
			t.Fatal("recorded an apply another program's change overlapped")
		}
		if st, _ := sys.ReadState(); st.Kernel != nil {
			t.Fatalf("recorded %+v", st.Kernel)
		}
	})
	t.Run("a record not bound to this namespace and binary, or others could write, is not believed", func(t *testing.T) {
		for _, spoil := range []struct {
			name string
			do   func(t *testing.T, sys *System)
		}{
			{"another namespace's or binary's", func(t *testing.T, sys *System) {
				st, _ := sys.ReadState()
				st.Kernel.Build += "; netns 1"
				if err := sys.writeState(st); err != nil {
					t.Fatal(err)
				}
			}},
			{"state file others can write", func(t *testing.T, sys *System) { mustChmod(t, sys.StatePath(), 0o666) }},
			{"state directory others can write", func(t *testing.T, sys *System) { mustChmod(t, sys.StateDir, 0o777) }},
		} {
			sys, b := testSystem(t), fake.Numbered{Backend: fake.New("nftables")}
			apply(t, sys, b, rs)
			if _, ok := sys.KernelHolds(ctx, b, rs); !ok {
				t.Fatalf("%s: no record to spoil", spoil.name)
			}
			spoil.do(t, sys)
			if _, ok := sys.KernelHolds(ctx, b, rs); ok {
				t.Fatalf("%s: believed", spoil.name)
			}
		}
	})
	t.Run("no record unless the applied ruleset was kept", func(t *testing.T) {
		sys, b := testSystem(t), fake.Numbered{Backend: fake.New("nftables")}
		if err := os.MkdirAll(filepath.Join(sys.AppliedRulesetPath(), "x"), 0o755); err != nil { // not writable as a file
			t.Fatal(err)
		}
		apply(t, sys, b, rs)
		if st, _ := sys.ReadState(); st.Kernel != nil {
			t.Fatalf("recorded %+v without the applied ruleset, which a rollback restores", st.Kernel)
		}
	})
	t.Run("a backend without generations reads the table", func(t *testing.T) {
		sys, b := testSystem(t), fake.New("nftables")
		apply(t, sys, b, rs)
		if _, ok := sys.KernelHolds(ctx, b, rs); ok {
			t.Fatal("holds without generations")
		}
	})
	t.Run("another backend's record", func(t *testing.T) {
		sys, b := testSystem(t), fake.Numbered{Backend: fake.New("nftables")}
		apply(t, sys, b, rs)
		ipt := fake.Numbered{Backend: fake.New("iptables")}
		if _, ok := sys.KernelHolds(ctx, ipt, rs); ok {
			t.Fatal("iptables believes nftables' record")
		}
	})
}

func mustChmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
