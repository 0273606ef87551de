package ruleset

import (
	"iter"
	"net/netip"
	"slices"

	"github.com/relayfw/relayfw/exitpolicy"
)

// PortRange is an inclusive range of TCP or UDP ports.
type PortRange struct {
	First uint16 `json:"first"`
	Last  uint16 `json:"last"`
}

// Region is a rectangle of destinations: every address from AddrFirst to
// AddrLast (inclusive) on every port of Ports.
type Region struct {
	AddrFirst netip.Addr `json:"addr_first"`
	AddrLast  netip.Addr `json:"addr_last"`
	Ports     PortRange  `json:"ports"`
}

// Contains reports whether addr:port lies in the region.
func (r Region) Contains(addr netip.Addr, port uint16) bool {
	return addr.Is4() == r.AddrFirst.Is4() &&
		addr.Compare(r.AddrFirst) >= 0 && addr.Compare(r.AddrLast) <= 0 &&
		port >= r.Ports.First && port <= r.Ports.Last
}

// acceptedPorts runs first-match over entries (indexes into p.Entries, in
// policy order), all of whose prefixes contain the addresses in question,
// and returns the accepted ports, merged. The scratch buffers are reused:
// a large policy has tens of thousands of prefixes.
func acceptedPorts(p exitpolicy.ExitPolicy, entries iter.Seq[int], sc *portScratch) []PortRange {
	undecided := append(sc.undecided[:0], PortRange{1, 65535})
	accepted := sc.accepted[:0]
	for idx := range entries {
		e := p.Entries[idx]
		rest := sc.rest[:0]
		for _, u := range undecided {
			lo, hi := max(u.First, e.PortMin), min(u.Last, e.PortMax)
			if lo > hi {
				rest = append(rest, u)
				continue
			}
			if e.Action == exitpolicy.Accept {
				accepted = append(accepted, PortRange{lo, hi})
			}
			if u.First < lo {
				rest = append(rest, PortRange{u.First, lo - 1})
			}
			if hi < u.Last {
				rest = append(rest, PortRange{hi + 1, u.Last})
			}
		}
		sc.rest, undecided, sc.undecided = undecided, rest, rest
		if len(undecided) == 0 {
			break
		}
	}
	// Nothing matched: tor accepts.
	accepted = append(accepted, undecided...)
	sc.accepted = accepted
	return slices.Clone(mergePorts(accepted))
}

// portScratch holds acceptedPorts' buffers.
type portScratch struct{ undecided, rest, accepted []PortRange }

func mergePorts(ranges []PortRange) []PortRange {
	if len(ranges) == 0 {
		return nil
	}
	slices.SortFunc(ranges, func(a, b PortRange) int { return int(a.First) - int(b.First) })
	out := ranges[:1]
	for _, r := range ranges[1:] {
		last := &out[len(out)-1]
		if uint32(r.First) <= uint32(last.Last)+1 {
			last.Last = max(last.Last, r.Last)
			continue
		}
		out = append(out, r)
	}
	return out
}

// lastAddr is the highest address of a prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr().As16()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	for i := bits; i < 128; i++ {
		a[i/8] |= 1 << (7 - i%8)
	}
	if p.Addr().Is4() {
		return netip.AddrFrom16(a).Unmap()
	}
	return netip.AddrFrom16(a)
}
