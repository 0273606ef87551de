package exitpolicy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/relayfw/relayfw/internal/torcompat"
	"github.com/relayfw/relayfw/torconf"
)

// HostFacts is what relayfw knows about the machine beyond the torrc. The
// caller gathers it (exitpolicy does no I/O).
type HostFacts struct {
	// InterfaceAddrs are the addresses configured on this host's
	// interfaces, in the kernel's order.
	InterfaceAddrs []netip.Addr
	// LookupHost resolves a host name given as Address; nil means host
	// names are not resolved (a warning is given instead).
	LookupHost func(name string) ([]netip.Addr, error)
}

// defaultExitPolicy and reducedExitPolicy are tor 0.4.9's
// DEFAULT_EXIT_POLICY and REDUCED_EXIT_POLICY.
const defaultExitPolicy = "reject *:25,reject *:119,reject *:135-139,reject *:445," +
	"reject *:563,reject *:1214,reject *:4661-4666," +
	"reject *:6346-6429,reject *:6699,reject *:6881-6999,accept *:*"

const reducedExitPolicy = "accept *:20-23,accept *:43,accept *:53,accept *:79-81,accept *:88," +
	"accept *:110,accept *:143,accept *:194,accept *:220,accept *:389," +
	"accept *:443,accept *:464,accept *:465,accept *:531,accept *:543-544," +
	"accept *:554,accept *:563,accept *:587,accept *:636,accept *:706," +
	"accept *:749,accept *:873,accept *:902-904,accept *:981,accept *:989-995," +
	"accept *:1194,accept *:1220,accept *:1293,accept *:1500,accept *:1533," +
	"accept *:1677,accept *:1723,accept *:1755,accept *:1863," +
	"accept *:2082-2083,accept *:2086-2087,accept *:2095-2096," +
	"accept *:2102-2104,accept *:3128,accept *:3389,accept *:3690," +
	"accept *:4321,accept *:4643,accept *:5050,accept *:5190," +
	"accept *:5222-5223,accept *:5228,accept *:5900,accept *:6660-6669," +
	"accept *:6679,accept *:6697,accept *:8000,accept *:8008,accept *:8074," +
	"accept *:8080,accept *:8082,accept *:8087-8088,accept *:8232-8233," +
	"accept *:8332-8333,accept *:8443,accept *:8888,accept *:9418," +
	"accept *:9999,accept *:10000,accept *:11371," +
	"accept *:18080-18081,accept *:18089," +
	"accept *:19294,accept *:19638,accept *:50002,accept *:64738," +
	"reject *:*"

// Effective is the exit policy tor would publish, with what relayfw had to
// say about how it got there.
type Effective struct {
	Policy   ExitPolicy
	Warnings []string
	// LocalAddrs are the relay's own addresses the policy rejects because
	// of ExitPolicyRejectPrivate / ExitPolicyRejectLocalInterfaces.
	LocalAddrs []netip.Addr

	// How tor built Policy, for what-ifs on the configured entries
	// (Descriptor's merge): tor's own entries ahead of the ExitPolicy
	// lines (after their redundancy removal), the lines' entries, and
	// the built-in policy after them. exit is false for a relay that
	// does not exit (Policy is then tor's "reject *:*" alone).
	head, configured, tail []Entry
	exit                   bool
	// The addresses the relay publishes as far as relayfw can tell
	// (relay_find_addr_to_publish), invalid when unknown.
	published4, published6 netip.Addr
}

