package main

import (
	"net/netip"
	"testing"

	"github.com/relayfw/relayfw/rules"
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
	in := rules.DefaultInbound()
	in.Ports = []uint16{9001}
	f.Fuzz(func(t *testing.T, s string) {
		a, port, err := parseInboundTarget(s)
		if err != nil {
			return
		}
		if !a.IsValid() || a.Is4In6() || a.Zone() != "" {
			t.Fatalf("%q: address %v", s, a)
		}
		// Every accepted source has an answer and a source network that
		// holds it.
		e := inboundVerdict(&in, s, a, port, nil)
		src, err := netip.ParsePrefix(e.Source)
		if e.Verdict == "" || err != nil || !src.Contains(a) {
			t.Fatalf("%q: %+v", s, e)
		}
	})
}
