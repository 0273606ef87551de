package ruleset

import (
	"fmt"
	"iter"
	"net/netip"
	"slices"
	"strings"

	"github.com/relayfw/relayfw/exitpolicy"
)

// ExitMap is one family's exit policy in the form a kernel looks up in
// constant work per packet: every destination address has one port class,
// found by longest-prefix match over Prefixes, and the class lists the TCP
// ports the policy accepts there.
//
// Why this form: a policy of N host or network rejects in front of a port
// list is N+1 prefixes and one class. Crossing every address interval with
// every port range instead (one concatenated interval set) costs N times
// the number of port ranges in elements, and loading those grows worse
// than linearly in the kernel.
type ExitMap struct {
	Name    string      `json:"name"`
	Family  Family      `json:"family"`
	Comment string      `json:"comment"`
	Classes []PortClass `json:"classes"`
	// Prefixes are sorted by address, then length; the family's /0 comes
	// first, so every address has a class. No prefix repeats the class of
	// the nearest prefix that contains it.
	Prefixes []PrefixClass `json:"prefixes"`
}

// PortClass is the set of TCP ports the exit policy accepts for every
// address of the class. Name is unique in the ruleset; backends name their
// per-class objects (chains, sets) after it.
type PortClass struct {
	Name  string      `json:"name"`
	Ports []PortRange `json:"ports"`
}

// NoClass is the class of addresses where the policy accepts no port.
const NoClass = -1

// PrefixClass gives the addresses of Prefix (less any longer prefix of the
// map inside it) the class Classes[Class], or none (NoClass).
type PrefixClass struct {
	Prefix netip.Prefix `json:"prefix"`
	Class  int          `json:"class"`
}

// ClassInterval is a run of addresses, First to Last inclusive, of one
// class.
type ClassInterval struct {
	First, Last netip.Addr
	Class       int
}

// IntervalAt finds the interval of ivs (sorted, disjoint: Intervals'
// result) that holds a.
func IntervalAt(ivs []ClassInterval, a netip.Addr) (int, bool) {
	return slices.BinarySearchFunc(ivs, a, func(iv ClassInterval, a netip.Addr) int {
		switch {
		case iv.Last.Less(a):
			return -1
		case a.Less(iv.First):
			return 1
		}
		return 0
	})
}

// AllPorts reports whether the class accepts every port.
func (c PortClass) AllPorts() bool {
	return len(c.Ports) == 1 && c.Ports[0] == PortRange{1, 65535}
}

// Lookup returns the class of addr: the class of the longest prefix that
// contains it. It scans every prefix: the reference semantics that tests
// and explain compare the kernel against, not a fast path.
func (m ExitMap) Lookup(addr netip.Addr) int {
	class, bits := NoClass, -1
	for _, pc := range m.Prefixes {
		if pc.Prefix.Bits() > bits && pc.Prefix.Contains(addr) {
			class, bits = pc.Class, pc.Prefix.Bits()
		}
	}
	return class
}

// Accepts reports whether the map lets a TCP connection to addr:port out.
func (m ExitMap) Accepts(addr netip.Addr, port uint16) bool {
	c := m.Lookup(addr)
	return c != NoClass && portsContain(m.Classes[c].Ports, port)
}

// Intervals returns the map as disjoint, sorted address intervals with
// their class, for backends whose maps take ranges (nftables interval
// maps). Neighbouring intervals of one class are merged; addresses of no
// class are left out.
func (m ExitMap) Intervals() []ClassInterval {
	var out []ClassInterval
	emit := func(first, last netip.Addr, class int) {
		if class == NoClass || !first.IsValid() || last.Less(first) {
			return
		}
		if n := len(out); n > 0 && out[n-1].Class == class && out[n-1].Last.Next() == first {
			out[n-1].Last = last
			return
		}
		out = append(out, ClassInterval{first, last, class})
	}
	// A walk in address order with the chain of enclosing prefixes on a
	// stack: the innermost one owns the addresses up to its next child.
	var stack []PrefixClass
	var next netip.Addr // first address not yet emitted
	pop := func() {
		top := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		last := lastAddr(top.Prefix)
		emit(next, last, top.Class)
		next = last.Next() // invalid after the family's last address
	}
	for _, pc := range m.Prefixes {
		for len(stack) > 0 && !stack[len(stack)-1].Prefix.Contains(pc.Prefix.Addr()) {
			pop()
		}
		if len(stack) == 0 {
			next = pc.Prefix.Addr()
		} else {
			emit(next, pc.Prefix.Addr().Prev(), stack[len(stack)-1].Class)
		}
		stack = append(stack, pc)
		next = pc.Prefix.Addr()
	}
	for len(stack) > 0 {
		pop()
	}
	return out
}