// FromOptions builds the exit policy tor 0.4.9 publishes for these
// options, following policies_parse_exit_policy_from_options.
func FromOptions(o torconf.Options, facts HostFacts) (Effective, error) {
	var eff Effective
	// Non-exits, and ExitRelay auto with nothing exit-related set,
	// publish "reject *:*".
	usingDefaults := o.ExitPolicy == nil && o.ExitRelay == -1 && !o.ReducedExitPolicy && !o.IPv6Exit
	if o.ExitRelay == 0 || usingDefaults {
		eff.Policy.Entries = mustParse("reject *4:*,reject *6:*")
		return eff, nil
	}

	// Parse the configured policy first: a malformed entry is an error
	// whatever else is set.
	var configured []Entry
	for _, line := range o.ExitPolicy {
		entries, warns, err := Parse(line.Value)
		if err != nil {
			return eff, &torconf.SyntaxError{File: line.File, Line: line.Line, Err: err}
		}
		for _, w := range warns {
			eff.Warnings = append(eff.Warnings, fmt.Sprintf("%s: %s", line.Where(), w))
		}
		configured = append(configured, entries...)
	}

	// policies_parse_exit_policy_internal
	eff.rejectLocal(o, facts)
	if abortsOnValidation(o, facts) {
		at := o.Origin["ipv6exit"]
		return eff, &torconf.SyntaxError{File: at.File, Line: at.Line, Err: errors.New(
			"IPv6Exit 1 with ExitPolicyRejectPrivate 0, no ExitPolicy line and no public interface address rejected by ExitPolicyRejectLocalInterfaces: " +
				"tor 0.4.9 aborts on start (policies_log_first_redundant_entry: Assertion policy failed); " +
				"add an ExitPolicy line (e.g. \"ExitPolicy reject *:*\" before the policy you want, or the policy itself), or set ExitPolicyRejectPrivate 1")}
	}
	eff.head = removeRedundancies(eff.Policy.Entries)
	eff.configured = configured
	switch {
	case o.BridgeRelay:
		eff.tail = mustParse("reject *4:*,reject *6:*")
	case o.ReducedExitPolicy:
		eff.tail = mustParse(reducedExitPolicy)
	default:
		eff.tail = mustParse(defaultExitPolicy)
	}
	eff.exit = true
	eff.Policy = eff.withConfigured(configured)
	if !o.ExitPolicyRejectPrivate {
		// Not needed for the policy, only for the descriptor's size:
		// no look-ups, no warnings.
		eff.published4, eff.published6, _ = relayAddresses(o, HostFacts{InterfaceAddrs: facts.InterfaceAddrs})
	}
	return eff, nil
}

// withConfigured is the policy tor builds with these entries in place of
// the ExitPolicy lines' (policies_parse_exit_policy_internal).
func (eff Effective) withConfigured(configured []Entry) ExitPolicy {
	entries := slices.Concat(eff.head, configured, eff.tail)
	return ExitPolicy{Entries: removeRedundancies(entries)}
}

// mustParse parses a built-in policy.
func mustParse(text string) []Entry {
	entries, _, err := Parse(text)
	if err != nil {
		panic("exitpolicy: built-in policy: " + err.Error())
	}
	return entries
}

// rejectLocal adds the entries tor puts ahead of the configured policy:
// "reject *6:*" without IPv6Exit, "reject private:*" with
// ExitPolicyRejectPrivate, and a reject of each of the relay's own public
// addresses (ExitPolicyRejectPrivate: the published ones;
// ExitPolicyRejectLocalInterfaces: outbound, listener and interface
// addresses), in tor's order.
func (eff *Effective) rejectLocal(o torconf.Options, facts HostFacts) {
	var own []netip.Addr
	if o.ExitPolicyRejectPrivate {
		v4, v6, warns := relayAddresses(o, facts)
		eff.Warnings = append(eff.Warnings, warns...)
		eff.published4, eff.published6 = v4, v6
		for _, a := range []netip.Addr{v4, v6} {
			if a.IsValid() {
				own = append(own, a)
			}
		}
	}
	if o.ExitPolicyRejectLocalInterfaces {
		for _, list := range [][]netip.Addr{o.OutboundBindExit, o.OutboundBindOR, o.OutboundBindPT, o.OutboundBindAny} {
			for _, a := range list {
				if !a.IsUnspecified() {
					own = append(own, a)
				}
			}
		}
	}
	if !o.IPv6Exit {
		eff.Policy.Entries = append(eff.Policy.Entries, mustParse("reject *6:*")...)
	}
	if o.ExitPolicyRejectPrivate {
		eff.Policy.Entries = append(eff.Policy.Entries, mustParse("reject private:*")...)
	}
	for _, a := range own {
		eff.rejectAddr(a, true, o.IPv6Exit)
	}
	if !o.ExitPolicyRejectLocalInterfaces {
		return
	}
	for _, p := range o.Ports {
		if p.Addr.IsValid() {
			eff.rejectAddr(p.Addr, true, o.IPv6Exit)
		}
	}
	for _, a := range facts.InterfaceAddrs {
		if a.Is4() {
			eff.rejectAddr(a, true, false)
		}
	}
	if o.IPv6Exit {
		for _, a := range facts.InterfaceAddrs {
			if !a.Is4() {
				eff.rejectAddr(a, false, true)
			}
		}
	}
}

