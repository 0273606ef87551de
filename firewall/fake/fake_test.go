package fake

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/relayfw/relayfw/exitpolicy"
	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/ruleset"
)

// compiled compiles an exit policy with relay links and, with trusted
// sources, inbound protection.
func compiled(t *testing.T, policy string, links []string, trusted ...string) ruleset.Ruleset {
	t.Helper()
	entries, _, err := exitpolicy.Parse(policy)
	if err != nil {
		t.Fatal(err)
	}
	h := ruleset.Host{}
	for _, l := range links {
		h.RelayLinks = append(h.RelayLinks, netip.MustParseAddrPort(l))
	}
	if len(trusted) > 0 {
		in := ruleset.DefaultInbound()
		in.Endpoints = []netip.AddrPort{netip.MustParseAddrPort("192.0.2.10:9001")}
		for _, p := range trusted {
			in.Trusted = append(in.Trusted, netip.MustParsePrefix(p))
		}
		h.Inbound = &in
	}
	rs := ruleset.Compile(exitpolicy.ExitPolicy{Entries: entries}, h)
	if err := rs.Validate(); err != nil {
		t.Fatal(err)
	}
	return rs
}

func texts(d []firewall.Drift) string { return strings.Join(firewall.Strings(d), "; ") }

// TestApplyAndCheck: Apply installs what differs and reports the drift it
// repaired; Check finds what differs from another ruleset.
func TestApplyAndCheck(t *testing.T) {
	ctx := context.Background()
	a := compiled(t, "accept *:80,reject *:*", []string{"192.0.2.1:9001"})
	b := compiled(t, "accept *:443,reject *:*", []string{"192.0.2.1:9001"})
	f := New("nftables")
	if d, err := f.Check(ctx, a); err != nil || texts(d) != "table fake is not installed" {
		t.Fatalf("empty kernel: %q %v", texts(d), err)
	}
	res, err := f.Apply(ctx, a)
	if err != nil || !res.Changed || res.Rules != len(a.Outbound) || len(res.Drift) != 1 {
		t.Fatalf("first apply: %+v %v", res, err)
	}
	if res, err := f.Apply(ctx, a); err != nil || res.Changed || res.Drift != nil {
		t.Fatalf("second apply: %+v %v, want no change", res, err)
	}
	d, err := f.Check(ctx, b)
	if err != nil || len(d) == 0 || !strings.Contains(texts(d), "map exit4 has other elements") {
		t.Fatalf("check against b: %q %v", texts(d), err)
	}
	if got := f.Ruleset(); got == nil || got.Decide(ruleset.Packet{OutIface: "eth0", Dst: netip.MustParseAddr("198.51.100.9"), Proto: "tcp", DstPort: 80, SYN: true}).Action != ruleset.Accept {
		t.Fatal("the kernel does not hold a")
	}
	if n := f.Calls(OpApply); n != 2 {
		t.Fatalf("%d applies counted, want 2", n)
	}
}

// TestForeignRule: a hand-added rule is unexpected and not relayfw's; an
// apply removes it.
func TestForeignRule(t *testing.T) {
	ctx := context.Background()
	rs := compiled(t, "reject *:*", nil)
	f := New("iptables")
	if err := f.AddForeignRule("tcp dport 25 accept"); err == nil {
		t.Fatal("a rule added to nothing installed")
	}
	f.Install(rs)
	if err := f.AddForeignRule("tcp dport 25 accept"); err != nil {
		t.Fatal(err)
	}
	d, _ := f.Check(ctx, rs)
	if len(d) != 1 || d[0].Kind != firewall.RuleUnexpected || !d[0].Foreign || !strings.Contains(d[0].String(), "tcp dport 25 accept") {
		t.Fatalf("drift %q %+v", texts(d), d)
	}
	if res, err := f.Apply(ctx, rs); err != nil || !res.Changed {
		t.Fatalf("apply: %+v %v", res, err)
	}
	if d, _ := f.Check(ctx, rs); len(d) != 0 {
		t.Fatalf("after apply: %q", texts(d))
	}
}

// TestLinks: the sets that follow the consensus read back, drift as
// Links, and refresh brings them up to date, trusted sources included.
func TestLinks(t *testing.T) {
	ctx := context.Background()
	old := compiled(t, "reject *:*", []string{"192.0.2.1:9001", "192.0.2.2:9001"}, "198.51.100.0/24")
	next := compiled(t, "reject *:*", []string{"192.0.2.1:9001", "192.0.2.3:443"}, "198.51.100.0/24", "203.0.113.0/24")
	f := New("nftables")
	if _, _, err := f.Refresh(ctx, next); err == nil {
		t.Fatal("refresh of nothing installed")
	}
	if _, err := f.Apply(ctx, old); err != nil {
		t.Fatal(err)
	}
	links, err := f.RelayLinks(ctx, next)
	trust4 := ruleset.InboundSetName("trust", ruleset.IPv4)
	if err != nil || len(links["relays4"]) != 2 || len(links[trust4]) != 1 {
		t.Fatalf("links %v %v", links, err)
	}
	d, _ := f.Check(ctx, next)
	for _, x := range d {
		if !x.Links {
			t.Errorf("drift beside the links: %s", x)
		}
	}
	if len(d) != 3 { // relays4: 1 missing, 1 unexpected; trust4: 1 missing
		t.Errorf("drift %q, want 3", texts(d))
	}
	added, removed, err := f.Refresh(ctx, next)
	if err != nil || added != 2 || removed != 1 {
		t.Fatalf("refresh: +%d -%d %v, want +2 -1", added, removed, err)
	}
	if d, _ := f.Check(ctx, next); len(d) != 0 {
		t.Fatalf("after refresh: %q", texts(d))
	}
	if err := f.SetElements("relays4", nil); err != nil {
		t.Fatal(err)
	}
	if d, _ := f.Check(ctx, next); texts(d) != "set relays4: 2 elements missing" {
		t.Fatalf("after the set was emptied: %q", texts(d))
	}
	if err := f.SetElements("nope", nil); err == nil {
		t.Fatal("SetElements of a set not installed")
	}
}

