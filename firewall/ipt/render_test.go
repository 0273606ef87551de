package ipt

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/relayfw/relayfw/exitpolicy"
	"github.com/relayfw/relayfw/ruleset"
)

func TestAddrMatch(t *testing.T) {
	for _, tc := range []struct{ first, last, want string }{
		{"0.0.0.0", "255.255.255.255", ""},
		{"10.0.0.0", "10.255.255.255", "-d 10.0.0.0/8"},
		{"203.0.113.7", "203.0.113.7", "-d 203.0.113.7/32"},
		{"1.0.0.0", "9.255.255.255", "-m iprange --dst-range 1.0.0.0-9.255.255.255"},
		{"::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", ""},
		{"2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "-d 2001:db8::/32"},
		{"100::", "2001:db8::f", "-m iprange --dst-range 100::-2001:db8::f"},
	} {
		if got := addrMatch(netip.MustParseAddr(tc.first), netip.MustParseAddr(tc.last)); got != tc.want {
			t.Errorf("%s-%s: %q, want %q", tc.first, tc.last, got, tc.want)
		}
	}
}

func TestMultiportSplits(t *testing.T) {
	// 12 ranges (2 slots each) do not fit one multiport match (15 slots).
	var text []string
	for i := 0; i < 12; i++ {
		text = append(text, "accept *4:"+[]string{"10-11", "20-21", "30-31", "40-41", "50-51", "60-61", "70-71", "80-81", "90-91", "100-101", "110-111", "120-121"}[i])
	}
	entries, _, err := exitpolicy.Parse(strings.Join(text, ",") + ",reject *:*")
	if err != nil {
		t.Fatal(err)
	}
	lines, err := Lines(ruleset.Compile(exitpolicy.ExitPolicy{Entries: entries}, ruleset.Host{}), false)
	if err != nil {
		t.Fatal(err)
	}
	var exit []string
	for _, l := range lines {
		if strings.Contains(l, `"relayfw: exit4"`) {
			exit = append(exit, l)
		}
	}
	want := []string{
		`-A RELAYFW-OUTPUT -p tcp -m multiport --dports 10:11,20:21,30:31,40:41,50:51,60:61,70:71 -m comment --comment "relayfw: exit4" -j ACCEPT`,
		`-A RELAYFW-OUTPUT -p tcp -m multiport --dports 80:81,90:91,100:101,110:111,120:121 -m comment --comment "relayfw: exit4" -j ACCEPT`,
	}
	if strings.Join(exit, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(exit, "\n"), strings.Join(want, "\n"))
	}
}