// rejectAddr rejects every port of a public address of a family allowed
// (v4ok, v6ok), and notes it as one of the relay's own.
func (eff *Effective) rejectAddr(a netip.Addr, v4ok, v6ok bool) {
	if !isPublicForReject(a) || (a.Is4() && !v4ok) || (!a.Is4() && !v6ok) {
		return
	}
	bits := 32
	if !a.Is4() {
		bits = 128
	}
	eff.Policy.Entries = append(eff.Policy.Entries, Entry{Action: Reject, Addr: a, Bits: bits, PortMin: 1, PortMax: 65535})
	eff.LocalAddrs = append(eff.LocalAddrs, a)
}

// abortsOnValidation says whether tor 0.4.9 aborts on these options. Its
// validate_addr_policies builds the exit policy when the configuration is
// validated: before the ports of a new configuration exist (at start none
// are configured), with OutboundBindAddress* parsed for validation only
// (left unset), and without the relay's own addresses. When that adds no
// entry ahead of the ExitPolicy lines and there are none, the list stays
// NULL and policies_log_first_redundant_entry's tor_assert(policy) aborts.
// Entries ahead: "reject *6:*" (IPv6Exit 0), "reject private:*"
// (ExitPolicyRejectPrivate), and with ExitPolicyRejectLocalInterfaces the
// public addresses of the host's interfaces (IPv6 ones only with IPv6Exit).
func abortsOnValidation(o torconf.Options, facts HostFacts) bool {
	if o.ExitPolicy != nil || !o.IPv6Exit || o.ExitPolicyRejectPrivate {
		return false
	}
	if o.ExitPolicyRejectLocalInterfaces && slices.ContainsFunc(facts.InterfaceAddrs, isPublicForReject) {
		return false
	}
	return true
}

// isPublicForReject is tor_addr_is_public_for_reject.
func isPublicForReject(a netip.Addr) bool {
	return !a.IsUnspecified() && !IsInternal(a) && !a.IsMulticast()
}

// IsInternal is tor's tor_addr_is_internal(addr, 0).
func IsInternal(a netip.Addr) bool {
	if a.Is4In6() || a.Is4() {
		b := a.Unmap().As4()
		v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		return v&0xff000000 == 0x0a000000 || // 10/8
			v&0xff000000 == 0x00000000 || // 0/8
			v&0xff000000 == 0x7f000000 || // 127/8
			v&0xffc00000 == 0x64400000 || // 100.64/10
			v&0xffff0000 == 0xa9fe0000 || // 169.254/16
			v&0xfff00000 == 0xac100000 || // 172.16/12
			v&0xffff0000 == 0xc0a80000 // 192.168/16
	}
	b := a.As16()
	w0 := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	if w0&0xfe000000 == 0xfc000000 || w0&0xffc00000 == 0xfe800000 || w0&0xffc00000 == 0xfec00000 {
		return true
	}
	for i := 4; i < 15; i++ {
		if b[i] != 0 {
			return false
		}
	}
	return w0 == 0 && b[15]&0xfe == 0 // ::/127
}

