package ipt

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/relayfw/relayfw/firewall"
)

// An apply changes the kernel in steps: one ipset restore (both families'
// sets), then one iptables-restore transaction per family, then the
// destroy of the sets no rule uses any more. Each step is atomic on its
// own, the sequence is not: when a later step fails, undo puts back what
// the earlier ones changed, from what the apply read before its first
// change, so that a failed apply leaves the firewall it found.

// snapshot is what an apply (or a remove) read before its first change.
type snapshot struct {
	op   string // "apply" or "remove", for messages
	sets map[string]*installedIpset
	// read is when sets was read: the entries of the sets with timeouts
	// (the inbound protection's blocked sources) have less time left now.
	read     time.Time
	families map[*family]state
	// plans are what an apply installs, to tell which rules a family
	// holds when undo fails; nil for a remove.
	plans map[*family]familyPlan
}

// label names a family in messages.
func (f *family) label() string {
	if f.v6 {
		return "IPv6"
	}
	return "IPv4"
}

// undo restores what an apply (or a remove) changed before cause stopped
// it, in an order in which every rule always finds its sets:
//  1. the sets the old rules use: created again when gone, swapped back
//     to their old parameters and entries when changed;
//  2. each family that committed the new rules gets its old chains and
//     jumps back (or none, when it had none), in one transaction;
//  3. the sets only the new rules used are destroyed, once no family
//     uses them any more.
//
// It returns cause followed by what was restored; when a step of its own
// fails, by that failure and what each family and the ipsets now hold.
func (b *Backend) undo(ctx context.Context, before snapshot, committed []*family, cause error) error {
	ctx = context.WithoutCancel(ctx) // a canceled apply is put back all the same
	var failed []string
	setsBack := false
	var gone string
	now, err := b.ipset.owned(ctx)
	if err == nil {
		var back string
		back, gone = ipsetRollback(before.sets, now, time.Since(before.read))
		if back != "" {
			err = b.ipset.restore(ctx, back)
			setsBack = err == nil
		}
	}
	if err != nil {
		failed = append(failed, err.Error())
	}
	var restored []string
	for _, f := range committed {
		cur, err := f.read(ctx)
		if err == nil {
			if script := rollbackScript(before.families[f], cur); script != "" {
				err = f.runRestore(ctx, script)
			}
		}
		if err != nil {
			failed = append(failed, err.Error())
			continue
		}
		restored = append(restored, f.label())
	}
	if gone != "" && len(restored) == len(committed) {
		if err := b.ipset.restore(ctx, gone); err != nil {
			failed = append(failed, err.Error())
		} else {
			setsBack = true
		}
	}
	if len(failed) == 0 {
		return fmt.Errorf("%w; %s", cause, restoredText(before.op, restored, setsBack))
	}
	return &firewall.NotRestoredError{Err: fmt.Errorf("%w; restoring the firewall from before this %s failed: %s; %s (relayfw check shows the differences)",
		cause, before.op, strings.Join(failed, "; "), b.where(ctx, before))}
}

// restoredText says what undo put back.
func restoredText(op string, families []string, sets bool) string {
	var parts []string
	if len(families) > 0 {
		parts = append(parts, "the "+strings.Join(families, " and ")+" rules")
	}
	if sets {
		parts = append(parts, "the ipsets")
	}
	if len(parts) == 0 {
		return "nothing was changed"
	}
	return "restored " + strings.Join(parts, " and ") + " as they were before this " + op
}

// where says, after a failed undo, which rules each family holds and
// whether the ipsets are as before the apply.
func (b *Backend) where(ctx context.Context, before snapshot) string {
	var parts []string
	for _, f := range b.families {
		st, err := f.read(ctx)
		switch {
		case err != nil:
			parts = append(parts, fmt.Sprintf("%s: unknown (%v)", f.label(), err))
		case sameState(st, before.families[f]):
			parts = append(parts, f.label()+" has the rules from before this "+before.op)
		case before.plans == nil && !st.installed():
			parts = append(parts, f.label()+" has none of relayfw's rules any more")
		case before.plans != nil && len(f.drift(st, before.plans[f])) == 0:
			parts = append(parts, f.label()+" has the new rules")
		default:
			parts = append(parts, f.label()+" has neither the old rules nor the new ones")
		}
	}
	now, err := b.ipset.owned(ctx)
	switch back, gone := ipsetRollback(before.sets, now, 0); {
	case err != nil:
		parts = append(parts, fmt.Sprintf("the ipsets: unknown (%v)", err))
	case back == "" && gone == "":
		parts = append(parts, "the ipsets are as before this "+before.op)
	default:
		parts = append(parts, "the ipsets are not as before this "+before.op)
	}
	return strings.Join(parts, ", ")
}

