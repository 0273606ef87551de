package rules

import (
	"strings"
	"testing"
)

// descriptorToTorrc turns one line of tor's printed policy back into torrc
// syntax: in descriptor format "accept *:" is the IPv4 wildcard.
func descriptorToTorrc(line string) string {
	if strings.HasPrefix(line, "accept6 ") || strings.HasPrefix(line, "reject6 ") {
		return line
	}
	return strings.Replace(line, " *:", " *4:", 1)
}

func FuzzParseExitPolicy(f *testing.F) {
	for _, s := range []string{
		"accept *:21-23,accept *:53,accept *:80,reject *:*",
		"reject private:*,accept6 [2001:db8::]/32:443",
		"accept 203.0.113.0/255.255.255.0:80", "accept [::ffff:1.2.3.4]/24:80",
		"accept [1.2.3.4]x:81", "accept 1.2.3.4/:82", "opt accept *:+80", "accept *:80-90x",
		"accept *:0-80", "ACCEPT *:80", "reject 1.2.3.4/33:80", "accept",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		entries, _, err := ParseExitPolicy(value)
		if err != nil {
			return
		}
		for _, e := range entries {
			if e.PortMin < 1 || e.PortMin > e.PortMax || e.Bits < 0 || e.Bits > e.Addr.BitLen() {
				t.Fatalf("%q: impossible entry %+v", value, e)
			}
			// What we print, tor (and we) must read back as the same entry.
			back, _, err := ParseExitPolicy(descriptorToTorrc(e.String()))
			if err != nil || len(back) != 1 {
				t.Fatalf("%q: entry %q does not parse back: %v %v", value, e.String(), back, err)
			}
			if back[0].Network() != e.Network() || back[0].PortMin != e.PortMin || back[0].PortMax != e.PortMax || back[0].Action != e.Action {
				t.Fatalf("%q: %q parses back as %q", value, e.String(), back[0].String())
			}
		}
	})
}

func FuzzParseTorrc(f *testing.F) {
	for _, s := range []string{
		"ExitRelay 1\nExitPolicy accept *:80,\\\n  reject *:* # web only\n",
		"exitpolicy \"accept *:80\"\n/ExitPolicy\n+ExitPolicy reject *:*\n",
		"ORPort [2001:db8::1]:443\nAddress 203.0.113.1\nOutboundBindAddressExit 198.51.100.2\n",
		"ORPort 443\nORPort 192.0.2.1:443 NoAdvertise\nORPort [::ffff:192.0.2.2]:9001 IPv4Only\nDirPort 80 NoListen\n",
		"# comment\n\n  IPv6Exit 1\r\nExitRelay auto\n",
		"ExitPolicy \"bad\\q\"\n", "ExitRelay maybe\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		lines, err := ParseTorrc(nil, "torrc", text)
		if err != nil {
			return
		}
		nLines := strings.Count(text, "\n") + 1
		for _, l := range lines {
			if l.Line < 1 || l.Line > nLines {
				t.Fatalf("line %d out of range 1..%d", l.Line, nLines)
			}
		}
		opts, err := OptionsFromLines(lines)
		if err != nil {
			return
		}
		// Whatever the listener lines, the endpoints to protect are valid.
		if eps, _ := ListenEndpoints(opts.Ports, true); len(eps) > 0 {
			in := DefaultInbound()
			in.Endpoints = eps
			if err := in.Validate(); err != nil {
				t.Fatalf("endpoints %v: %v", eps, err)
			}
		}
		eff, err := EffectivePolicy(opts, HostFacts{})
		if err != nil {
			return
		}
		if len(eff.Policy.Lines()) == 0 {
			t.Fatal("empty policy listing")
		}
	})
}

func FuzzTorInetPton6(f *testing.F) {
	for _, s := range []string{"::", "::1", "2001:db8::1", "::ffff:1.2.3.4", "1:2:3:4:5:6:7:8", "1::2::3", "0x1::", "fe80::1:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, ok := torInetPton6(s)
		if !ok {
			return
		}
		printed := torInetNtop6(a.As16())
		b, ok := torInetPton6(printed)
		if !ok || b != a {
			t.Fatalf("%q -> %s does not parse back (%v %v)", s, printed, b, ok)
		}
	})
}