// relayAddresses approximates tor's relay_find_addr_to_publish for each
// family that has an advertised ORPort: the Address option, else an
// explicit ORPort address, else an interface address.
func relayAddresses(o torconf.Options, facts HostFacts) (v4, v6 netip.Addr, warnings []string) {
	find := func(want6 bool) netip.Addr {
		served := false
		for _, p := range o.Ports {
			if p.Kind == "ORPort" && !p.NoAdvertise && ((want6 && p.IPv6) || (!want6 && p.IPv4)) {
				served = true
			}
		}
		if !served {
			return netip.Addr{}
		}
		var found netip.Addr
		for _, l := range o.Address {
			if a, ok := torcompat.AddrParse(l.Value); ok {
				if a.Is4() != want6 {
					found = a
				}
				continue
			}
			if facts.LookupHost == nil {
				warnings = append(warnings, fmt.Sprintf("torrc %s: Address %q is a host name; relayfw does not resolve it here, so the relay's own address is not rejected", l.Where(), l.Value))
				continue
			}
			addrs, err := facts.LookupHost(l.Value)
			if err != nil {
				warnings = append(warnings, fmt.Sprintf("torrc %s: Address %q: %v", l.Where(), l.Value, err))
				continue
			}
			for _, a := range addrs {
				if a.Is4() != want6 {
					found = a
					break
				}
			}
		}
		if found.IsValid() {
			return found
		}
		for _, p := range o.Ports {
			if p.Kind == "ORPort" && p.Addr.IsValid() && !p.Addr.IsUnspecified() && p.Addr.Is4() != want6 {
				return p.Addr
			}
		}
		for _, a := range facts.InterfaceAddrs {
			if a.Is4() != want6 && !IsInternal(a) && !a.IsMulticast() && !a.IsLoopback() {
				return a
			}
		}
		return netip.Addr{}
	}
	return find(false), find(true), warnings
}

// removeRedundancies is tor's exit_policy_remove_redundancies, with the
// same result but without its quadratic scans (a 10,000-entry block list
// would take seconds): candidates for "covers" and "intersects" are found
// through the prefix tree instead of by comparing every pair. Both of
// tor's passes decide each entry independently of the others' removal
// (covering is transitive, and pass three only ever removes the entry it
// looks from), which is what makes the indexed form exact; the tests
// compare it with a literal port on random policies.
func removeRedundancies(dest []Entry) []Entry {
	out := dropAfterCatchAll(dest)

	// Step two: drop any entry covered by an earlier one.
	idx := newPrefixIndex(out)
	var kept []Entry
	for j, e := range out {
		covered := false
		idx.ancestors(e, func(i int) bool {
			if i < j && portsContainEntry(out[i], e) {
				covered = true
				return false
			}
			return true
		})
		if !covered {
			kept = append(kept, e)
		}
	}

	// Step three: drop entry A when a later entry B of the same action
	// covers it and no entry of the other action in between intersects A.
	idx = newPrefixIndex(kept)
	var final []Entry
	for i, a := range kept {
		first, firstCovers := len(kept), false
		consider := func(j int, mayCover bool) {
			if j <= i || j >= first {
				return
			}
			b := kept[j]
			if b.Action != a.Action {
				if portsOverlap(a, b) {
					first, firstCovers = j, false
				}
			} else if mayCover && portsContainEntry(b, a) {
				first, firstCovers = j, true
			}
		}
		idx.ancestors(a, func(j int) bool { consider(j, true); return true })
		idx.descendants(i, func(j int) { consider(j, false) })
		if !firstCovers {
			final = append(final, a)
		}
	}
	return final
}

// dropAfterCatchAll is step one of exit_policy_remove_redundancies: every
// entry after a catch-all ("*4:*", "*6:*") of its family is dead.
func dropAfterCatchAll(dest []Entry) []Entry {
	out := dest[:0:0]
	kill4, kill6 := false, false
	for _, e := range dest {
		if (e.IPv6() && kill6) || (!e.IPv6() && kill4) {
			continue
		}
		out = append(out, e)
		if e.Bits == 0 && e.PortMin <= 1 && e.PortMax == 65535 {
			if e.IPv6() {
				kill6 = true
			} else {
				kill4 = true
			}
		}
	}
	return out
}

