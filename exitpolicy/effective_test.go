package exitpolicy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/relayfw/relayfw/torconf"
)

// TestEffectivePolicyTorAborts: the torrcs on which tor 0.4.9.11 aborts at
// start (tor_assert in policies_log_first_redundant_entry, exit 134) are
// refused; their neighbours, which tor starts with, are not. Whether it
// aborts depends on the host's interface addresses. The oracle's fixed
// cases and TestTorAbortsByInterface (integration) hold them against a
// real tor in a namespace with those addresses.
func TestEffectivePolicyTorAborts(t *testing.T) {
	public := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("198.51.100.7")}
	public6 := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("2001:db8::7")}
	loOnly := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}
	base := "ORPort 9001\nExitRelay 1\nIPv6Exit 1\nExitPolicyRejectPrivate 0\n"
	for _, tc := range []struct {
		name   string
		torrc  string
		ifaces []netip.Addr
		aborts bool
	}{
		{"no ExitPolicy", base, loOnly, true},
		{"no ExitPolicy, public interface", base, public, true},
		{"ExitRelay auto", "ORPort 9001\nIPv6Exit 1\nExitPolicyRejectPrivate 0\n", loOnly, true},
		{"not a relay", "IPv6Exit 1\nExitRelay 1\nExitPolicyRejectPrivate 0\n", loOnly, true},
		// The outbound and port addresses are not set yet when tor
		// validates: they do not avoid the abort (seed 1796179815331257748,
		// case 046 of the oracle).
		{"OutboundBindAddress", base + "ExitPolicyRejectLocalInterfaces 1\nOutboundBindAddress [2001:db8::9]\nReducedExitPolicy 1\n", loOnly, true},
		{"ORPort address", "ORPort 198.51.100.7:9001\nExitRelay 1\nIPv6Exit 1\nExitPolicyRejectPrivate 0\nExitPolicyRejectLocalInterfaces 1\n", loOnly, true},
		{"Address", base + "Address 198.51.100.7\nExitPolicyRejectLocalInterfaces 1\n", loOnly, true},
		{"cleared ExitPolicy", base + "ExitPolicy accept *:80\n/ExitPolicy\n", loOnly, true},
		{"RejectLocalInterfaces, public IPv4 interface", base + "ExitPolicyRejectLocalInterfaces 1\n", public, false},
		{"RejectLocalInterfaces, public IPv6 interface", base + "ExitPolicyRejectLocalInterfaces 1\n", public6, false},
		{"RejectLocalInterfaces, loopback only", base + "ExitPolicyRejectLocalInterfaces 1\n", loOnly, true},
		{"an ExitPolicy line", base + "ExitPolicy accept *:80\n", loOnly, false},
		{"an ExitPolicy line of ignored entries", base + "ExitPolicy accept6 1.2.3.4:80\n", loOnly, false},
		{"IPv6Exit 0", "ORPort 9001\nExitRelay 1\nExitPolicyRejectPrivate 0\n", loOnly, false},
		{"ExitPolicyRejectPrivate 1", "ORPort 9001\nExitRelay 1\nIPv6Exit 1\n", loOnly, false},
		{"ExitRelay 0", "ORPort 9001\nExitRelay 0\nIPv6Exit 1\nExitPolicyRejectPrivate 0\n", loOnly, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lines, err := torconf.Parse(nil, "torrc", tc.torrc)
			if err != nil {
				t.Fatal(err)
			}
			o, err := torconf.OptionsFromLines(lines)
			if err != nil {
				t.Fatal(err)
			}
			_, err = FromOptions(o, HostFacts{InterfaceAddrs: tc.ifaces})
			var se *torconf.SyntaxError
			switch {
			case tc.aborts && (!errors.As(err, &se) || !strings.Contains(err.Error(), "aborts")):
				t.Fatalf("want tor's abort refused, got %v", err)
			case !tc.aborts && err != nil:
				t.Fatalf("tor starts with this torrc; got %v", err)
			}
		})
	}
}
