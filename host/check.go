package host

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/rules"
)

// Plan is what an apply of rs with b starts from, read before it: whether
// relayfw's firewall is installed there, the ruleset relayfw last installed
// (when it was this backend), and how far the kernel's relay links are from
// rs's. It reads the kernel's relay sets, not its whole table.
type Plan struct {
	Installed bool
	Prev      rules.Ruleset // Version 0 when unknown
	Links     LinksBehind
	rs        rules.Ruleset
	kind      string
}

// NewPlan reads what an apply of rs with b would start from.
func NewPlan(ctx context.Context, b firewall.Backend, rs rules.Ruleset) (*Plan, error) {
	p := &Plan{rs: rs, kind: Kind(b)}
	var err error
	if p.Installed, err = b.Installed(ctx); err != nil || !p.Installed {
		return p, err
	}
	if st, ok := ReadState(); ok && st.Backend == Kind(b) {
		p.Prev, _ = LoadRuleset(AppliedRulesetPath())
	}
	installed, err := b.RelayLinks(ctx, rs)
	if err != nil {
		return nil, err
	}
	for _, s := range rs.Sets {
		if have, ok := installed[s.Name]; ok {
			m, e := rules.DiffRegions(s.Elements, have)
			p.Links.Missing += m
			p.Links.Extra += e
		}
	}
	return p, nil
}

// Changes says what the apply changes, in an operator's terms: rules.Changes
// against the ruleset relayfw last installed (everything, on a first apply
// or after another backend), the relay links against the kernel's, and,
// from drift (the kernel's differences from rs, as Check or the backend's
// Apply found them), the rules in relayfw's chains it did not install,
// which the apply removes, and any other repair nothing else explains.
func (p *Plan) Changes(drift []string) []string {
	if !p.Installed {
		changes := append([]string{fmt.Sprintf("+ firewall: installed for the first time (%s)", p.kind)},
			withoutLinks(rules.Changes(rules.Ruleset{}, p.rs))...)
		links := 0
		for _, s := range p.rs.Sets {
			links += len(s.Elements)
		}
		return append(changes, fmt.Sprintf("relay links: +%d -0", links))
	}
	changes := withoutLinks(rules.Changes(p.Prev, p.rs))
	if p.Links.Total() > 0 {
		changes = append(changes, fmt.Sprintf("relay links: +%d -%d", p.Links.Missing, p.Links.Extra))
	}
	drift = withoutLinkDrift(drift, p.rs)
	for _, d := range drift {
		if strings.Contains(d, "unexpected rule") && !strings.Contains(d, `"`+"relayfw: ") {
			changes = append(changes, "- not relayfw's, removed: "+d)
		}
	}
	if len(changes) == 0 {
		for _, d := range drift { // a hand edit nothing else explains
			changes = append(changes, "~ repair: "+d)
		}
	}
	return changes
}

// PlanChanges is a dry run: what applying rs with b would change.
func PlanChanges(ctx context.Context, b firewall.Backend, rs rules.Ruleset) ([]string, error) {
	p, err := NewPlan(ctx, b, rs)
	if err != nil || !p.Installed {
		return p.Changes(nil), err
	}
	asInstalled, err := withKernelLinks(ctx, b, rs)
	if err != nil {
		return nil, err
	}
	drift, err := b.Check(ctx, asInstalled)
	if err != nil {
		return nil, err
	}
	return p.Changes(drift), nil
}

// withoutLinkDrift drops the drift lines about the relay sets' elements:
// Plan counts those itself.
func withoutLinkDrift(drift []string, rs rules.Ruleset) []string {
	var out []string
	for _, d := range drift {
		link := false
		for _, s := range rs.Sets {
			link = link || (strings.Contains(d, s.Name+":") && (strings.Contains(d, "elements") || strings.Contains(d, "entries")))
		}
		if !link {
			out = append(out, d)
		}
	}
	return out
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
		m, e := rules.DiffRegions(s.Elements, have)
		behind.Missing += m
		behind.Extra += e
		asInstalled.Sets[i].Elements = have
	}
	drift, err := b.Check(ctx, asInstalled)
	return drift, behind, err
}
