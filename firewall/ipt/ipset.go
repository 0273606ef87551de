package ipt

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/ruleset"
)

// ipsets hold what would otherwise be walked rule by rule:
//   - relay links (address . port points): hash:ip,port, matched with
//     -m set ... dst,dst; a consensus has thousands of relays;
//   - the exit policy's port classes: one hash:net per class, matched with
//     -m set ... dst, then the class's ports with multiport. A class set
//     is the exit map's longest-prefix match for that one class: the
//     class's prefixes, and inside them, as nomatch entries, the prefixes
//     of other classes. hash:net answers from the longest prefix it holds
//     and a nomatch entry answers "not in the set", so the kernel's work
//     per packet is one probe per prefix length present, whatever the
//     number of entries.

// ipsetName is the ipset holding a ruleset set or port class.
func ipsetName(set string) string { return ownedPrefix + set }

// classIpsetName names a class's set after its content: a new policy
// fills new sets while the rules still use the old ones, and one
// iptables-restore then switches the rules over, so that an apply that is
// interrupted leaves the old policy or the new one, never a mix.
func classIpsetName(class string, entries []string) string {
	h := fnv.New32a()
	for _, e := range entries {
		h.Write([]byte(e))
		h.Write([]byte{'\n'})
	}
	return fmt.Sprintf("%s-%08x", ipsetName(class), h.Sum32())
}

// ownedPrefix starts the name of every ipset relayfw creates.
const ownedPrefix = "relayfw-"

// ipsetMaxElem is maxelem of every relayfw ipset: room for a consensus
// several times today's size and for block lists of a million entries.
// Hash sets allocate by their content, not by maxelem.
const ipsetMaxElem = 1 << 22

// maxClassIpsets bounds the class ipsets per family: the kernel's default
// ip_set_max is 256 sets for the whole namespace. Classes beyond it (those
// with the fewest prefixes) are matched by rules per address interval.
const maxClassIpsets = 64

// ipset is one set relayfw installs.
type ipset struct {
	name    string
	class   string // the port class it holds, if any
	typ     string // "hash:ip,port", "hash:net" or "hash:ip"
	v6      bool
	entries []string // as ipset save prints them, sorted
	// follows: its entries follow the consensus (relay links, trusted
	// sources): refresh brings them up to date.
	follows bool
	// dynamic: the kernel fills it (blocked sources); its entries are
	// not compared, only its parameters.
	dynamic bool
	maxelem uint // 0: ipsetMaxElem
	timeout uint // seconds; 0: none
	netmask int  // 0: none
}

// params are the create parameters relayfw sets, in create's order, as
// ipset save prints them.
func (s ipset) params() [][2]string {
	out := [][2]string{{"maxelem", fmt.Sprint(cmp.Or(s.maxelem, ipsetMaxElem))}}
	if s.netmask != 0 {
		out = append(out, [2]string{"netmask", fmt.Sprint(s.netmask)})
	}
	if s.timeout != 0 {
		out = append(out, [2]string{"timeout", fmt.Sprint(s.timeout)})
	}
	return out
}

func (s ipset) create(name string) string {
	family := "inet"
	if s.v6 {
		family = "inet6"
	}
	// Fixed parameters: restore -exist then accepts an identical create
	// of a set left over by an interrupted run. The hash grows as needed.
	line := fmt.Sprintf("create %s %s family %s", name, s.typ, family)
	for _, p := range s.params() {
		line += " " + p[0] + " " + p[1]
	}
	return line + "\n"
}

// classSets splits an exit map's classes into those matched through an
// ipset and those matched by address rules; with a single prefix (one
// class everywhere) no address match is needed at all.
//
// The ipsets of a family are shared among its exit maps (one per exit
// instance): each gets maxClassIpsets divided by their number.
func classSets(rs ruleset.Ruleset, m ruleset.ExitMap) (withSet, withRules []int) {
	if len(m.Prefixes) <= 1 {
		return nil, nil
	}
	count := make([]int, len(m.Classes))
	for _, pc := range m.Prefixes {
		if pc.Class != ruleset.NoClass {
			count[pc.Class]++
		}
	}
	order := make([]int, len(m.Classes))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(count[b], count[a]) })
	maps := 0
	for _, other := range rs.ExitMaps {
		if other.Family == m.Family {
			maps++
		}
	}
	n := min(len(order), maxClassIpsets/max(maps, 1))
	withSet, withRules = order[:n], order[n:]
	slices.Sort(withSet)
	slices.Sort(withRules)
	return withSet, withRules
}