func TestLinesRefuseWhatIptablesCannotExpress(t *testing.T) {
	for name, r := range map[string]ruleset.Rule{
		"interface":       {Name: "x", OutIface: "eth0", Action: ruleset.Accept},
		"backwards range": {Name: "x", Proto: "tcp", DstPorts: []ruleset.PortRange{{First: 2, Last: 1}}, Action: ruleset.Accept},
		"source prefix":   {Name: "x", SrcAddrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Action: ruleset.Accept},
		"action":          {Name: "x", Action: "drop"},
	} {
		if _, err := Lines(ruleset.Ruleset{Outbound: []ruleset.Rule{r}}, false); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
}

func TestLinesPrefixesRangesUsers(t *testing.T) {
	uid := uint32(105)
	r := ruleset.Rule{Name: "extra-apt4", Family: ruleset.IPv4, Proto: "tcp", Action: ruleset.Accept, SocketUID: &uid,
		DstAddrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
		DstPorts: []ruleset.PortRange{{First: 80, Last: 80}, {First: 8000, Last: 8999}}}
	got, err := Lines(ruleset.Ruleset{Outbound: []ruleset.Rule{r}}, false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`-A RELAYFW-OUTPUT -d 192.0.2.0/24 -p tcp -m owner --uid-owner 105 -m tcp --dport 80 -m comment --comment "relayfw: extra-apt4" -j ACCEPT`,
		`-A RELAYFW-OUTPUT -d 192.0.2.0/24 -p tcp -m owner --uid-owner 105 -m tcp --dport 8000:8999 -m comment --comment "relayfw: extra-apt4" -j ACCEPT`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s", strings.Join(got, "\n"))
	}
}

// hashNetMatch answers as the kernel's hash:net does: the longest prefix
// in the set that contains a decides, and a nomatch entry means no.
func hashNetMatch(entries []string, a netip.Addr) bool {
	best, match := -1, false
	for _, e := range entries {
		text, nomatch := strings.CutSuffix(e, " nomatch")
		p, err := netip.ParsePrefix(text)
		if err != nil {
			p = netip.PrefixFrom(netip.MustParseAddr(text), a.BitLen())
		}
		if p.Bits() > best && p.Contains(a) {
			best, match = p.Bits(), !nomatch
		}
	}
	return match
}

// TestClassEntriesAreTheExitMap: for random policies, an address is in a
// class's hash:net set exactly when the exit map gives it that class; no
// set holds /0 (hash:net refuses it).
func TestClassEntriesAreTheExitMap(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	items := []string{"10.0.0.0/8", "10.1.0.0/16", "10.1.2.3", "0.0.0.0/1", "128.0.0.0/1", "192.0.2.0/24", "*4", "*6",
		"[2001:db8::]/32", "[2001:db8::1]", "[::]/1", "[8000::]/1", "[2001:db8:1::]/48", "*"}
	for round := 0; round < 300; round++ {
		var parts []string
		for i := 0; i < 1+r.IntN(12); i++ {
			port := []string{"*", "80", "443", "1-1024", "22"}[r.IntN(5)]
			parts = append(parts, fmt.Sprintf("%s %s:%s", []string{"accept", "reject"}[r.IntN(2)], items[r.IntN(len(items))], port))
		}
		entries, _, err := exitpolicy.Parse(strings.Join(parts, ","))
		if err != nil {
			t.Fatal(err)
		}
		for _, v6 := range []bool{false, true} {
			m := ruleset.NewExitMap(exitpolicy.ExitPolicy{Entries: entries}, "exit", v6)
			sets := map[int][]string{}
			for c := range m.Classes {
				sets[c] = classEntries(m, c)
				for _, e := range sets[c] {
					if strings.HasSuffix(strings.Fields(e)[0], "/0") {
						t.Fatalf("class %d has %q", c, e)
					}
				}
			}
			for _, pc := range m.Prefixes {
				// Probe each prefix's first and last address and one inside.
				for _, a := range []netip.Addr{pc.Prefix.Addr(), lastOf(pc.Prefix), pc.Prefix.Addr().Next()} {
					if !a.IsValid() {
						continue
					}
					want := m.Lookup(a)
					for c, set := range sets {
						if got := hashNetMatch(set, a); got != (c == want) {
							t.Fatalf("%s: in set of class %d: %v, but its class is %d\npolicy %s\nmap %+v\nset %v", a, c, got, want, strings.Join(parts, ","), m, set)
						}
					}
				}
			}
		}
	}
}

// TestHashlimitRate: rates print as iptables -S prints them back, and the
// unit is hashlimit's default meter expiry.
func TestHashlimitRate(t *testing.T) {
	for _, tc := range []struct {
		n      uint
		unit   string
		want   string
		expire uint64
	}{
		{8, "min", "8/min", 60000},
		{24, "hour", "24/hour", 3600000},
		{90, "hour", "90/hour", 3600000},
		{60, "min", "1/sec", 1000}, // as iptables prints it
		{120, "min", "2/sec", 1000},
		{7, "min", "7/min", 60000},
		{1, "hour", "1/hour", 3600000},
		{48, "hour", "48/hour", 3600000},
		{120, "hour", "2/min", 60000},
	} {
		got, expire := hashlimitRate(tc.n, tc.unit)
		if got != tc.want || expire != tc.expire {
			t.Errorf("%d/%s: %s, %d ms; want %s, %d ms", tc.n, tc.unit, got, expire, tc.want, tc.expire)
		}
	}
}

func TestCarriedOver(t *testing.T) {
	got := carriedOver([]string{"198.51.100.9 timeout 86312", "2001:db8:1:2:: timeout 20", "203.0.113.1", "bad timeout x"}, 3600)
	want := []string{"198.51.100.9 timeout 3600", "2001:db8:1:2:: timeout 20"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("carriedOver: %q, want %q", got, want)
	}
}
