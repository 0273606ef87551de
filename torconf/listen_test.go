package torconf

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var cmpAddrPort = cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })

func eps(ss ...string) []netip.AddrPort {
	out := []netip.AddrPort{}
	for _, s := range ss {
		out = append(out, netip.MustParseAddrPort(s))
	}
	return out
}

// portConfigs are the listener lines of a torrc text.
func portConfigs(t *testing.T, text string) []PortConfig {
	t.Helper()
	lines, err := Parse(nil, "torrc", text)
	if err != nil {
		t.Fatal(err)
	}
	o, err := OptionsFromLines(lines)
	if err != nil {
		t.Fatal(err)
	}
	return o.Ports
}

func TestListenEndpoints(t *testing.T) {
	for _, tc := range []struct {
		torrc    string
		dirPorts bool
		want     []netip.AddrPort
		skipped  int
	}{
		{"ORPort 443", false, eps("0.0.0.0:443", "[::]:443"), 0},
		{"ORPort 192.0.2.11:443", false, eps("192.0.2.11:443"), 0},
		{"ORPort [2001:db8::11]:443", false, eps("[2001:db8::11]:443"), 0},
		{"ORPort 0.0.0.0:443", false, eps("0.0.0.0:443"), 0},
		{"ORPort 443 IPv4Only", false, eps("0.0.0.0:443"), 0},
		{"ORPort 443 IPv6Only", false, eps("[::]:443"), 0},
		{"ORPort 192.0.2.11:443\nORPort 192.0.2.12:443", false, eps("192.0.2.11:443", "192.0.2.12:443"), 0},
		// An explicit address supersedes the port without one in its
		// family (remove_duplicate_orports), in either order.
		{"ORPort 443\nORPort [2001:db8::11]:443", false, eps("0.0.0.0:443", "[2001:db8::11]:443"), 0},
		{"ORPort 192.0.2.11:443\nORPort 443", false, eps("192.0.2.11:443", "[::]:443"), 0},
		{"ORPort 443\nORPort 192.0.2.11:9001", false, eps("0.0.0.0:443", "192.0.2.11:9001", "[::]:443"), 0},
		// Advertised, not listened on.
		{"ORPort 198.51.100.7:443 NoListen\nORPort 127.0.0.1:9090 NoAdvertise", false, eps("127.0.0.1:9090"), 0},
		{"ORPort 443 NoListen\nORPort 9090 NoAdvertise", false, eps("0.0.0.0:9090", "[::]:9090"), 0},
		{"ORPort auto\nORPort 9001", false, eps("0.0.0.0:9001", "[::]:9001"), 1},
		{"ORPort relay.example.org:443", false, eps(), 1},
		{"ORPort 443\nDirPort 80", false, eps("0.0.0.0:443", "[::]:443"), 0},
		// A DirPort without an address is tor's IPv4 only.
		{"ORPort 443\nDirPort 80", true, eps("0.0.0.0:80", "0.0.0.0:443", "[::]:443"), 0},
		{"ORPort 443\nDirPort [2001:db8::11]:80", true, eps("0.0.0.0:443", "[::]:443", "[2001:db8::11]:80"), 0},
		{"ORPort 443\nDirPort 80 IPv6Only", true, eps("0.0.0.0:443", "[::]:443"), 0},
		{"ORPort 443\nDirPort 192.0.2.11:80 NoListen", true, eps("0.0.0.0:443", "[::]:443"), 0},
		{"ORPort 443\nDirPort auto", true, eps("0.0.0.0:443", "[::]:443"), 1},
		{"SocksPort 9050\nControlPort 9051", true, eps(), 0},
	} {
		got, skipped := ListenEndpoints(portConfigs(t, tc.torrc), tc.dirPorts)
		if diff := cmp.Diff(tc.want, got, cmpAddrPort); diff != "" || len(skipped) != tc.skipped {
			t.Errorf("%q dir_ports %v: skipped %q, endpoints (-want +got):\n%s", tc.torrc, tc.dirPorts, skipped, diff)
		}
	}
}

func TestPortConfigResolved(t *testing.T) {
	addrs := func(ss ...string) []netip.Addr {
		var out []netip.Addr
		for _, s := range ss {
			out = append(out, netip.MustParseAddr(s))
		}
		return out
	}
	for _, tc := range []struct {
		line  string
		addrs []netip.Addr
		want  string // the endpoints; "error" for tor's refusal
	}{
		// tor_addr_port_lookup: the first IPv4 answer, else the first IPv6.
		{"ORPort relay.example.org:443", addrs("2001:db8::5", "192.0.2.5", "192.0.2.6"), "192.0.2.5:443"},
		{"ORPort relay.example.org:443", addrs("2001:db8::5", "2001:db8::6"), "[2001:db8::5]:443"},
		{"ORPort relay.example.org:443", addrs("::ffff:192.0.2.7"), "192.0.2.7:443"},
		{"ORPort relay.example.org:443 IPv6Only", addrs("2001:db8::5", "192.0.2.5"), "error"},
		{"ORPort relay.example.org:443 IPv4Only", addrs("2001:db8::5"), "error"},
		{"ORPort relay.example.org:443 NoListen", addrs("192.0.2.5"), ""},
		{"ORPort relay.example.org:443", nil, "error"},
		{"DirPort relay.example.org:80", addrs("2001:db8::5"), "[2001:db8::5]:80"},
	} {
		ports := portConfigs(t, tc.line)
		if len(ports) != 1 || ports[0].Host != "relay.example.org" || ports[0].Addr.IsValid() {
			t.Fatalf("%q: %+v", tc.line, ports)
		}
		p, err := ports[0].Resolved(tc.addrs)
		if err != nil {
			if tc.want != "error" {
				t.Errorf("%q %v: %v", tc.line, tc.addrs, err)
			}
			continue
		}
		got, _ := ListenEndpoints([]PortConfig{p}, true)
		var s []string
		for _, e := range got {
			s = append(s, e.String())
		}
		if strings.Join(s, " ") != tc.want {
			t.Errorf("%q %v: %v, want %s", tc.line, tc.addrs, got, tc.want)
		}
	}
}