// classEntries is the hash:net content of one class: every prefix of the
// class, and every prefix directly inside one of them (whose class then
// differs: the exit map never repeats a class inside itself) as nomatch.
// hash:net refuses /0, so the family's /0 becomes its two halves.
func classEntries(m ruleset.ExitMap, class int) []string {
	var out []string
	entry := func(p netip.Prefix, match bool) {
		s := netEntry(p)
		if !match {
			s += " nomatch"
		}
		out = append(out, s)
	}
	explicitHalf := map[netip.Prefix]bool{}
	for _, pc := range m.Prefixes {
		if pc.Prefix.Bits() == 1 {
			explicitHalf[pc.Prefix] = true
		}
	}
	var stack []ruleset.PrefixClass
	for _, pc := range m.Prefixes {
		for len(stack) > 0 && !stack[len(stack)-1].Prefix.Contains(pc.Prefix.Addr()) {
			stack = stack[:len(stack)-1]
		}
		switch {
		case pc.Prefix.Bits() == 0:
			if pc.Class == class {
				for _, half := range halves(pc.Prefix.Addr()) {
					if !explicitHalf[half] {
						entry(half, true)
					}
				}
			}
		case pc.Class == class:
			entry(pc.Prefix, true)
		case len(stack) > 0 && stack[len(stack)-1].Class == class:
			entry(pc.Prefix, false)
		}
		stack = append(stack, pc)
	}
	slices.Sort(out)
	return out
}

