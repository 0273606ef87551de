// Package endpoint normalizes lists of listening endpoints (address and
// port), for the torrc reader and the ruleset alike.
package endpoint

import (
	"net/netip"
	"slices"
)

// Normalize sorts endpoints, unmaps IPv4-mapped addresses and drops
// duplicates and address-bound endpoints that a port on every address of
// the family covers.
func Normalize(eps []netip.AddrPort) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(eps))
	for _, e := range eps {
		out = append(out, netip.AddrPortFrom(e.Addr().Unmap(), e.Port()))
	}
	slices.SortFunc(out, netip.AddrPort.Compare)
	out = slices.Compact(out)
	return slices.DeleteFunc(out, func(e netip.AddrPort) bool {
		wild := Wildcard(e.Addr())
		return e.Addr() != wild && slices.Contains(out, netip.AddrPortFrom(wild, e.Port()))
	})
}

// Wildcard is the unspecified address of a's family (an IPv4-mapped
// address is IPv4): the address that stands for every address of it.
func Wildcard(a netip.Addr) netip.Addr {
	if a.Unmap().Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}
