package ruleset

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Changes describes, in an operator's terms, what installing next over
// prev changes: per exit map (a family, or an instance's family) the TCP
// ports that become accepted or rejected and for which addresses; host
// allowances and other rules added, removed or changed; relay links
// added and removed. One line each, "+" for what opens, "-" for what
// closes, "~" for a rule that changes; none when the two are the same.
func Changes(prev, next Ruleset) []string {
	var out []string
	for _, name := range unionNames(mapNames(prev), mapNames(next)) {
		pm, _ := prev.ExitMap(name)
		nm, _ := next.ExitMap(name)
		out = append(out, exitMapChanges(name, pm, nm)...)
	}
	prevRules, nextRules := rulesByName(prev), rulesByName(next)
	for _, name := range unionNames(ruleNames(prev), ruleNames(next)) {
		p, inPrev := prevRules[name]
		n, inNext := nextRules[name]
		if n.ExitMap != "" || p.ExitMap != "" {
			if inPrev != inNext || !sameUID(p.SocketUID, n.SocketUID) || !slices.Equal(p.SrcAddrs, n.SrcAddrs) {
				out = append(out, ruleChange(name, p, n, inPrev, inNext))
			}
			continue // the exit map lines say the rest
		}
		if !inPrev || !inNext || !sameRule(p, n) {
			out = append(out, ruleChange(name, p, n, inPrev, inNext))
		}
	}
	for _, name := range unionNames(setNames(prev), setNames(next)) {
		ps, _ := prev.Set(name)
		ns, _ := next.Set(name)
		added, removed := DiffRegions(ns.Elements, ps.Elements)
		if added > 0 || removed > 0 {
			out = append(out, fmt.Sprintf("relay links %s: +%d -%d", name, added, removed))
		}
	}
	return append(out, inboundChanges(prev.Inbound, next.Inbound)...)
}

// inboundChanges says whether the ORPort protection comes, goes or
// changes its limits, and how many trusted networks come and go.
func inboundChanges(prev, next *Inbound) []string {
	switch {
	case prev == nil && next == nil:
		return nil
	case prev == nil:
		return []string{"+ inbound protection: " + next.Summary()}
	case next == nil:
		return []string{"- inbound protection removed: " + prev.Summary()}
	}
	var out []string
	p, n := *prev, *next
	p.Trusted, n.Trusted = nil, nil
	if !sameJSON(p, n) {
		out = append(out, "~ inbound protection: "+next.Summary())
	}
	added, removed := countDiff(next.Trusted, prev.Trusted, func(p netip.Prefix) netip.Prefix { return p })
	if added > 0 || removed > 0 {
		out = append(out, fmt.Sprintf("inbound trusted: +%d -%d", added, removed))
	}
	return out
}

