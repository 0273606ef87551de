package host

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/relayfw/relayfw/ruleset"
)

func TestParseInboundTarget(t *testing.T) {
	for _, tc := range []struct {
		in   string
		addr string
		port uint16
		ok   bool
	}{
		{"203.0.113.7", "203.0.113.7", 0, true},
		{"203.0.113.7:9001", "203.0.113.7", 9001, true},
		{"2001:db8::7", "2001:db8::7", 0, true},
		{"[2001:db8::7]:443", "2001:db8::7", 443, true},
		{"::ffff:192.0.2.1", "192.0.2.1", 0, true},
		{"203.0.113.7:0", "", 0, false},
		{"fe80::1%eth0", "", 0, false},
		{"example.org", "", 0, false},
		{"", "", 0, false},
	} {
		a, port, err := parseInboundTarget(tc.in)
		if (err == nil) != tc.ok || tc.ok && (a.String() != tc.addr || port != tc.port) {
			t.Errorf("%q: %v %d %v", tc.in, a, port, err)
		}
	}
}

func FuzzParseInboundTarget(f *testing.F) {
	for _, s := range []string{"203.0.113.7", "[2001:db8::7]:443", "1.2.3.4:65535", "::", "x"} {
		f.Add(s)
	}
	in := ruleset.DefaultInbound()
	in.Endpoints = []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:9001"), netip.MustParseAddrPort("192.0.2.11:443"), netip.MustParseAddrPort("[::]:9001")}
	f.Fuzz(func(t *testing.T, s string) {
		// As --to: a plain address of the relay, or refused.
		if d, err := parseInboundDestination(s); err == nil && s != "" {
			if !d.IsValid() || d.Is4In6() || d.Zone() != "" || d.IsUnspecified() {
				t.Fatalf("--to %q: address %v", s, d)
			}
			if e := inboundVerdict(&in, s, d, d, 443, nil); e.Verdict == "" || e.Destination != d.String() {
				t.Fatalf("--to %q: %+v", s, e)
			}
		}
		a, port, err := parseInboundTarget(s)
		if err != nil {
			return
		}
		if !a.IsValid() || a.Is4In6() || a.Zone() != "" {
			t.Fatalf("%q: address %v", s, a)
		}
		// Every accepted source has an answer and a source network that
		// holds it.
		e := inboundVerdict(&in, s, a, netip.Addr{}, port, nil)
		src, err := netip.ParsePrefix(e.Source)
		if e.Verdict == "" || err != nil || !src.Contains(a) {
			t.Fatalf("%q: %+v", s, e)
		}
	})
}

// TestInboundVerdictDestination: a port protected on some addresses only
// is unprotected on the others (--to), and says where it is protected
// when no address is given.
func TestInboundVerdictDestination(t *testing.T) {
	in := ruleset.DefaultInbound()
	in.Endpoints = []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:9001"), netip.MustParseAddrPort("192.0.2.11:443"), netip.MustParseAddrPort("[::]:9001")}
	src := netip.MustParseAddr("203.0.113.7")
	for _, tc := range []struct {
		dst     string
		port    uint16
		verdict string
		reason  string
	}{
		{"192.0.2.10", 443, "unprotected", "192.0.2.10:443 is not an ORPort tor listens on"},
		{"192.0.2.11", 443, "limited", "else reset"},
		{"", 443, "limited", "(to 192.0.2.11 only: port 443 on other addresses is left to the host's own firewall)"},
		{"", 22, "unprotected", "port 22 is not an ORPort"},
		{"192.0.2.10", 9001, "limited", "else reset"},
		{"192.0.2.10", 0, "limited", "else reset"},
		{"", 0, "limited", "else reset"},
	} {
		var dst netip.Addr
		if tc.dst != "" {
			dst = netip.MustParseAddr(tc.dst)
		}
		e := inboundVerdict(&in, "x", src, dst, tc.port, nil)
		if e.Verdict != tc.verdict || !strings.Contains(e.Reason, tc.reason) || e.Destination != tc.dst {
			t.Errorf("to %q port %d: %+v, want %s with %q", tc.dst, tc.port, e, tc.verdict, tc.reason)
		}
	}
	// An IPv6 source to an address with no ORPort of its own, and no
	// port on every IPv6 address.
	only4 := in
	only4.Endpoints = in.Endpoints[:2]
	if e := inboundVerdict(&only4, "x", netip.MustParseAddr("2001:db8::7"), netip.MustParseAddr("2001:db8::10"), 0, nil); e.Verdict != "unprotected" {
		t.Errorf("IPv6 without an IPv6 ORPort: %+v", e)
	}
	for _, bad := range []string{"192.0.2.10:443", "0.0.0.0", "fe80::1%eth0", "x"} {
		if _, err := parseInboundDestination(bad); err == nil {
			t.Errorf("--to %q accepted", bad)
		}
	}
	if a, err := parseInboundDestination("[2001:db8::10]"); err != nil || a.String() != "2001:db8::10" {
		t.Errorf("--to [2001:db8::10]: %v %v", a, err)
	}
}