// portsContainEntry reports whether a's port range contains b's.
func portsContainEntry(a, b Entry) bool { return a.PortMin <= b.PortMin && a.PortMax >= b.PortMax }

func portsOverlap(a, b Entry) bool { return !(a.PortMax < b.PortMin || b.PortMax < a.PortMin) }

// prefixIndex finds, for an entry, the entries whose prefix contains its
// prefix (ancestors, including equal prefixes) and those whose prefix lies
// strictly inside it (descendants).
type prefixIndex struct {
	entries  []Entry
	nets     []netip.Prefix         // each entry's network, computed once
	byPrefix map[netip.Prefix][]int // positions, ascending
	sorted   []int                  // positions by family, network start, prefix length
	start    []int                  // per position: where its network's run starts in sorted
	lengths  [2][]int               // prefix lengths present, per family (IPv4, IPv6), ascending
}

func newPrefixIndex(entries []Entry) *prefixIndex {
	x := &prefixIndex{entries: entries, nets: make([]netip.Prefix, len(entries)), byPrefix: make(map[netip.Prefix][]int, len(entries))}
	var seen [2][129]bool
	for i, e := range entries {
		n := e.Network()
		x.nets[i] = n
		x.byPrefix[n] = append(x.byPrefix[n], i)
		x.sorted = append(x.sorted, i)
		fam := familyIndex(e)
		if !seen[fam][e.Bits] {
			seen[fam][e.Bits] = true
			x.lengths[fam] = append(x.lengths[fam], e.Bits)
		}
	}
	slices.Sort(x.lengths[0])
	slices.Sort(x.lengths[1])
	slices.SortFunc(x.sorted, func(i, j int) int { return x.compare(x.nets[i], x.nets[j]) })
	x.start = make([]int, len(entries))
	for k, i := range x.sorted {
		x.start[i] = k
		if k > 0 && x.nets[x.sorted[k-1]] == x.nets[i] {
			x.start[i] = x.start[x.sorted[k-1]]
		}
	}
	return x
}

func (x *prefixIndex) compare(a, b netip.Prefix) int {
	if a.Addr().Is4() != b.Addr().Is4() {
		if a.Addr().Is4() {
			return -1
		}
		return 1
	}
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// ancestors calls f with the position of every entry whose prefix contains
// e's, until f returns false.
func (x *prefixIndex) ancestors(e Entry, f func(int) bool) {
	for _, bits := range x.lengths[familyIndex(e)] {
		if bits > e.Bits {
			return
		}
		p, _ := e.Addr.Prefix(bits)
		for _, i := range x.byPrefix[p] {
			if !f(i) {
				return
			}
		}
	}
}

func familyIndex(e Entry) int {
	if e.IPv6() {
		return 1
	}
	return 0
}

// descendants calls f with the position of every entry whose prefix lies
// strictly inside the prefix of the entry at position e.
func (x *prefixIndex) descendants(e int, f func(int)) {
	n := x.nets[e]
	for _, i := range x.sorted[x.start[e]:] {
		m := x.nets[i]
		if !n.Contains(m.Addr()) { // sorted: past n's last address, or its family
			return
		}
		if m.Bits() > n.Bits() {
			f(i)
		}
	}
}

// covers is addr_policy_covers: a matches everything b matches.
func covers(a, b Entry) bool {
	if a.IPv6() != b.IPv6() || a.Bits > b.Bits {
		return false
	}
	if !maskedEqual(a.Addr, b.Addr, a.Bits) {
		return false
	}
	return a.PortMin <= b.PortMin && a.PortMax >= b.PortMax
}

// intersects is addr_policy_intersects.
func intersects(a, b Entry) bool {
	if a.IPv6() != b.IPv6() {
		return false
	}
	if !maskedEqual(a.Addr, b.Addr, min(a.Bits, b.Bits)) {
		return false
	}
	return !(a.PortMax < b.PortMin || b.PortMax < a.PortMin)
}