// NewExitMap compiles the entries of p of one family (v6 false: IPv4)
// into an exit map. Classes are named name_c0, name_c1, … in the order of
// their first address.
//
// Every address's matching entries are those whose prefix contains it;
// prefixes that contain one address are nested, so the longest of them
// alone fixes the whole chain of matching entries, and with it the ports
// first-match accepts. One class per distinct prefix, computed over its
// chain of enclosing prefixes, is therefore exact.
func NewExitMap(p exitpolicy.ExitPolicy, name string, v6 bool) ExitMap {
	fam := IPv4
	root := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	if v6 {
		fam, root = IPv6, netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	m := ExitMap{Name: name, Family: fam, Classes: []PortClass{}, Prefixes: []PrefixClass{}}

	// The entries of each distinct prefix, in policy order.
	byPrefix := map[netip.Prefix][]int{root: nil}
	for i, e := range p.Entries {
		if e.IPv6() == v6 {
			n := e.Network()
			byPrefix[n] = append(byPrefix[n], i)
		}
	}
	prefixes := make([]netip.Prefix, 0, len(byPrefix))
	for n := range byPrefix {
		prefixes = append(prefixes, n)
	}
	slices.SortFunc(prefixes, comparePrefixes)

	classOf := map[string]int{}
	// level is one prefix on the chain of enclosing prefixes.
	type level struct {
		prefix  netip.Prefix
		emitted int // class of the nearest prefix kept in the map
	}
	var stack []level
	var chain [][]int // the entries of each level, then of the prefix itself
	var scratch portScratch
	for _, n := range prefixes {
		for len(stack) > 0 && !stack[len(stack)-1].prefix.Contains(n.Addr()) {
			stack = stack[:len(stack)-1]
			chain = chain[:len(chain)-1]
		}
		emitted := NoClass - 1 // the root is always kept
		if len(stack) > 0 {
			emitted = stack[len(stack)-1].emitted
		}
		chain = append(chain, byPrefix[n])
		ports := acceptedPorts(p, mergedEntries(chain), &scratch)
		class := NoClass
		if len(ports) > 0 {
			key := portsKey(ports)
			c, ok := classOf[key]
			if !ok {
				c = len(m.Classes)
				classOf[key] = c
				m.Classes = append(m.Classes, PortClass{Name: fmt.Sprintf("%s_c%d", name, c), Ports: ports})
			}
			class = c
		}
		if class != emitted {
			m.Prefixes = append(m.Prefixes, PrefixClass{Prefix: n, Class: class})
			emitted = class
		}
		stack = append(stack, level{prefix: n, emitted: emitted})
	}
	return m
}

// comparePrefixes orders by address, then shorter first: a prefix comes
// before the prefixes it contains.
func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// mergedEntries yields the entries of every list in policy order (each
// list ascending), lazily: first-match usually decides every port after a
// few entries, and a chain can hold a long list (e.g. the port lines of
// the /0) under each of many host prefixes.
func mergedEntries(lists [][]int) iter.Seq[int] {
	return func(yield func(int) bool) {
		pos := make([]int, len(lists))
		for {
			best := -1
			for l, list := range lists {
				if pos[l] < len(list) && (best < 0 || list[pos[l]] < lists[best][pos[best]]) {
					best = l
				}
			}
			if best < 0 || !yield(lists[best][pos[best]]) {
				return
			}
			pos[best]++
		}
	}
}

func portsKey(ports []PortRange) string {
	var b strings.Builder
	for _, pr := range ports {
		fmt.Fprintf(&b, "%d-%d,", pr.First, pr.Last)
	}
	return b.String()
}
