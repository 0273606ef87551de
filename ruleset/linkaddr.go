package ruleset

import (
	"errors"
	"net/netip"

	"github.com/relayfw/relayfw/exitpolicy"
)

// Why CheckRelayLink refuses a link. The consensus parser counts what it
// leaves out by these errors' texts.
var (
	ErrLinkZone       = errors.New("an address with a zone")
	ErrLinkPort       = errors.New("port 0")
	ErrLinkInternal   = errors.New("an internal address (TestingTorNetwork only)")
	ErrLinkSpecial    = errors.New("an unspecified, multicast, broadcast or reserved address")
	ErrLinkIPv4InIPv6 = errors.New("an IPv6 form of an IPv4 address")
	ErrLinkInvalid    = errors.New("not an address")
)

// linkToIPv4 are the IPv6 prefixes whose addresses reach IPv4 hosts: a
// relay link there would be a link to an IPv4 address that the IPv4
// rules never saw.
var linkToIPv4 = []netip.Prefix{
	netip.MustParsePrefix("::ffff:0:0/96"),  // IPv4-mapped
	netip.MustParsePrefix("::/96"),          // IPv4-compatible (deprecated; sit tunnels)
	netip.MustParsePrefix("64:ff9b::/96"),   // NAT64, well-known prefix
	netip.MustParsePrefix("64:ff9b:1::/48"), // NAT64, local-use prefix
	netip.MustParsePrefix("2002::/16"),      // 6to4
}

// CheckRelayLink is the one rule for the (address, TCP port) pairs that
// become relay links, whoever names them (a consensus tor cached, a
// DirAuthority or FallbackDir line, a ruleset read from JSON): nil when a
// relay link to ap may be installed. It refuses an address with a zone,
// port 0, the unspecified, multicast, broadcast and reserved (240/4)
// addresses and 0/8, the IPv6 forms that reach IPv4 (IPv4-mapped and
// -compatible, NAT64's 64:ff9b::/96 and 64:ff9b:1::/48, 6to4's
// 2002::/16), and tor's other internal addresses (tor_addr_is_internal:
// 10/8, 100.64/10, 127/8, 169.254/16, 172.16/12, 192.168/16, ::1,
// fc00::/7, fe80::/10, fec0::/10) unless private is set: a
// TestingTorNetwork instance's relays live there.
func CheckRelayLink(ap netip.AddrPort, private bool) error {
	a := ap.Addr()
	switch {
	case !a.IsValid():
		return ErrLinkInvalid
	case a.Zone() != "":
		return ErrLinkZone
	case ap.Port() == 0:
		return ErrLinkPort
	case a.Is4In6():
		return ErrLinkIPv4InIPv6
	case a.IsUnspecified() || a.IsMulticast():
		return ErrLinkSpecial
	case a.Is4() && (a.As4()[0] >= 240 || a.As4()[0] == 0):
		return ErrLinkSpecial // 240/4 holds 255.255.255.255; 0/8 is no host's
	case exitpolicy.IsInternal(a):
		if !private {
			return ErrLinkInternal
		}
		return nil // ::1 is in ::/96 too
	}
	for _, p := range linkToIPv4 {
		if p.Contains(a) {
			return ErrLinkIPv4InIPv6
		}
	}
	return nil
}
