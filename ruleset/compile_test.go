package ruleset

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/relayfw/relayfw/exitpolicy"
	"github.com/relayfw/relayfw/torconf"
)

// randomPolicyText builds a random torrc exit policy from the kinds of
// entries operators write: wildcards, prefixes of all lengths, single
// hosts, port ranges, private, accept6/reject6.
func randomPolicyText(r *rand.Rand, n int) string {
	addrs := []string{"*", "*4", "*6", "private", "203.0.113.0/24", "203.0.113.77", "198.51.100.0/25",
		"10.0.0.0/8", "192.0.2.128/26", "8.8.8.8/16", "1.2.3.4/32", "0.0.0.0/1", "128.0.0.0/2",
		"[2001:db8::]/32", "[2001:db8::1]", "[2001:db8:1::]/48", "[fc00::5]/64", "[::]/1", "[3fff::]/20"}
	var parts []string
	for i := 0; i < n; i++ {
		action := []string{"accept", "reject", "accept6", "reject6"}[r.IntN(4)]
		addr := addrs[r.IntN(len(addrs))]
		if r.IntN(5) == 0 {
			addr = fmt.Sprintf("%d.%d.%d.%d/%d", r.IntN(256), r.IntN(256), r.IntN(256), r.IntN(256), r.IntN(33))
		}
		port := "*"
		switch r.IntN(4) {
		case 0:
			port = fmt.Sprint(1 + r.IntN(65535))
		case 1:
			lo := 1 + r.IntN(65535)
			port = fmt.Sprintf("%d-%d", lo, lo+r.IntN(65536-lo))
		case 2:
			port = []string{"80", "443", "22", "25", "1-1024", "6881-6999"}[r.IntN(6)]
		}
		parts = append(parts, fmt.Sprintf("%s %s:%s", action, addr, port))
	}
	return strings.Join(parts, ",")
}

