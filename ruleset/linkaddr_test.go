package ruleset

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/relayfw/relayfw/exitpolicy"
)

func TestCheckRelayLink(t *testing.T) {
	zoned := netip.AddrPortFrom(netip.MustParseAddr("2001:db8::30").WithZone("x},tcp:1"), 443)
	tests := []struct {
		ap      netip.AddrPort
		want    error // without private
		private error // with private (TestingTorNetwork)
	}{
		{netip.MustParseAddrPort("203.0.113.11:9001"), nil, nil},
		{netip.MustParseAddrPort("198.18.0.1:443"), nil, nil},
		{netip.MustParseAddrPort("[2001:db8:1::11]:9001"), nil, nil},
		{netip.MustParseAddrPort("203.0.113.11:0"), ErrLinkPort, ErrLinkPort},
		{netip.MustParseAddrPort("203.0.113.11:65535"), nil, nil},
		{zoned, ErrLinkZone, ErrLinkZone},
		{netip.MustParseAddrPort("[fe80::1%eth0]:443"), ErrLinkZone, ErrLinkZone},
		{netip.AddrPort{}, ErrLinkInvalid, ErrLinkInvalid},
		// tor_addr_is_internal
		{netip.MustParseAddrPort("10.1.2.3:443"), ErrLinkInternal, nil},
		{netip.MustParseAddrPort("100.64.0.1:443"), ErrLinkInternal, nil},
		{netip.MustParseAddrPort("100.127.255.255:443"), ErrLinkInternal, nil},
		{netip.MustParseAddrPort("100.128.0.1:443"), nil, nil},
		{netip.MustParseAddrPort("127.0.0.1:9001"), ErrLinkInternal, nil},
		{netip.MustParseAddrPort("169.254.169.254:80"), ErrLinkInternal, nil},
		{netip.MustParseAddrPort("172.16.0.1:443"), ErrLinkInternal, nil},
		{netip.MustParseAddrPort("172.31.255.255:443"), ErrLinkInternal, nil},
		{netip.MustParseAddrPort("172.32.0.1:443"), nil, nil},
		{netip.MustParseAddrPort("192.168.1.1:443"), ErrLinkInternal, nil},
		{netip.MustParseAddrPort("[::1]:9001"), ErrLinkInternal, nil},
		{netip.MustParseAddrPort("[fc00::5]:443"), ErrLinkInternal, nil},
		{netip.MustParseAddrPort("[fd12::5]:443"), ErrLinkInternal, nil},
		{netip.MustParseAddrPort("[fe80::1]:443"), ErrLinkInternal, nil},
		{netip.MustParseAddrPort("[fec0::1]:443"), ErrLinkInternal, nil},
		// never a relay, TestingTorNetwork or not
		{netip.MustParseAddrPort("0.0.0.0:443"), ErrLinkSpecial, ErrLinkSpecial},
		{netip.MustParseAddrPort("0.1.2.3:443"), ErrLinkSpecial, ErrLinkSpecial},
		{netip.MustParseAddrPort("[::]:443"), ErrLinkSpecial, ErrLinkSpecial},
		{netip.MustParseAddrPort("224.0.0.1:443"), ErrLinkSpecial, ErrLinkSpecial},
		{netip.MustParseAddrPort("239.255.255.255:443"), ErrLinkSpecial, ErrLinkSpecial},
		{netip.MustParseAddrPort("240.0.0.1:443"), ErrLinkSpecial, ErrLinkSpecial},
		{netip.MustParseAddrPort("255.255.255.255:443"), ErrLinkSpecial, ErrLinkSpecial},
		{netip.MustParseAddrPort("[ff02::1]:443"), ErrLinkSpecial, ErrLinkSpecial},
		{netip.MustParseAddrPort("[::ffff:203.0.113.11]:443"), ErrLinkIPv4InIPv6, ErrLinkIPv4InIPv6},
		{netip.MustParseAddrPort("[::ffff:169.254.169.254]:80"), ErrLinkIPv4InIPv6, ErrLinkIPv4InIPv6},
		{netip.MustParseAddrPort("[::203.0.113.11]:443"), ErrLinkIPv4InIPv6, ErrLinkIPv4InIPv6},
		{netip.MustParseAddrPort("[64:ff9b::a9fe:a9fe]:80"), ErrLinkIPv4InIPv6, ErrLinkIPv4InIPv6},
		{netip.MustParseAddrPort("[64:ff9b:1::1]:80"), ErrLinkIPv4InIPv6, ErrLinkIPv4InIPv6},
		{netip.MustParseAddrPort("[64:ff9b:2::1]:80"), nil, nil},
		{netip.MustParseAddrPort("[2002:a9fe:a9fe::1]:80"), ErrLinkIPv4InIPv6, ErrLinkIPv4InIPv6},
		{netip.MustParseAddrPort("[2003::1]:80"), nil, nil},
	}
	for _, tt := range tests {
		if err := CheckRelayLink(tt.ap, false); !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
			t.Errorf("CheckRelayLink(%v, false) = %v, want %v", tt.ap, err, tt.want)
		}
		if err := CheckRelayLink(tt.ap, true); !errors.Is(err, tt.private) || (err == nil) != (tt.private == nil) {
			t.Errorf("CheckRelayLink(%v, true) = %v, want %v", tt.ap, err, tt.private)
		}
	}
}

// TestCompileDropsRefusedLinks: Compile leaves out the relay links the
// rule refuses (its rulesets always pass Validate), and Validate refuses a
// ruleset that holds one.
func TestCompileDropsRefusedLinks(t *testing.T) {
	links := []netip.AddrPort{netip.MustParseAddrPort("203.0.113.11:9001"), netip.MustParseAddrPort("169.254.169.254:80"),
		netip.MustParseAddrPort("[::ffff:203.0.113.12]:443"), netip.MustParseAddrPort("[2001:db8::30]:443"),
		netip.AddrPortFrom(netip.MustParseAddr("2001:db8::31").WithZone("x"), 443)}
	count := func(rs Ruleset) int {
		n := 0
		for _, s := range rs.Sets {
			n += len(s.Elements)
		}
		return n
	}
	rs := Compile(exitpolicy.ExitPolicy{}, Host{RelayLinks: links})
	if err := rs.Validate(); err != nil {
		t.Fatal(err)
	}
	if n := count(rs); n != 2 {
		t.Errorf("%d relay links, want 2 (203.0.113.11:9001, [2001:db8::30]:443)", n)
	}
	private := Compile(exitpolicy.ExitPolicy{}, Host{RelayLinks: links, PrivateRelayLinks: true})
	if err := private.Validate(); err != nil {
		t.Fatal(err)
	}
	if n := count(private); n != 3 {
		t.Errorf("TestingTorNetwork: %d relay links, want 3 (169.254.169.254:80 too)", n)
	}
	private.Sets[0].Private = false // as a ruleset from JSON without the flag
	if err := private.Validate(); err == nil || !errors.Is(err, ErrLinkInternal) {
		t.Errorf("Validate of a set with 169.254.169.254:80 and no private flag: %v", err)
	}
}
