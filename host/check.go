package host

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/rules"
)

// PlanChanges says what applying rs with b would change, in an operator's
// terms: rules.Changes against the ruleset relayfw last installed there
// (nothing, on a first apply or after another backend), the relay links
// against the kernel's, and the kernel's drift that the ruleset does not
// explain — rules in relayfw's chains it did not install are removed.
func PlanChanges(ctx context.Context, b firewall.Backend, rs rules.Ruleset) ([]string, error) {
	installed, err := b.Installed(ctx)
	if err != nil {
		return nil, err
	}
	if !installed {
		changes := append([]string{fmt.Sprintf("+ firewall: installed for the first time (%s)", Kind(b))},
			withoutLinks(rules.Changes(rules.Ruleset{}, rs))...)
		links := 0
		for _, s := range rs.Sets {
			links += len(s.Elements)
		}
		return append(changes, fmt.Sprintf("relay links: +%d -0", links)), nil
	}
	var prev rules.Ruleset
	if st, ok := ReadState(); ok && st.Backend == Kind(b) {
		prev, _ = LoadRuleset(AppliedRulesetPath())
	}
	changes := rules.Changes(prev, rs)
	drift, behind, err := Check(ctx, b, rs)
	if err != nil {
		return nil, err
	}
	changes = withoutLinks(changes)
	if behind.Total() > 0 {
		changes = append(changes, fmt.Sprintf("relay links: +%d -%d", behind.Missing, behind.Extra))
	}
	// What relayfw did not install: against the ruleset it did install,
	// every difference is someone else's; without it, the rules that are
	// not relayfw's by their comment.
	foreign := drift
	if prev.Version != 0 {
		asInstalled, err := withKernelLinks(ctx, b, prev)
		if err != nil {
			return nil, err
		}
		if foreign, err = b.Check(ctx, asInstalled); err != nil {
			return nil, err
		}
	}
	for _, d := range foreign {
		unexpected := strings.Contains(d, "unexpected rule")
		switch {
		case unexpected && (prev.Version != 0 || !strings.Contains(d, `"`+"relayfw: ")):
			changes = append(changes, "- not relayfw's, removed: "+d)
		case prev.Version != 0:
			changes = append(changes, "~ repair: "+d)
		}
	}
	if len(changes) == 0 && len(drift) > 0 {
		for _, d := range drift { // nothing else explains it
			changes = append(changes, "~ repair: "+d)
		}
	}
	return changes, nil
}

// withKernelLinks is rs with the relay sets as the kernel holds them.
func withKernelLinks(ctx context.Context, b firewall.Backend, rs rules.Ruleset) (rules.Ruleset, error) {
	installed, err := b.RelayLinks(ctx, rs)
	if err != nil {
		return rs, err
	}
	out := rs
	out.Sets = slices.Clone(rs.Sets)
	for i, s := range out.Sets {
		if have, ok := installed[s.Name]; ok {
			out.Sets[i].Elements = have
		}
	}
	return out, nil
}

// withoutLinks drops Changes' relay-link lines: the kernel's own sets are
// what apply compares (refresh changes them between applies).
func withoutLinks(changes []string) []string {
	out := changes[:0:0]
	for _, c := range changes {
		if !strings.HasPrefix(c, "relay links ") {
			out = append(out, c)
		}
	}
	return out
}

// LinksBehind is how far the installed relay links are from the cached
// consensus.
type LinksBehind struct{ Missing, Extra int }

// Total counts both directions.
func (l LinksBehind) Total() int { return l.Missing + l.Extra }

// Check compares the kernel with rs: the drift of everything but the
// relay links' elements, and how far the relay links are behind (a new
// consensus that refresh has not installed yet is not drift).
func Check(ctx context.Context, b firewall.Backend, rs rules.Ruleset) ([]string, LinksBehind, error) {
	var behind LinksBehind
	installed, err := b.RelayLinks(ctx, rs)
	if err != nil {
		return nil, behind, err
	}
	asInstalled := rs
	asInstalled.Sets = slices.Clone(rs.Sets)
	for i, s := range asInstalled.Sets {
		have, ok := installed[s.Name]
		if !ok {
			continue // a missing set is drift
		}
		want := slices.Clone(s.Elements)
		slices.SortFunc(have, compareRegions)
		slices.SortFunc(want, compareRegions)
		for i, j := 0, 0; i < len(want) || j < len(have); {
			switch c := 0; {
			case j == len(have):
				behind.Missing++
				i++
			case i == len(want):
				behind.Extra++
				j++
			default:
				if c = compareRegions(want[i], have[j]); c < 0 {
					behind.Missing++
					i++
				} else if c > 0 {
					behind.Extra++
					j++
				} else {
					i++
					j++
				}
			}
		}
		asInstalled.Sets[i].Elements = have
	}
	drift, err := b.Check(ctx, asInstalled)
	return drift, behind, err
}

func compareRegions(a, b rules.Region) int {
	if c := a.AddrFirst.Compare(b.AddrFirst); c != 0 {
		return c
	}
	return int(a.Ports.First) - int(b.Ports.First)
}
