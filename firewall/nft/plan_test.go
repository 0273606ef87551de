package nft

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/relayfw/relayfw/exitpolicy"
	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/ruleset"
)

func TestPlanRefusesWhatItCannotExpress(t *testing.T) {
	ok := ruleset.Rule{Name: "x", Action: ruleset.Accept}
	for name, mutate := range map[string]func(*ruleset.Rule){
		"interface":       func(r *ruleset.Rule) { r.OutIface = "eth0" },
		"ct state":        func(r *ruleset.Rule) { r.CtState = []string{"untracked"} },
		"protocol":        func(r *ruleset.Rule) { r.Proto = "sctp" },
		"backwards range": func(r *ruleset.Rule) { r.Proto = "tcp"; r.DstPorts = []ruleset.PortRange{{First: 1024, Last: 1}} },
		"ports no proto":  func(r *ruleset.Rule) { r.DstPorts = []ruleset.PortRange{{First: 53, Last: 53}} },
		"source prefix": func(r *ruleset.Rule) {
			r.Family = ruleset.IPv4
			r.SrcAddrs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
		},
		"family mismatch": func(r *ruleset.Rule) {
			r.Family = ruleset.IPv6
			r.DstAddrs = []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32")}
		},
		"set no family": func(r *ruleset.Rule) { r.Proto = "tcp"; r.Set = "relays4" },
		"map no family": func(r *ruleset.Rule) { r.Proto = "tcp"; r.ExitMap = "exit4" },
		"reset no tcp":  func(r *ruleset.Rule) { r.Action = ruleset.Reject; r.RejectWith = ruleset.RejectTCPReset },
		"action":        func(r *ruleset.Rule) { r.Action = "drop" },
		"icmp no proto": func(r *ruleset.Rule) { r.ICMPTypes = []int{8} },
	} {
		r := ok
		mutate(&r)
		if _, err := newPlan(ruleset.Ruleset{Outbound: []ruleset.Rule{r}}); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
	if _, err := newPlan(ruleset.Ruleset{Outbound: []ruleset.Rule{ok}}); err != nil {
		t.Fatal(err)
	}
}

func TestPlanExpandsLists(t *testing.T) {
	r := ruleset.Rule{Name: "dns", Family: ruleset.IPv4, Proto: "udp", Action: ruleset.Accept,
		DstAddrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("192.0.2.2/32")},
		DstPorts: []ruleset.PortRange{{First: 53, Last: 53}}}
	p, err := newPlan(ruleset.Ruleset{Outbound: []ruleset.Rule{r}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range p.rules {
		got = append(got, k.text())
	}
	want := []string{
		`meta nfproto ipv4 ip daddr 192.0.2.1 meta l4proto udp udp dport 53 counter accept comment "relayfw: dns"`,
		`meta nfproto ipv4 ip daddr 192.0.2.2 meta l4proto udp udp dport 53 counter accept comment "relayfw: dns"`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatal(diff)
	}
}

func TestPlanPrefixesRangesUsers(t *testing.T) {
	uid := uint32(105)
	r := ruleset.Rule{Name: "extra-apt4", Family: ruleset.IPv4, Proto: "tcp", Action: ruleset.Accept, SocketUID: &uid,
		DstAddrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.7/32")},
		DstPorts: []ruleset.PortRange{{First: 80, Last: 80}, {First: 8000, Last: 8999}}}
	p, err := newPlan(ruleset.Ruleset{Outbound: []ruleset.Rule{r}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range p.rules {
		got = append(got, k.text())
	}
	c := ` counter accept comment "relayfw: extra-apt4"`
	want := []string{
		"meta skuid 105 meta nfproto ipv4 ip daddr 192.0.2.0/24 meta l4proto tcp tcp dport 80" + c,
		"meta skuid 105 meta nfproto ipv4 ip daddr 192.0.2.0/24 meta l4proto tcp tcp dport 8000-8999" + c,
		"meta skuid 105 meta nfproto ipv4 ip daddr 198.51.100.7 meta l4proto tcp tcp dport 80" + c,
		"meta skuid 105 meta nfproto ipv4 ip daddr 198.51.100.7 meta l4proto tcp tcp dport 8000-8999" + c,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatal(diff)
	}
}

func TestRenderExample(t *testing.T) {
	entries, _, err := exitpolicy.Parse("reject 10.0.0.0/8:*,accept *:80,reject *:*")
	if err != nil {
		t.Fatal(err)
	}
	text, err := Render(ruleset.Compile(exitpolicy.ExitPolicy{Entries: entries}, ruleset.DefaultHost()))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"table inet relayfw\ndelete table inet relayfw\ntable inet relayfw {\n",
		"\tset exit4_c0 {\n\t\ttype inet_service\n\t\tflags interval\n\t\telements = {\n\t\t\t80\n\t\t}\n\t}\n",
		"\tchain exit4_c0 {\n\t\tmeta l4proto tcp tcp dport @exit4_c0 counter accept comment \"relayfw: exit4\"\n\t}\n",
		"\tmap exit4 {\n\t\ttype ipv4_addr : verdict\n\t\tflags interval\n\t\telements = {\n\t\t\t0.0.0.0-9.255.255.255 : jump exit4_c0,\n\t\t\t11.0.0.0-255.255.255.255 : jump exit4_c0\n\t\t}\n\t}\n",
		"\tmap exit6 {\n\t\ttype ipv6_addr : verdict\n\t\tflags interval\n\t\telements = {\n\t\t\t:: - ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff : jump exit6_c0",
		`meta nfproto ipv4 meta l4proto tcp ip daddr vmap @exit4 comment "relayfw: exit4"`,
		"type filter hook output priority filter; policy accept;",
		`oif "lo" counter accept comment "relayfw: loopback"`,
		`meta l4proto tcp counter reject with tcp reset comment "relayfw: reject-tcp"`,
		`counter reject with icmpx admin-prohibited comment "relayfw: reject"`,
	} {
		if !strings.Contains(text, strings.ReplaceAll(want, " - ", "-")) {
			t.Errorf("rendered ruleset lacks %q:\n%s", want, text)
		}
	}
}

func TestStringDiff(t *testing.T) {
	want := []string{"192.0.2.1 . 443", "192.0.2.1 . 80", "192.0.2.9 . 22"}
	got := []string{"192.0.2.1 . 443", "192.0.2.5 . 25", "192.0.2.9 . 22"}
	missing, extra := firewall.SortedDiff(want, got)
	if diff := cmp.Diff([]string{"192.0.2.1 . 80"}, missing); diff != "" {
		t.Error("missing:", diff)
	}
	if diff := cmp.Diff([]string{"192.0.2.5 . 25"}, extra); diff != "" {
		t.Error("extra:", diff)
	}
}

// TestShardedMapRoutesAsTheExitMap: a policy with more intervals than a
// map shard holds is split, and following the top map, the shard chain's
// map and the class chain gives every address the exit map's class.
func TestShardedMapRoutesAsTheExitMap(t *testing.T) {
	var text []string
	for i := 0; i < 3*mapShardSize; i++ {
		text = append(text, fmt.Sprintf("reject 11.%d.%d.%d:*", i/32768, i/128%256, i%128*2))
	}
	entries, _, err := exitpolicy.Parse(strings.Join(text, ",") + ",accept 10.0.0.0/8:22,accept *:80,reject *:*")
	if err != nil {
		t.Fatal(err)
	}
	rs := ruleset.Compile(exitpolicy.ExitPolicy{Entries: entries}, ruleset.Host{})
	p, err := newPlan(rs)
	if err != nil {
		t.Fatal(err)
	}
	maps := map[string]kernelMap{}
	for _, m := range p.maps {
		maps[m.name] = m
	}
	chains := map[string]kernelClass{}
	for _, c := range p.classes {
		chains[c.chain] = c
	}
	if len(maps["exit4"].intervals) < 3 || len(maps["exit4_s0"].intervals) != mapShardSize {
		t.Fatalf("want exit4 in shards of %d: top %d intervals", mapShardSize, len(maps["exit4"].intervals))
	}
	lookup := func(m kernelMap, a netip.Addr) string {
		for _, iv := range m.intervals {
			if iv.first.Compare(a) <= 0 && a.Compare(iv.last) <= 0 {
				return iv.chain
			}
		}
		return ""
	}
	em, _ := rs.ExitMap("exit4")
	r := rand.New(rand.NewPCG(1, 1))
	for i := 0; i < 5000; i++ {
		a := netip.AddrFrom4([4]byte{byte(9 + r.IntN(4)), byte(r.IntN(1 + 3*mapShardSize/32768)), byte(r.IntN(256)), byte(r.IntN(256))})
		if i%4 == 0 {
			a = netip.AddrFrom4([4]byte{byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		}
		want := ""
		if c := em.Lookup(a); c != ruleset.NoClass {
			want = em.Classes[c].Name
		}
		got := ""
		if shard := lookup(maps["exit4"], a); shard != "" {
			if chains[shard].rule.vmap != shard {
				t.Fatalf("chain %s does not look up its map", shard)
			}
			got = lookup(maps[shard], a)
		}
		if got != want {
			t.Fatalf("%s: routed to %q, exit map class %q", a, got, want)
		}
	}
}