// TestFaults: a fault fails its operation every time or a number of
// times, before the operation or halfway (after it took effect).
func TestFaults(t *testing.T) {
	ctx := context.Background()
	a := compiled(t, "accept *:80,reject *:*", nil)
	b := compiled(t, "accept *:443,reject *:*", nil)
	boom := errors.New("kernel says no")
	tests := []struct {
		name      string
		fault     Fault
		fails     int  // applies of b that fail, of three
		installsB bool // after the first failed apply
	}{
		{"every time", Fault{Op: OpApply, Err: boom}, 3, false},
		{"once", Fault{Op: OpApply, Err: boom, Times: 1}, 1, false},
		{"halfway", Fault{Op: OpApply, Err: boom, Times: 1, Halfway: true}, 1, true},
	}
	for _, tt := range tests {
		f := New("nftables")
		f.Install(a)
		f.Inject(tt.fault)
		fails := 0
		for i := 0; i < 3; i++ {
			_, err := f.Apply(ctx, b)
			if err != nil {
				if !errors.Is(err, boom) {
					t.Fatalf("%s: %v", tt.name, err)
				}
				fails++
			}
			if i == 0 {
				if d, _ := f.Check(ctx, b); (len(d) == 0) != tt.installsB {
					t.Errorf("%s: b installed %v after the failed apply, want %v", tt.name, len(d) == 0, tt.installsB)
				}
			}
		}
		if fails != tt.fails || f.Calls(OpApply) != 3 {
			t.Errorf("%s: %d of %d applies failed, want %d", tt.name, fails, f.Calls(OpApply), tt.fails)
		}
	}
	f := New("nftables")
	f.Inject(Fault{Op: OpRelayLinks, Err: boom})
	if _, err := f.RelayLinks(ctx, a); !errors.Is(err, boom) {
		t.Fatalf("RelayLinks: %v", err)
	}
	f.Inject(Fault{Op: OpRelayLinks})
	if _, err := f.RelayLinks(ctx, a); err != nil {
		t.Fatalf("RelayLinks after the fault was cleared: %v", err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := f.Installed(canceled); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: %v", err)
	}
}

// TestCountersAndBlocks: counters by rule name, blocks while the inbound
// protection is installed, and Remove forgets both.
func TestCountersAndBlocks(t *testing.T) {
	ctx := context.Background()
	rs := compiled(t, "reject *:*", nil, "198.51.100.0/24")
	f := New("nftables")
	if c, err := f.Counters(ctx); err != nil || len(c) != 0 {
		t.Fatalf("nothing installed: %v %v", c, err)
	}
	f.Install(rs)
	name := rs.Outbound[len(rs.Outbound)-1].Name
	f.Count(name, 2, 120)
	f.Count(name, 1, 60)
	c, err := f.Counters(ctx)
	if err != nil || c[name] != (firewall.Counter{Packets: 3, Bytes: 180}) || len(c) < len(rs.Outbound) {
		t.Fatalf("counters %v %v", c, err)
	}
	src := netip.MustParsePrefix("203.0.113.0/24")
	f.Block(firewall.Block{Source: src, ExpiresSeconds: int64(time.Hour / time.Second)})
	if bl, _ := f.Blocked(ctx, *rs.Inbound); len(bl) != 1 || bl[0].Source != src {
		t.Fatalf("blocked %v", bl)
	}
	if ok, _ := f.Unblock(ctx, src); !ok {
		t.Fatal("unblock: not blocked")
	}
	if ok, _ := f.Unblock(ctx, src); ok {
		t.Fatal("unblocked twice")
	}
	if removed, err := f.Remove(ctx); !removed || err != nil {
		t.Fatalf("remove: %v %v", removed, err)
	}
	if removed, _ := f.Remove(ctx); removed {
		t.Fatal("removed twice")
	}
	if ok, _ := f.Installed(ctx); ok || f.Ruleset() != nil {
		t.Fatal("installed after remove")
	}
}

// TestRender: the ruleset as JSON, refused when invalid.
func TestRender(t *testing.T) {
	rs := compiled(t, "reject *:*", nil)
	l, err := New("nftables").Render(rs)
	if err != nil || len(l) != 1 || l[0].Format != "json" || !strings.Contains(l[0].Text, `"version"`) {
		t.Fatalf("render: %v %v", l, err)
	}
	bad := rs
	bad.Outbound = slices.Clone(rs.Outbound)
	bad.Outbound[0].Proto = "ipx"
	if _, err := New("nftables").Render(bad); err == nil {
		t.Fatal("an invalid ruleset rendered")
	}
}
