package torconf

import (
	"strings"
	"testing"
)

const testFP = "1A25C6358DB91342AA51720A5038B72742732498"

// The DirAuthority and FallbackDir lines tor 0.4.9 refuses (tor
// --verify-config fails) and accepts; the integration oracle checks the
// same kind of lines against a real tor.
func TestDirServerLinesAsTor(t *testing.T) {
	tests := []struct {
		fallback bool
		line     string
		refused  bool
	}{
		{false, "bogus", true},
		{false, "", true},
		{false, "auth1 orport=9001 v3ident=" + strings.Repeat("AB", 20) + " 203.0.113.5:7000 " + testFP, false},
		{false, "orport=9001 203.0.113.5:7000 " + testFP, false},                                // no nickname
		{false, "auth1 orport=99999 203.0.113.5:7000 " + testFP, false},                         // bad orport: a warning
		{false, "auth1 frobnicate 203.0.113.5:7000 " + testFP, false},                           // unknown flag: a warning
		{false, "auth1 orport=9001 203.0.113.5 " + testFP, true},                                // no DirPort
		{false, "auth1 orport=9001 [2001:db8::5]:7000 " + testFP, true},                         // IPv6 address
		{false, "auth1 orport=9001 203.0.113.5:7000 " + testFP[:38], true},                      // short digest
		{false, "auth1 orport=9001 203.0.113.5:7000 " + testFP[:20] + " " + testFP[20:], false}, // digest in pieces
		{false, "auth1 orport=9001 203.0.113.5:7000 " + strings.Repeat("zz", 20), true},         // not hex
		{false, "auth1 ipv6=2001:db8::5:9001 203.0.113.5:7000 " + testFP, true},                 // ipv6= without brackets
		{false, "auth1 ipv6=[2001:db8::5]:9001 203.0.113.5:7000 " + testFP, false},
		{false, "auth1 upload=203.0.113.5 203.0.113.5:7000 " + testFP, true}, // upload= needs a port
		{true, "203.0.113.9:80 orport=9001 id=" + testFP, false},
		{true, "[2001:db8::9]:80 orport=9001 id=" + testFP, false},
		{true, "203.0.113.9:80 orport=9001", true},  // no id
		{true, "203.0.113.9:80 id=" + testFP, true}, // no orport
		{true, "203.0.113.9:80 orport=0 id=" + testFP, true},
		{true, "203.0.113.9:80 203.0.113.10 orport=9001 id=" + testFP, true},     // two addresses
		{true, "203.0.113.9:80 orport=9001 id=" + strings.Repeat("0", 40), true}, // zero id
	}
	for _, tt := range tests {
		parse := ParseDirAuthority
		if tt.fallback {
			parse = ParseFallbackDir
		}
		_, _, err := parse(tt.line)
		if (err != nil) != tt.refused {
			t.Errorf("fallback=%v %q: err %v, want refused=%v", tt.fallback, tt.line, err, tt.refused)
		}
	}
}

func FuzzParseDirServerLines(f *testing.F) {
	f.Add("moria1 orport=9201 v3ident=F533C81CEF0BC0267857C99B2F471ADF249FA232 128.31.0.39:9231 " + testFP)
	f.Add("64.65.62.122 orport=443 id=" + testFP + " ipv6=[2001:db8::1]:443")
	f.Fuzz(func(t *testing.T, s string) {
		for _, parse := range []func(string) (DirServer, []string, error){ParseDirAuthority, ParseFallbackDir} {
			ds, _, err := parse(s)
			if err == nil && (!ds.Addr.IsValid() || (ds.IPv6.IsValid() && !ds.IPv6.Addr().Is6())) {
				t.Fatalf("%q: accepted with impossible addresses %+v", s, ds)
			}
		}
	})
}
