package exitpolicy

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
		entries, _, err := Parse(value)
		if err != nil {
			return
		}
		for _, e := range entries {
			if e.PortMin < 1 || e.PortMin > e.PortMax || e.Bits < 0 || e.Bits > e.Addr.BitLen() {
				t.Fatalf("%q: impossible entry %+v", value, e)
			}
			// What we print, tor (and we) must read back as the same entry.
			back, _, err := Parse(descriptorToTorrc(e.String()))
			if err != nil || len(back) != 1 {
				t.Fatalf("%q: entry %q does not parse back: %v %v", value, e.String(), back, err)
			}
			if back[0].Network() != e.Network() || back[0].PortMin != e.PortMin || back[0].PortMax != e.PortMax || back[0].Action != e.Action {
				t.Fatalf("%q: %q parses back as %q", value, e.String(), back[0].String())
			}
		}
	})
}
