package rules

import (
	"net/netip"
	"slices"
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

// AcceptRegions compiles the policy's entries of one family (v6 false:
// IPv4) into disjoint regions whose union is exactly the set of
// destinations the policy accepts (first match wins, tor's implicit accept
// when nothing matches). Regions come sorted by address, then port.
//
// It sweeps the address space: every entry's prefix starts and ends at a
// boundary, so between two consecutive boundaries the same entries apply,
// and first-match over those entries gives the accepted ports there.
// Neighbouring address intervals with the same ports are merged.
func (p ExitPolicy) AcceptRegions(v6 bool) []Region {
	var spans []span
	for i, e := range p.Entries {
		if e.IPv6() != v6 {
			continue
		}
		n := e.Network()
		spans = append(spans, span{lo: n.Addr(), hi: lastAddr(n), idx: i})
	}
	familyMin, familyMax := netip.IPv4Unspecified(), netip.AddrFrom4([4]byte{255, 255, 255, 255})
	if v6 {
		familyMin = netip.IPv6Unspecified()
		familyMax = netip.AddrFrom16([16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	}
	bounds := []netip.Addr{familyMin}
	for _, s := range spans {
		bounds = append(bounds, s.lo)
		if s.hi != familyMax {
			bounds = append(bounds, s.hi.Next())
		}
	}
	slices.SortFunc(bounds, netip.Addr.Compare)
	bounds = slices.Compact(bounds)
	slices.SortStableFunc(spans, func(a, b span) int { return a.lo.Compare(b.lo) })

	var regions []Region
	var scratch portScratch
	var active []span // sorted by policy index
	var prevPorts []PortRange
	var prevStart netip.Addr
	next := 0
	flush := func(end netip.Addr) {
		for _, pr := range prevPorts {
			regions = append(regions, Region{AddrFirst: prevStart, AddrLast: end, Ports: pr})
		}
	}
	for k, b := range bounds {
		// Drop spans that ended before b, add spans that start at b.
		kept := active[:0]
		for _, s := range active {
			if s.hi.Compare(b) >= 0 {
				kept = append(kept, s)
			}
		}
		active = kept
		for next < len(spans) && spans[next].lo == b {
			s := spans[next]
			at, _ := slices.BinarySearchFunc(active, s.idx, func(x span, idx int) int { return x.idx - idx })
			active = slices.Insert(active, at, s)
			next++
		}
		ports := p.acceptedPorts(active, &scratch)
		if k > 0 && slices.Equal(ports, prevPorts) {
			continue
		}
		if k > 0 {
			flush(b.Prev())
		}
		prevStart, prevPorts = b, ports
	}
	flush(familyMax)
	return regions
}

// acceptedPorts runs first-match over the entries (in policy order) that
// cover one address interval and returns the accepted ports, merged. The
// scratch buffers are reused across intervals: a large policy has tens of
// thousands of them.
func (p ExitPolicy) acceptedPorts(active []span, sc *portScratch) []PortRange {
	undecided := append(sc.undecided[:0], PortRange{1, 65535})
	accepted := sc.accepted[:0]
	for _, s := range active {
		if len(undecided) == 0 {
			break
		}
		e := p.Entries[s.idx]
		rest := sc.rest[:0]
		for _, u := range undecided {
			lo, hi := max(u.First, e.PortMin), min(u.Last, e.PortMax)
			if lo > hi {
				rest = append(rest, u)
				continue
			}
			if e.Action == Accept {
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

// span is one policy entry's address range.
type span struct {
	lo, hi netip.Addr
	idx    int // position in ExitPolicy.Entries
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