func randomAddr(r *rand.Rand, v6 bool, near []exitpolicy.Entry) netip.Addr {
	// Half of the probes land near an entry's prefix, where decisions change.
	if len(near) > 0 && r.IntN(2) == 0 {
		e := near[r.IntN(len(near))]
		if e.IPv6() == v6 {
			n := e.Network()
			b := n.Addr().AsSlice()
			for i := range b {
				if i*8 >= n.Bits() {
					b[i] = byte(r.IntN(256))
				}
			}
			if a, ok := netip.AddrFromSlice(b); ok {
				if r.IntN(4) == 0 {
					a = lastAddr(n)
					if r.IntN(2) == 0 && a.Next().IsValid() {
						a = a.Next()
					}
				}
				return a
			}
		}
	}
	if v6 {
		var b [16]byte
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		if r.IntN(2) == 0 {
			b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
		}
		return netip.AddrFrom16(b)
	}
	return netip.AddrFrom4([4]byte{byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
}

// effectiveFromTorrc runs torrc text through the torrc reader and tor's
// exit-policy semantics.
func effectiveFromTorrc(text string) (exitpolicy.Effective, error) {
	lines, err := torconf.Parse(nil, "torrc", text)
	if err != nil {
		return exitpolicy.Effective{}, err
	}
	opts, err := torconf.OptionsFromLines(lines)
	if err != nil {
		return exitpolicy.Effective{}, err
	}
	return exitpolicy.FromOptions(opts, exitpolicy.HostFacts{})
}

// TestCompileMatchesPolicy is the property the backends rely on: for any
// TCP destination, the compiled ruleset decides exactly what the exit
// policy decides.
func TestCompileMatchesPolicy(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 300; round++ {
		text := randomPolicyText(r, 1+r.IntN(25))
		conf := fmt.Sprintf("ExitRelay 1\nIPv6Exit %d\nExitPolicyRejectPrivate %d\nExitPolicy %s\n", r.IntN(2), r.IntN(2), text)
		eff, err := effectiveFromTorrc(conf)
		if err != nil {
			t.Fatalf("round %d: %v\n%s", round, err, conf)
		}
		rs := Compile(eff.Policy, DefaultHost())
		for probe := 0; probe < 400; probe++ {
			v6 := r.IntN(2) == 0
			addr := randomAddr(r, v6, eff.Policy.Entries)
			port := uint16(1 + r.IntN(65535))
			if r.IntN(3) == 0 {
				port = []uint16{1, 22, 25, 80, 443, 1024, 6881, 6999, 65535}[r.IntN(9)]
			}
			want := eff.Policy.Decide(addr, port).Action.String()
			got := rs.Decide(Packet{OutIface: "eth0", Dst: addr, Proto: "tcp", DstPort: port, SYN: true}).Action.String()
			if got != want {
				t.Fatalf("round %d: %s port %d: ruleset %s, policy %s\npolicy:\n%s", round, addr, port, got, want, eff.Policy)
			}
		}
	}
}

// TestExitMapIntervals: the intervals backends load are disjoint, sorted,
// merged, and give every address the class Lookup gives it.
func TestExitMapIntervals(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for round := 0; round < 300; round++ {
		entries, _, err := exitpolicy.Parse(randomPolicyText(r, 1+r.IntN(30)))
		if err != nil {
			t.Fatal(err)
		}
		p := exitpolicy.ExitPolicy{Entries: entries}
		for _, v6 := range []bool{false, true} {
			m := NewExitMap(p, "exit", v6)
			ivs := m.Intervals()
			for i, iv := range ivs {
				if iv.Last.Less(iv.First) || iv.Class == NoClass {
					t.Fatalf("interval %d: %+v", i, iv)
				}
				if i > 0 {
					prev := ivs[i-1]
					if !prev.Last.Less(iv.First) || (prev.Last.Next() == iv.First && prev.Class == iv.Class) {
						t.Fatalf("intervals %d and %d overlap, are out of order or unmerged: %+v %+v", i-1, i, prev, iv)
					}
				}
			}
			for probe := 0; probe < 200; probe++ {
				a := randomAddr(r, v6, entries)
				want := m.Lookup(a)
				k, _ := IntervalAt(ivs, a)
				got := NoClass
				if k < len(ivs) && ivs[k].First.Compare(a) <= 0 && a.Compare(ivs[k].Last) <= 0 {
					got = ivs[k].Class
				}
				if got != want {
					t.Fatalf("%s: interval class %d, lookup %d\npolicy: %s\nmap: %+v", a, got, want, p, m)
				}
			}
			// A prefix never repeats the class of the prefix around it.
			for i, pc := range m.Prefixes {
				outer, bits := NoClass-1, -1
				for _, o := range m.Prefixes[:i] {
					if o.Prefix.Bits() > bits && o.Prefix.Bits() < pc.Prefix.Bits() && o.Prefix.Contains(pc.Prefix.Addr()) {
						outer, bits = o.Class, o.Prefix.Bits()
					}
				}
				if outer == pc.Class {
					t.Fatalf("prefix %v repeats its enclosing class %d", pc.Prefix, pc.Class)
				}
			}
		}
	}
}

func TestExitMapExample(t *testing.T) {
	entries, _, err := exitpolicy.Parse("reject 10.0.0.0/8:*,accept 1.2.3.4:443,accept *4:80,accept *4:443,reject *:*")
	if err != nil {
		t.Fatal(err)
	}
	p := exitpolicy.ExitPolicy{Entries: entries}
	got := NewExitMap(p, "exit4", false)
	want := ExitMap{Name: "exit4", Family: IPv4,
		Classes: []PortClass{{Name: "exit4_c0", Ports: []PortRange{{80, 80}, {443, 443}}}},
		// 1.2.3.4/32 accepts what the /0 accepts: not repeated.
		Prefixes: []PrefixClass{{netip.MustParsePrefix("0.0.0.0/0"), 0}, {netip.MustParsePrefix("10.0.0.0/8"), NoClass}},
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Fatalf("exit map (-want +got):\n%s", diff)
	}
	wantIv := []ClassInterval{
		{netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("9.255.255.255"), 0},
		{netip.MustParseAddr("11.0.0.0"), netip.MustParseAddr("255.255.255.255"), 0},
	}
	if diff := cmp.Diff(wantIv, got.Intervals(), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Fatalf("intervals (-want +got):\n%s", diff)
	}
	if v6 := NewExitMap(p, "exit6", true); len(v6.Classes) != 0 || len(v6.Intervals()) != 0 {
		t.Fatalf("IPv6 map for a policy rejecting IPv6: %+v", v6)
	}
}

// TestExitMapBlockList: N host rejects in front of a port list are N+1
// prefixes and one class, whatever N.
func TestExitMapBlockList(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 20000; i++ {
		fmt.Fprintf(&b, "reject %d.%d.%d.%d:*,", 11+i/62500, i/250%250, i%250, 1+i%200)
	}
	b.WriteString("accept *:21-23,accept *:53,accept *:80,accept *:443,reject *:*")
	entries, _, err := exitpolicy.Parse(b.String())
	if err != nil {
		t.Fatal(err)
	}
	m := NewExitMap(exitpolicy.ExitPolicy{Entries: entries}, "exit4", false)
	if len(m.Classes) != 1 || len(m.Prefixes) != 20001 {
		t.Fatalf("%d classes, %d prefixes; want 1 and 20001", len(m.Classes), len(m.Prefixes))
	}
	if n := len(m.Intervals()); n > 20001 {
		t.Fatalf("%d intervals for 20000 holes", n)
	}
}

// TestLogRuleDecidesNothing: reject logging only logs; every decision is
// the same as without it.
func TestLogRuleDecidesNothing(t *testing.T) {
	entries, _, err := exitpolicy.Parse("accept *:80,reject *:*")
	if err != nil {
		t.Fatal(err)
	}
	h := DefaultHost()
	plain := Compile(exitpolicy.ExitPolicy{Entries: entries}, h)
	h.LogRejectsPerMinute = 10
	logged := Compile(exitpolicy.ExitPolicy{Entries: entries}, h)
	if len(logged.Outbound) != len(plain.Outbound)+1 {
		t.Fatalf("want one more rule, got %d vs %d", len(logged.Outbound), len(plain.Outbound))
	}
	for _, p := range []Packet{
		{OutIface: "eth0", Dst: netip.MustParseAddr("203.0.113.5"), Proto: "tcp", DstPort: 80, SYN: true},
		{OutIface: "eth0", Dst: netip.MustParseAddr("203.0.113.5"), Proto: "tcp", DstPort: 25, SYN: true},
		{OutIface: "eth0", Dst: netip.MustParseAddr("2001:db8::5"), Proto: "udp", DstPort: 5353},
	} {
		if a, b := plain.Decide(p).Action, logged.Decide(p).Action; a != b {
			t.Errorf("%v: %s without logging, %s with", p, a, b)
		}
		if r := logged.Outbound[logged.Decide(p).Index]; r.Action == Log {
			t.Errorf("%v decided by the log rule", p)
		}
	}
}

// TestRelayLinksAreTors: the relay links accept TCP to what the
// consensus lists for the sockets of the tor users only (root when none
// is named); every other user meets the exit policy, which rejects here.
func TestRelayLinksAreTors(t *testing.T) {
	entries, _, err := exitpolicy.Parse("accept *:80,reject *:*")
	if err != nil {
		t.Fatal(err)
	}
	link4, link6 := netip.MustParseAddrPort("198.51.100.25:25"), netip.MustParseAddrPort("[2001:db8::25]:3389")
	uid := func(u uint32) *uint32 { return &u }
	tests := []struct {
		name      string
		users     []UserRef
		wantRules []string
		reach     []*uint32 // users whose sockets reach the links
		not       []*uint32 // users whose sockets do not
	}{
		{"none: root", nil, []string{"relay-links4", "relay-links6"}, []*uint32{uid(0)}, []*uint32{nil, uid(65534), uid(101)}},
		{"one user", []UserRef{{"debian-tor", 101}}, []string{"relay-links4", "relay-links6"},
			[]*uint32{uid(101)}, []*uint32{nil, uid(0), uid(65534)}},
		{"two users, one twice, unsorted", []UserRef{{"_tor-b", 202}, {"_tor-a", 201}, {"202", 202}},
			[]string{"relay-links4-uid201", "relay-links4-uid202", "relay-links6-uid201", "relay-links6-uid202"},
			[]*uint32{uid(201), uid(202)}, []*uint32{nil, uid(0), uid(65534)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := DefaultHost()
			h.RelayLinks = []netip.AddrPort{link4, link6}
			h.RelayLinkUsers = tt.users
			rs := CompileInstances([]Instance{{Name: "default", Policy: exitpolicy.ExitPolicy{Entries: entries}}}, h)
			if err := rs.Validate(); err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, r := range rs.Outbound {
				if r.Class == ClassRelayLink {
					names = append(names, r.Name)
				}
			}
			if diff := cmp.Diff(tt.wantRules, names); diff != "" {
				t.Errorf("relay-link rules (-want +got):\n%s", diff)
			}
			for _, link := range []netip.AddrPort{link4, link6} {
				p := Packet{OutIface: "eth0", Dst: link.Addr(), Proto: "tcp", DstPort: link.Port(), SYN: true}
				for _, u := range tt.reach {
					p.UID = u
					if i := rs.Decide(p).Index; i < 0 || rs.Outbound[i].Class != ClassRelayLink {
						t.Errorf("uid %d to %s: not a relay link", *u, link)
					}
				}
				for _, u := range tt.not {
					p.UID = u
					if rs.Decide(p).Action != Reject {
						t.Errorf("uid %v to %s: %s, want reject", u, link, rs.Decide(p).Action)
					}
				}
			}
		})
	}
}