// netEntry is a hash:net entry as ipset save prints it: a prefix, a
// single address without its length.
func netEntry(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// halves are the two /1 prefixes of a family.
func halves(zero netip.Addr) [2]netip.Prefix {
	b := zero.AsSlice()
	b[0] = 0x80
	hi, _ := netip.AddrFromSlice(b)
	return [2]netip.Prefix{netip.PrefixFrom(zero, 1), netip.PrefixFrom(hi, 1)}
}

// wantedIpsets are the ipsets of one family, in ruleset order.
func wantedIpsets(rs ruleset.Ruleset, v6 bool) []ipset {
	var out []ipset
	for _, s := range rs.Sets {
		if (s.Family == ruleset.IPv6) != v6 {
			continue
		}
		entries := make([]string, 0, len(s.Elements))
		for _, e := range s.Elements {
			entries = append(entries, fmt.Sprintf("%s,tcp:%d", e.AddrFirst, e.Ports.First))
		}
		slices.Sort(entries)
		out = append(out, ipset{name: ipsetName(s.Name), typ: "hash:ip,port", v6: v6, entries: entries})
	}
	for _, m := range rs.ExitMaps {
		if (m.Family == ruleset.IPv6) != v6 {
			continue
		}
		withSet, _ := classSets(rs, m)
		for _, c := range withSet {
			entries := classEntries(m, c)
			out = append(out, ipset{name: classIpsetName(m.Classes[c].Name, entries), class: m.Classes[c].Name,
				typ: "hash:net", v6: v6, entries: entries})
		}
	}
	if rs.Inbound != nil {
		out = append(out, inboundIpsets(*rs.Inbound, v6)...)
	}
	for _, ls := range rs.LinkSets() {
		for i := range out {
			out[i].follows = out[i].follows || out[i].name == ipsetName(ls.Name)
		}
	}
	return out
}

// installedIpset is what ipset save says of one of relayfw's sets.
type installedIpset struct {
	typ     string
	params  map[string]string // create parameters: "maxelem": "65536", …
	entries []string          // sorted
}

// ipsets runs the ipset command.
type ipsets struct{ path string }

// owned reads every relayfw ipset with one ipset save.
func (x ipsets) owned(ctx context.Context) (map[string]*installedIpset, error) {
	out, err := runTool(ctx, "ipset", "", x.path, "save")
	if err != nil {
		return nil, err
	}
	return parseSave(out), nil
}

// one reads one of relayfw's ipsets (ipset save NAME); nil when the host
// does not have it.
func (x ipsets) one(ctx context.Context, name string) (*installedIpset, error) {
	out, err := runTool(ctx, "ipset", "", x.path, "save", name)
	if noSuchSet(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return parseSave(out)[name], nil
}

// noSuchSet reports whether ipset refused for want of the named set.
func noSuchSet(err error) bool {
	var te *toolError
	return errors.As(err, &te) && strings.Contains(te.stderr, "does not exist")
}

// contains asks the kernel whether the set holds entry (ipset test),
// without listing the set.
func (x ipsets) contains(ctx context.Context, name, entry string) (bool, error) {
	_, err := runTool(ctx, "ipset", "", x.path, "test", name, entry)
	var te *toolError
	if errors.As(err, &te) && strings.Contains(te.stderr, "is NOT in set") {
		return false, nil
	}
	return err == nil, err
}

// parseSave reads relayfw's sets from ipset save's output.
func parseSave(out []byte) map[string]*installedIpset {
	sets := map[string]*installedIpset{}
	for _, l := range strings.Split(string(out), "\n") {
		verb, rest, _ := strings.Cut(l, " ")
		name, rest, _ := strings.Cut(rest, " ")
		if !strings.HasPrefix(name, ownedPrefix) {
			continue
		}
		switch verb {
		case "create":
			f := strings.Fields(rest)
			if len(f) == 0 {
				continue
			}
			set := &installedIpset{typ: f[0], params: map[string]string{}}
			for i := 1; i+1 < len(f); i += 2 {
				set.params[f[i]] = f[i+1]
			}
			sets[name] = set
		case "add":
			if s := sets[name]; s != nil {
				s.entries = append(s.entries, rest)
			}
		}
	}
	for _, s := range sets {
		slices.Sort(s.entries)
	}
	return sets
}

// replaceScript creates and fills the set when it is missing (created:
// false); else it fills a fresh temporary set and swaps it in, so the live
// set changes in one step (swap needs only the same type and family).
func replaceScript(s ipset, created bool) string {
	tmp := tmpName(s.name)
	var b strings.Builder
	if !created {
		// A new set: filled before any rule refers to it.
		b.WriteString(s.create(s.name))
		for _, e := range s.entries {
			fmt.Fprintf(&b, "add %s %s\n", s.name, e)
		}
		return b.String()
	}
	// A temporary set left by an interrupted apply may have other
	// parameters, and create refuses to change them: start afresh (with
	// -exist, destroying a set that is not there succeeds).
	fmt.Fprintf(&b, "destroy %s\n", tmp)
	b.WriteString(s.create(tmp))
	for _, e := range s.entries {
		fmt.Fprintf(&b, "add %s %s\n", tmp, e)
	}
	fmt.Fprintf(&b, "swap %s %s\n", tmp, s.name)
	fmt.Fprintf(&b, "destroy %s\n", tmp)
	return b.String()
}

// tmpName is the temporary set replaceScript fills before swapping it in.
func tmpName(name string) string {
	if len(name)+len("-new") > 31 { // ipset's name limit
		return name[:27] + "-new"
	}
	return name + "-new"
}

// ipsetBusyWait bounds how long a restore waits for a set the kernel
// holds busy. While any process dumps a set (ipset list or save: relayfw
// status, check and metrics do, and so may an operator's shell), the
// kernel refuses to swap or destroy it; and iptables-nft drops the
// reference of a deleted rule's set match after its transaction, not
// with it. Both pass in moments.
const ipsetBusyWait = 10 * time.Second

// restore runs an ipset restore script. ipset runs the script line by
// line and stops at the first refused one; when the kernel refused it
// because the set was busy, the lines before it have taken effect, so the
// rest, from that line on, is run again until ipsetBusyWait has passed.
func (x ipsets) restore(ctx context.Context, script string) error {
	deadline := time.Now().Add(ipsetBusyWait)
	pause := 20 * time.Millisecond
	for {
		_, err := runTool(ctx, "ipset", script, x.path, "restore", "-exist")
		line, busy := busyLine(err)
		if !busy {
			return err
		}
		rest, ok := linesFrom(script, line)
		if !ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w (waited %s: another process is listing the set, e.g. a stuck ipset list, or a rule still uses it)", err, ipsetBusyWait)
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(pause):
		}
		pause = min(2*pause, 500*time.Millisecond)
		script = rest
	}
}

// busyLine reports whether err is an ipset restore refused because a set
// was busy, and the script line (from 1) that was refused.
func busyLine(err error) (line int, busy bool) {
	var te *toolError
	if !errors.As(err, &te) {
		return 0, false
	}
	// "ipset v7.17: Error in line 2: Kernel error received: Device or
	// resource busy" (swap), "… Set cannot be destroyed: it is in use by a
	// kernel component" (destroy).
	if !strings.Contains(te.stderr, "Device or resource busy") && !strings.Contains(te.stderr, "in use by a kernel component") {
		return 0, false
	}
	_, after, ok := strings.Cut(te.stderr, "Error in line ")
	if !ok {
		return 0, false
	}
	digits, _, _ := strings.Cut(after, ":")
	n, err := strconv.Atoi(digits)
	return n, err == nil && n > 0
}

// linesFrom is script from its line n (from 1) on.
func linesFrom(script string, n int) (string, bool) {
	lines := strings.SplitAfter(script, "\n")
	if n > len(lines) || lines[n-1] == "" {
		return "", false
	}
	return strings.Join(lines[n-1:], ""), true
}

func (x ipsets) destroy(ctx context.Context, names []string) error {
	if len(names) == 0 {
		return nil
	}
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "destroy %s\n", n)
	}
	return x.restore(ctx, b.String())
}

