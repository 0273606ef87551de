package ruleset

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/relayfw/relayfw/exitpolicy"
)

func TestRangesAndPrefixes(t *testing.T) {
	pfx := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	for _, tc := range []struct {
		in   []netip.Prefix
		want []string // ranges
	}{
		{pfx("192.0.2.4/32", "192.0.2.5/32"), []string{"192.0.2.4-192.0.2.5"}},
		{pfx("192.0.2.0/25", "192.0.2.128/25", "192.0.2.7/32"), []string{"192.0.2.0-192.0.2.255"}},
		{pfx("198.51.100.1/32", "192.0.2.0/24"), []string{"192.0.2.0-192.0.2.255", "198.51.100.1-198.51.100.1"}},
		{pfx("2001:db8::/64", "2001:db8:0:1::/64", "0.0.0.0/0"), []string{"0.0.0.0-255.255.255.255", "2001:db8::-2001:db8:0:1:ffff:ffff:ffff:ffff"}},
		{pfx("::ffff:192.0.2.1/128"), []string{"192.0.2.1-192.0.2.1"}},
	} {
		var got []string
		var back []netip.Prefix
		for _, r := range Ranges(tc.in) {
			got = append(got, r.First.String()+"-"+r.Last.String())
			back = append(back, r.Prefixes()...)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("Ranges(%v) (-want +got):\n%s", tc.in, diff)
		}
		// The prefixes of the ranges cover the same addresses.
		if diff := cmp.Diff(Ranges(tc.in), Ranges(back), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
			t.Errorf("Prefixes of %v do not round-trip:\n%s", tc.in, diff)
		}
	}
	// A range that is no prefix splits into the fewest.
	r := AddrRange{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.6")}
	var got []string
	for _, p := range r.Prefixes() {
		got = append(got, p.String())
	}
	if diff := cmp.Diff([]string{"192.0.2.1/32", "192.0.2.2/31", "192.0.2.4/31", "192.0.2.6/32"}, got); diff != "" {
		t.Errorf("Prefixes (-want +got):\n%s", diff)
	}
}

func TestInboundDefaultsAndValidate(t *testing.T) {
	in := DefaultInbound()
	in.Endpoints = eps("0.0.0.0:9001", "192.0.2.11:443", "[::]:9001")
	if err := in.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if got := in.MinuteMeterSeconds(); got != 60 {
		t.Errorf("minute meter: %d s", got)
	}
	if got := in.Source(netip.MustParseAddr("2001:db8:1:2:3:4:5:6")); got.String() != "2001:db8:1:2::/64" {
		t.Errorf("v6 source: %s", got)
	}
	if got := in.Source(netip.MustParseAddr("192.0.2.9")); got.String() != "192.0.2.9/32" {
		t.Errorf("v4 source: %s", got)
	}
	for _, bad := range []func(*Inbound){
		func(i *Inbound) { i.Endpoints = nil },
		func(i *Inbound) { i.Endpoints = eps("192.0.2.11:0") },
		func(i *Inbound) { i.Endpoints = eps("[::]:9001", "0.0.0.0:9001") },       // not sorted
		func(i *Inbound) { i.Endpoints = eps("0.0.0.0:9001", "0.0.0.0:9001") },    // twice
		func(i *Inbound) { i.Endpoints = eps("0.0.0.0:9001", "192.0.2.11:9001") }, // inside another
		func(i *Inbound) { i.Endpoints = eps("[::ffff:192.0.2.11]:9001") },
		func(i *Inbound) { i.Endpoints = eps("[fe80::1%eth0]:9001") },
		func(i *Inbound) { i.V4Prefix = 33 },
		func(i *Inbound) { i.V6Prefix = 0 },
		func(i *Inbound) { i.PerMinute = 0 },
		func(i *Inbound) { i.MaxConns = 0 },
		func(i *Inbound) { i.BlockSeconds = 0 },
		func(i *Inbound) { i.SetSize = 10 },
		func(i *Inbound) { i.Trusted = []netip.Prefix{netip.MustParsePrefix("192.0.2.1/24")} },
	} {
		c := in
		bad(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: accepted", c)
		}
	}
}

func TestCompileInbound(t *testing.T) {
	h := DefaultHost()
	in := DefaultInbound()
	in.Endpoints = eps("[::]:9001", "0.0.0.0:443", "0.0.0.0:9001", "192.0.2.11:9001", "[::ffff:192.0.2.12]:443", "[::]:9001")
	in.Trusted = []netip.Prefix{netip.MustParsePrefix("192.0.2.5/32"), netip.MustParsePrefix("192.0.2.0/24")}
	h.Inbound = &in
	rs := Compile(mustPolicy(t, "accept *:443"), h)
	if rs.Inbound == nil {
		t.Fatal("no inbound protection")
	}
	if diff := cmp.Diff(eps("0.0.0.0:443", "0.0.0.0:9001", "[::]:9001"), rs.Inbound.Endpoints, cmpAddrPort); diff != "" {
		t.Errorf("endpoints (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, rs.Inbound.Trusted, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("trusted (-want +got):\n%s", diff)
	}
	if err := rs.Validate(); err != nil {
		t.Fatal(err)
	}
	if rs := Compile(mustPolicy(t, "accept *:443"), DefaultHost()); rs.Inbound != nil {
		t.Error("inbound protection without [inbound]")
	}
	// Changes says when it comes and goes.
	off := Compile(mustPolicy(t, "accept *:443"), DefaultHost())
	if got := Changes(off, rs); len(got) != 1 || got[0][:22] != "+ inbound protection: " {
		t.Errorf("Changes on: %q", got)
	}
	if got := Changes(rs, off); len(got) != 1 || got[0][:31] != "- inbound protection removed: n" {
		t.Errorf("Changes off: %q", got)
	}
	// An ORPort bound to its address: the change names the endpoints.
	bound := in
	bound.Endpoints = eps("192.0.2.11:443", "[::]:9001")
	h.Inbound = &bound
	next := Compile(mustPolicy(t, "accept *:443"), h)
	if got := Changes(rs, next); len(got) != 1 || !strings.HasPrefix(got[0], "~ inbound protection: new TCP connections to port 9001 (IPv6), 192.0.2.11:443: per source") {
		t.Errorf("Changes of the endpoints: %q", got)
	}
}

func mustPolicy(t *testing.T, text string) exitpolicy.ExitPolicy {
	t.Helper()
	entries, _, err := exitpolicy.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	return exitpolicy.ExitPolicy{Entries: entries}
}

func TestParsePrefixOrAddr(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.0/24": "192.0.2.0/24", "192.0.2.7": "192.0.2.7/32", "2001:db8::7": "2001:db8::7/128",
		"::ffff:192.0.2.7": "192.0.2.7/32", "2001:db8::/48": "2001:db8::/48",
	} {
		if p, err := ParsePrefixOrAddr(in); err != nil || p.String() != want {
			t.Errorf("%q: %v %v, want %s", in, p, err, want)
		}
	}
	for _, bad := range []string{"", "example.org", "192.0.2.0/33", "192.0.2.256"} {
		if p, err := ParsePrefixOrAddr(bad); err == nil {
			t.Errorf("%q: accepted as %v", bad, p)
		}
	}
}

func TestInboundProtects(t *testing.T) {
	in := DefaultInbound()
	in.Endpoints = NormalizeEndpoints(eps("0.0.0.0:9030", "192.0.2.11:443", "[::]:9001", "0.0.0.0:9001", "[2001:db8::11]:443"))
	for dst, want := range map[string]bool{
		"192.0.2.11:443": true, "192.0.2.10:443": false, "[2001:db8::11]:443": true, "[2001:db8::10]:443": false,
		"198.51.100.1:9001": true, "[2001:db8::1]:9001": true, "198.51.100.1:9030": true, "[2001:db8::1]:9030": false,
		"[::ffff:192.0.2.11]:443": true, "192.0.2.11:22": false,
	} {
		if got := in.Protects(netip.MustParseAddrPort(dst)); got != want {
			t.Errorf("Protects(%s) = %v", dst, got)
		}
	}
	if got, want := in.EndpointsText(), "port 9001, port 9030 (IPv4), 192.0.2.11:443, [2001:db8::11]:443"; got != want {
		t.Errorf("EndpointsText: %q, want %q", got, want)
	}
	if all, addrs := in.ProtectedOn(IPv4, 443); all || len(addrs) != 1 || addrs[0].String() != "192.0.2.11" {
		t.Errorf("ProtectedOn(IPv4, 443): %v %v", all, addrs)
	}
	if all, addrs := in.ProtectedOn(IPv6, 9001); !all || len(addrs) != 0 {
		t.Errorf("ProtectedOn(IPv6, 9001): %v %v", all, addrs)
	}
	if got := in.PortsOn(IPv4); fmt.Sprint(got) != "[9001 9030]" {
		t.Errorf("PortsOn(IPv4): %v", got)
	}
}

// TestInboundJSON: endpoints are written as tor writes them; a version 2
// ruleset's ports (an older relayfw's, read back for a rollback) were
// protected on every address.
func TestInboundJSON(t *testing.T) {
	in := DefaultInbound()
	in.Endpoints = eps("0.0.0.0:443", "192.0.2.11:9001", "[::]:443")
	data, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"endpoints":["0.0.0.0:443","192.0.2.11:9001","[::]:443"]`) {
		t.Errorf("JSON: %s", data)
	}
	var back Inbound
	if err := json.Unmarshal(data, &back); err != nil || !sameJSON(in, back) {
		t.Errorf("round trip: %v\n%+v\n%+v", err, in, back)
	}
	var old Inbound
	if err := json.Unmarshal([]byte(`{"ports":[9001,443],"v4_prefix":32,"v6_prefix":64,"per_minute":8,"burst":8,"per_hour":24,"block_seconds":86400,"max_conns":8,"set_size":262144,"trusted":[]}`), &old); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(eps("0.0.0.0:443", "0.0.0.0:9001", "[::]:443", "[::]:9001"), old.Endpoints, cmpAddrPort); diff != "" || old.Validate() != nil || old.PerHour != 24 {
		t.Errorf("version 2 ports: %v (-want +got):\n%s", old.Validate(), diff)
	}
}

var cmpAddrPort = cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })

// eps parses endpoints.
func eps(ss ...string) []netip.AddrPort {
	out := make([]netip.AddrPort, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddrPort(s)
	}
	return out
}