// sameState reports whether two states of a family hold the same chains,
// rules and jumps.
func sameState(a, b state) bool {
	return maps.EqualFunc(a.chains, b.chains, slices.Equal) && maps.EqualFunc(a.jumps, b.jumps, slices.Equal)
}

// rollbackScript is the iptables-restore --noflush input that turns the
// family's state cur back into old: old's chains with exactly their
// lines (hand-made ones included), cur's chains that old lacks deleted,
// and the jumps where old had them; "" when cur is old.
func rollbackScript(old, cur state) string {
	if sameState(old, cur) {
		return ""
	}
	var b strings.Builder
	b.WriteString("*filter\n")
	var gone []string
	for _, c := range ownedChains {
		if old.has(c) {
			fmt.Fprintf(&b, ":%s - [0:0]\n", c) // with --noflush: created, or emptied
		} else if cur.has(c) {
			gone = append(gone, c)
		}
	}
	b.WriteString(deleteJumpsScript(cur))
	b.WriteString(deleteChainsScript(cur, gone...))
	for _, c := range ownedChains {
		for _, l := range old.chains[c] {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	for _, h := range hooks {
		// The built-in chain's own rules, once relayfw's jumps are gone;
		// each old jump goes back where it was among them (at the end,
		// should the chain have fewer rules now).
		n := cur.rules[h.from] - len(cur.jumps[h.from])
		for _, pos := range old.jumps[h.from] {
			fmt.Fprintf(&b, "-I %s %d -j %s\n", h.from, min(pos, n)+1, h.to)
			n++
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// ipsetRollback compares relayfw's sets now with those before an apply.
// back is the ipset restore input that brings back every set before had
// (created again, or swapped back to its old parameters and entries);
// gone destroys the sets before did not have. Both are "" when the sets
// are as they were. The temporary set of a swap that an earlier run left
// is not brought back.
//
// A set with timeouts (blocked sources) gets its old parameters and the
// entries both versions hold, each with the longest time it has left
// (the old ones aged by elapsed), at most the old timeout: a source
// blocked while the apply ran stays blocked.
func ipsetRollback(before, now map[string]*installedIpset, elapsed time.Duration) (back, gone string) {
	temporary := map[string]bool{}
	for name := range before {
		temporary[tmpName(name)] = true
	}
	var b, g strings.Builder
	for _, name := range slices.Sorted(maps.Keys(before)) {
		h, n := before[name], now[name]
		if temporary[name] || n != nil && sameIpset(h, n) {
			continue
		}
		b.WriteString(replaceScript(oldIpset(name, h, n, elapsed), n != nil))
	}
	for _, name := range slices.Sorted(maps.Keys(now)) {
		if before[name] == nil {
			fmt.Fprintf(&g, "destroy %s\n", name)
		}
	}
	return b.String(), g.String()
}

// setParams are the create parameters relayfw sets and compares.
var setParams = []string{"family", "maxelem", "netmask", "timeout"}

// sameIpset reports whether two versions of a set have the same type and
// parameters and, unless its entries time out (the kernel's), the same
// entries.
func sameIpset(a, b *installedIpset) bool {
	if a.typ != b.typ {
		return false
	}
	for _, k := range setParams {
		if a.params[k] != b.params[k] {
			return false
		}
	}
	return a.params["timeout"] != "" || slices.Equal(a.entries, b.entries)
}

// oldIpset is the set as it was (h), to create or swap in; n is the set
// now, if there is one.
func oldIpset(name string, h, n *installedIpset, elapsed time.Duration) ipset {
	num := func(k string) uint {
		v, _ := strconv.ParseUint(h.params[k], 10, 32)
		return uint(v)
	}
	s := ipset{name: name, typ: h.typ, v6: h.params["family"] == "inet6", entries: h.entries,
		maxelem: num("maxelem"), timeout: num("timeout"), netmask: int(num("netmask"))}
	if s.timeout == 0 {
		return s
	}
	aged := uint64((elapsed + time.Second - 1) / time.Second)
	left := map[netip.Addr]uint64{}
	keep := func(entries []string, minus uint64) {
		for _, e := range entries {
			if a, l, ok := timedEntry(e); ok && l > minus {
				left[a] = max(left[a], l-minus)
			}
		}
	}
	keep(h.entries, aged)
	if n != nil {
		keep(n.entries, 0)
	}
	var entries []string
	for a, l := range left {
		entries = append(entries, fmt.Sprintf("%s timeout %d", a, l))
	}
	slices.Sort(entries)
	s.entries = carriedOver(entries, s.timeout)
	return s
}