// setDrift compares one set with what is installed (its drift is in
// scope, e.g. "iptables"), and counts the entries missing and extra.
func setDrift(want ipset, have *installedIpset, scope string) (drift []firewall.Drift, added, removed int) {
	object := "ipset " + want.name
	differs := func(how string, args ...any) firewall.Drift {
		return firewall.Drift{Scope: scope, Object: object, Kind: firewall.Differs, Detail: fmt.Sprintf(how, args...)}
	}
	if have == nil {
		return []firewall.Drift{{Scope: scope, Object: object, Kind: firewall.Missing}}, len(want.entries), 0
	}
	if have.typ != want.typ {
		return []firewall.Drift{differs("is %s, not %s", have.typ, want.typ)}, len(want.entries), len(have.entries)
	}
	if want.dynamic {
		for _, p := range want.params() {
			if k, v := p[0], p[1]; have.params[k] != v {
				drift = append(drift, differs("has %s %s, not %s", k, cmp.Or(have.params[k], "none"), v))
			}
		}
		if have.params["netmask"] != "" && want.netmask == 0 {
			drift = append(drift, differs("has netmask %s, not none", have.params["netmask"]))
		}
		slices.SortFunc(drift, func(a, b firewall.Drift) int { return strings.Compare(a.Detail, b.Detail) })
		return drift, 0, 0 // its entries are the kernel's
	}
	missing, extra := firewall.SortedDiff(want.entries, have.entries)
	added, removed = len(missing), len(extra)
	if added > 0 {
		drift = append(drift, firewall.Drift{Scope: scope, Object: object, Kind: firewall.ElementsMissing, N: added, Links: want.follows})
	}
	if removed > 0 {
		drift = append(drift, firewall.Drift{Scope: scope, Object: object, Kind: firewall.ElementsUnexpected, N: removed, Links: want.follows})
	}
	return drift, added, removed
}