func sameJSON(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func ruleChange(name string, p, n Rule, inPrev, inNext bool) string {
	kind := "rule"
	if cmp.Or(n.Class, p.Class) == ClassHostAllowance {
		kind = "allowance"
	}
	switch {
	case !inPrev:
		return fmt.Sprintf("+ %s %s: %s", kind, name, n.Comment)
	case !inNext:
		return fmt.Sprintf("- %s %s: %s", kind, name, p.Comment)
	}
	return fmt.Sprintf("~ %s %s: %s", kind, name, n.Comment)
}

func sameUID(a, b *uint32) bool {
	return (a == nil) == (b == nil) && (a == nil || *a == *b)
}

func sameRule(a, b Rule) bool { return sameJSON(a, b) }

// maxRanges bounds the address ranges one line lists.
const maxRanges = 4

// exitMapChanges compares two exit maps address range by address range:
// one line per port change, with the address ranges it applies to.
func exitMapChanges(name string, prev, next ExitMap) []string {
	family := next.Family
	if family == "" {
		family = prev.Family
	}
	var out []string
	for _, g := range groupChanges(classChanges(prev, next, family)) {
		where := strings.Join(g.ranges, ", ")
		if len(g.ranges) > maxRanges {
			where = fmt.Sprintf("%s and %d more address ranges", strings.Join(g.ranges[:maxRanges], ", "), len(g.ranges)-maxRanges)
		}
		out = append(out, fmt.Sprintf("%s %s: TCP %s to %s", g.sign, name, g.ports, where))
	}
	return out
}

// portDelta is what changes between a class of one map and a class of
// the other: the ports opened and closed, as text ("" for none).
type portDelta struct{ opened, closed string }

// portDeltas computes each pair of classes' delta once: a block list has
// tens of thousands of address segments but few classes.
type portDeltas struct {
	prev, next ExitMap
	done       map[[2]int]portDelta
}

func (d *portDeltas) of(p, n int) portDelta {
	if got, ok := d.done[[2]int{p, n}]; ok {
		return got
	}
	pp, np := classPorts(d.prev, p), classPorts(d.next, n)
	var got portDelta
	if opened := np.minus(pp); !opened.empty() {
		got.opened = opened.String()
	}
	if closed := pp.minus(np); !closed.empty() {
		got.closed = closed.String()
	}
	d.done[[2]int{p, n}] = got
	return got
}

// classPorts is the port set of a class of m (none for NoClass).
func classPorts(m ExitMap, class int) portSet {
	var ps portSet
	if class != NoClass {
		for _, r := range m.Classes[class].Ports {
			ps.add(r)
		}
	}
	return ps
}

// rangeChange is a run of addresses where the ports change the same way.
type rangeChange struct {
	first, last netip.Addr
	delta       portDelta
}

// classChanges walks the family's addresses in segments (every address
// where either map changes class starts one) and returns the runs where
// the accepted ports change, neighbouring runs of one change merged.
func classChanges(prev, next ExitMap, family Family) []rangeChange {
	zero := netip.IPv4Unspecified()
	if family == IPv6 {
		zero = netip.IPv6Unspecified()
	}
	top := lastAddr(netip.PrefixFrom(zero, 0))
	pi, ni := prev.Intervals(), next.Intervals()
	starts := []netip.Addr{zero}
	for _, iv := range append(slices.Clone(pi), ni...) {
		starts = append(starts, iv.First)
		if iv.Last != top {
			starts = append(starts, iv.Last.Next())
		}
	}
	slices.SortFunc(starts, netip.Addr.Compare)
	starts = slices.Compact(starts)

	deltas := &portDeltas{prev: prev, next: next, done: map[[2]int]portDelta{}}
	var changes []rangeChange
	for i, first := range starts {
		last := top
		if i+1 < len(starts) {
			last = starts[i+1].Prev()
		}
		d := deltas.of(classAt(pi, first), classAt(ni, first))
		if d == (portDelta{}) {
			continue
		}
		if n := len(changes); n > 0 && changes[n-1].last.Next() == first && changes[n-1].delta == d {
			changes[n-1].last = last
			continue
		}
		changes = append(changes, rangeChange{first: first, last: last, delta: d})
	}
	return changes
}

// classAt is the class of a in intervals ivs, or NoClass.
func classAt(ivs []ClassInterval, a netip.Addr) int {
	if i, ok := IntervalAt(ivs, a); ok {
		return ivs[i].Class
	}
	return NoClass
}

// changeGroup is one line of exitMapChanges: a sign ("+" opens, "-"
// closes), the ports, and the address ranges.
type changeGroup struct {
	sign, ports string
	ranges      []string
}

// groupChanges gathers the address ranges of each port change, in the
// order the changes first appear: the private and local rejects cut a
// change into many ranges.
func groupChanges(changes []rangeChange) []*changeGroup {
	var groups []*changeGroup
	find := func(sign, ports string) *changeGroup {
		for _, g := range groups {
			if g.sign == sign && g.ports == ports {
				return g
			}
		}
		g := &changeGroup{sign: sign, ports: ports}
		groups = append(groups, g)
		return g
	}
	for _, c := range changes {
		where := rangeText(c.first, c.last)
		if c.delta.opened != "" {
			g := find("+", c.delta.opened)
			g.ranges = append(g.ranges, where)
		}
		if c.delta.closed != "" {
			g := find("-", c.delta.closed)
			g.ranges = append(g.ranges, where)
		}
	}
	return groups
}

// rangeText is an address range as a prefix when it is one, else first-last.
func rangeText(first, last netip.Addr) string {
	for b := 0; b <= first.BitLen(); b++ {
		p := netip.PrefixFrom(first, b)
		if p.Masked().Addr() == first && lastAddr(p) == last {
			return p.String()
		}
	}
	return first.String() + "-" + last.String()
}

// portSet is a set of TCP ports, 1 to 65535.
type portSet [1024]uint64

func (s *portSet) add(r PortRange) {
	for p := int(r.First); p <= int(r.Last); {
		if p%64 == 0 && p+63 <= int(r.Last) {
			s[p/64] = ^uint64(0) // a whole word at once
			p += 64
			continue
		}
		s[p/64] |= 1 << (p % 64)
		p++
	}
}

func (s portSet) minus(o portSet) portSet {
	for i := range s {
		s[i] &^= o[i]
	}
	return s
}

func (s portSet) empty() bool {
	for _, w := range s {
		if w != 0 {
			return false
		}
	}
	return true
}

func (s portSet) has(p int) bool { return s[p/64]&(1<<(p%64)) != 0 }

// String lists the ports as "21-23,80,443", or "every port".
func (s portSet) String() string {
	n := 0
	for _, w := range s {
		n += bits.OnesCount64(w)
	}
	if n == 65535 && !s.has(0) {
		return "every port"
	}
	// Word by word: empty and full words are skipped whole (an apply
	// prints a line per class of a map, each of up to 65,535 ports).
	var parts []string
	for p := 1; p <= 65535; p++ {
		if w := s[p/64] >> (p % 64); w == 0 {
			p = p/64*64 + 63 // the next word's first port, after p++
			continue
		} else {
			p += bits.TrailingZeros64(w)
		}
		q := p
		for q+1 <= 65535 {
			if (q+1)%64 == 0 && q+64 <= 65535 && s[(q+1)/64] == ^uint64(0) {
				q += 64
				continue
			}
			if !s.has(q + 1) {
				break
			}
			q++
		}
		if q == p {
			parts = append(parts, strconv.Itoa(p))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", p, q))
		}
		p = q
	}
	return strings.Join(parts, ",")
}

// DiffRegions counts the point elements (one address, one port) want has
// and have lacks, and the other way round.
func DiffRegions(want, have []Region) (missing, extra int) {
	type point struct {
		first, last netip.Addr
		port        uint16
	}
	return countDiff(want, have, func(r Region) point { return point{r.AddrFirst, r.AddrLast, r.Ports.First} })
}

// countDiff counts the keys of want's elements have lacks, and the other
// way round, each key once.
func countDiff[T any, K comparable](want, have []T, key func(T) K) (missing, extra int) {
	w, h := map[K]bool{}, map[K]bool{}
	for _, x := range want {
		w[key(x)] = true
	}
	for _, x := range have {
		h[key(x)] = true
	}
	for k := range w {
		if !h[k] {
			missing++
		}
	}
	for k := range h {
		if !w[k] {
			extra++
		}
	}
	return missing, extra
}

func mapNames(rs Ruleset) []string {
	var out []string
	for _, m := range rs.ExitMaps {
		out = append(out, m.Name)
	}
	return out
}

func setNames(rs Ruleset) []string {
	var out []string
	for _, s := range rs.Sets {
		out = append(out, s.Name)
	}
	return out
}

func ruleNames(rs Ruleset) []string {
	var out []string
	for _, r := range rs.Outbound {
		out = append(out, r.Name)
	}
	return out
}

func rulesByName(rs Ruleset) map[string]Rule {
	out := map[string]Rule{}
	for _, r := range rs.Outbound {
		if _, dup := out[r.Name]; !dup { // a name may stand for several kernel rules
			out[r.Name] = r
		}
	}
	return out
}

// unionNames keeps the order of a, then what only b has.
func unionNames(a, b []string) []string {
	out := slices.Clone(a)
	for _, n := range b {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return slices.Compact(out)
}
