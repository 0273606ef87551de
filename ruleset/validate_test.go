package ruleset

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/relayfw/relayfw/exitpolicy"
)

func TestValidate(t *testing.T) {
	entries, _, err := exitpolicy.Parse("accept *:80,reject *:*")
	if err != nil {
		t.Fatal(err)
	}
	good := func() Ruleset {
		h := DefaultHost()
		h.RelayLinks = []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:9001")}
		h.LogRejectsPerMinute = 5
		return Compile(exitpolicy.ExitPolicy{Entries: entries}, h)
	}
	if err := good().Validate(); err != nil {
		t.Fatalf("a compiled ruleset: %v", err)
	}
	tests := []struct {
		name   string
		break_ func(*Ruleset)
		want   string
	}{
		{"unknown set", func(rs *Ruleset) { rs.Sets = nil }, `set "relays4" is not in the ruleset`},
		{"range in a set", func(rs *Ruleset) { rs.Sets[0].Elements[0].Ports.Last = 9002 }, "not one address and one port"},
		{"v6 element in v4 set", func(rs *Ruleset) {
			a := netip.MustParseAddr("2001:db8::1")
			rs.Sets[0].Elements[0].AddrFirst, rs.Sets[0].Elements[0].AddrLast = a, a
		}, "wrong family"},
		{"exit map gone", func(rs *Ruleset) { rs.ExitMaps = rs.ExitMaps[1:] }, `exit map "exit4" is not in the ruleset`},
		{"class without ports", func(rs *Ruleset) { rs.ExitMaps[0].Classes[0].Ports = nil }, "accepts no port"},
		{"bad port range", func(rs *Ruleset) {
			rs.Outbound = append(rs.Outbound, Rule{Name: "x", Proto: "tcp", DstPorts: []PortRange{{90, 80}}, Action: Accept})
		}, "not a port range"},
		{"ports without proto", func(rs *Ruleset) {
			rs.Outbound = append(rs.Outbound, Rule{Name: "x", DstPorts: []PortRange{{80, 80}}, Action: Accept})
		}, "ports need proto"},
		{"unknown action", func(rs *Ruleset) { rs.Outbound[0].Action = "drop" }, "unknown action"},
		{"reset without tcp", func(rs *Ruleset) {
			rs.Outbound = append(rs.Outbound, Rule{Name: "x", Proto: "udp", Action: Reject, RejectWith: RejectTCPReset})
		}, "TCP reset needs proto tcp"},
		{"bad name", func(rs *Ruleset) { rs.Outbound[0].Name = "a b" }, "want letters"},
		{"relay links for every user", func(rs *Ruleset) {
			for i := range rs.Outbound {
				if rs.Outbound[i].Class == ClassRelayLink {
					rs.Outbound[i].SocketUID = nil
				}
			}
		}, "relay links are tor's alone"},
		{"relay link without a set", func(rs *Ruleset) {
			uid := uint32(0)
			rs.Outbound = append(rs.Outbound, Rule{Name: "x", Class: ClassRelayLink, Proto: "tcp", SocketUID: &uid, Action: Accept})
		}, "relay links are tor's alone"},
		{"address of the other family", func(rs *Ruleset) {
			rs.Outbound = append(rs.Outbound, Rule{Name: "x", Family: IPv4, DstAddrs: []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}, Action: Accept})
		}, "does not fit family"},
		// The limits both backends share.
		{"output interface other than lo", func(rs *Ruleset) { rs.Outbound[0].OutIface = "eth0" }, "only lo is supported"},
		{"source network", func(rs *Ruleset) {
			rs.Outbound = append(rs.Outbound, Rule{Name: "x", Family: IPv4, SrcAddrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, Action: Accept})
		}, "only single addresses are supported"},
		{"two source ports", func(rs *Ruleset) {
			rs.Outbound = append(rs.Outbound, Rule{Name: "x", Proto: "udp", SrcPorts: []PortRange{{67, 67}, {68, 68}}, Action: Accept})
		}, "only one single port"},
		{"source port range", func(rs *Ruleset) {
			rs.Outbound = append(rs.Outbound, Rule{Name: "x", Proto: "udp", SrcPorts: []PortRange{{67, 68}}, Action: Accept})
		}, "only one single port"},
	}
	for _, tt := range tests {
		rs := good()
		tt.break_(&rs)
		if err := rs.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
}
