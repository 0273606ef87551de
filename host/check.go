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
	// asInstalled is rs with the kernel's relay links (asInstalled).
	asInstalled rules.Ruleset
	kind        string
}

// NewPlan reads what an apply of rs with b would start from.
func (s *System) NewPlan(ctx context.Context, b firewall.Backend, rs rules.Ruleset) (*Plan, error) {
	p := &Plan{rs: rs, kind: Kind(b)}
	var err error
	if p.Installed, err = b.Installed(ctx); err != nil || !p.Installed {
		return p, err
	}
	if st, ok := s.ReadState(); ok && st.Backend == Kind(b) {
		p.Prev, _ = LoadRuleset(s.AppliedRulesetPath())
	}
	installed, err := b.RelayLinks(ctx, rs)
	if err != nil {
		return nil, err
	}
	p.asInstalled, p.Links = asInstalled(rs, installed)
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
func (s *System) PlanChanges(ctx context.Context, b firewall.Backend, rs rules.Ruleset) ([]string, error) {
	p, err := s.NewPlan(ctx, b, rs)
	if err != nil {
		return nil, err
	}
	if !p.Installed {
		return p.Changes(nil), nil
	}
	drift, err := b.Check(ctx, p.asInstalled)
	if err != nil {
		return nil, err
	}
	return p.Changes(drift), nil
}

// withoutLinkDrift drops the drift lines about the relay sets' elements:
// Plan counts those itself.
func withoutLinkDrift(drift []string, rs rules.Ruleset) []string {
	names := make([]string, 0, len(rs.Sets)+2)
	for _, s := range rs.Sets {
		names = append(names, s.Name)
	}
	if rs.Inbound != nil {
		names = append(names, rules.InboundSetName("trust", rules.IPv4), rules.InboundSetName("trust", rules.IPv6))
	}
	var out []string
	for _, d := range drift {
		link := false
		for _, name := range names {
			link = link || (strings.Contains(d, name+":") && (strings.Contains(d, "elements") || strings.Contains(d, "entries")))
		}
		if !link {
			out = append(out, d)
		}
	}
	return out
}

// asInstalled is rs with the sets that follow the consensus — the relay
// links and the inbound protection's trusted sources — as the kernel holds
// them (installed, from Backend.RelayLinks), and how far those are behind
// rs. A set the kernel does not have stays as in rs: its absence is drift.
func asInstalled(rs rules.Ruleset, installed map[string][]rules.Region) (rules.Ruleset, LinksBehind) {
	var behind LinksBehind
	out := rs
	out.Sets = slices.Clone(rs.Sets)
	for i, s := range out.Sets {
		have, ok := installed[s.Name]
		if !ok {
			continue
		}
		m, e := rules.DiffRegions(s.Elements, have)
		behind.Missing += m
		behind.Extra += e
		out.Sets[i].Elements = have
	}
	if rs.Inbound == nil {
		return out, behind
	}
	in := *rs.Inbound
	for _, fam := range []rules.Family{rules.IPv4, rules.IPv6} {
		have, ok := installed[rules.InboundSetName("trust", fam)]
		if !ok {
			continue
		}
		var want []rules.Region
		for _, r := range rules.Ranges(rs.Inbound.TrustedOf(fam)) {
			want = append(want, rules.Region{AddrFirst: r.First, AddrLast: r.Last})
		}
		m, e := rules.DiffRegions(want, have)
		behind.Missing += m
		behind.Extra += e
		ranges := make([]rules.AddrRange, len(have))
		for i, r := range have {
			ranges[i] = rules.AddrRange{First: r.AddrFirst, Last: r.AddrLast}
		}
		in = in.WithTrustedRanges(fam, ranges)
	}
	out.Inbound = &in
	return out, behind
}

// withoutLinks drops Changes' relay-link lines: the kernel's own sets are
// what apply compares (refresh changes them between applies).
func withoutLinks(changes []string) []string {
	out := changes[:0:0]
	for _, c := range changes {
		if !strings.HasPrefix(c, "relay links ") && !strings.HasPrefix(c, "inbound trusted: ") {
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
	installed, err := b.RelayLinks(ctx, rs)
	if err != nil {
		return nil, LinksBehind{}, err
	}
	asInstalled, behind := asInstalled(rs, installed)
	drift, err := b.Check(ctx, asInstalled)
	return drift, behind, err
}
