package host

import (
	"context"
	"fmt"
	"slices"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/ruleset"
)

// Plan is what an apply of rs with b starts from, read before it: whether
// relayfw's firewall is installed there, the ruleset relayfw last installed
// (when it was this backend), and how far the kernel's relay links are from
// rs's. It reads the kernel's relay sets, not its whole table.
type Plan struct {
	Installed bool
	Prev      ruleset.Ruleset // Version 0 when unknown
	Links     LinksBehind
	rs        ruleset.Ruleset
	// asInstalled is rs with the kernel's relay links (asInstalled).
	asInstalled ruleset.Ruleset
	kind        string
	// holds, when not nil: the kernel holds rs, as the record of
	// relayfw's last change says (KernelHolds).
	holds *kernelFinding
}

// kernelFinding is KernelHolds' finding: at generation gen, the kernel held
// the plan's ruleset, which an apply would count as res.
type kernelFinding struct {
	gen uint32
	res firewall.Result
}

// stillHolds is the finding of the plan, when the kernel's generation has
// not changed since it was made (then the plan is all an apply of its
// ruleset needs).
func (p *Plan) stillHolds(ctx context.Context, b firewall.Backend) (firewall.Result, bool) {
	if p.holds == nil {
		return firewall.Result{}, false
	}
	gen, ok := generation(ctx, b)
	return p.holds.res, ok && gen == p.holds.gen
}

// NewPlan reads what an apply of rs with b would start from.
func (s *System) NewPlan(ctx context.Context, b firewall.Backend, rs ruleset.Ruleset) (*Plan, error) {
	p := &Plan{rs: rs, kind: Kind(b)}
	if res, gen, ok := s.kernelHolds(ctx, b, rs); ok {
		p.Installed, p.Prev, p.asInstalled, p.holds = true, rs, rs, &kernelFinding{gen, res}
		return p, nil
	}
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

// Changes says what the apply changes, in an operator's terms: ruleset.Changes
// against the ruleset relayfw last installed (everything, on a first apply
// or after another backend), the relay links against the kernel's, and,
// from drift (the kernel's differences from rs, as Check or the backend's
// Apply found them), the rules in relayfw's chains it did not install,
// which the apply removes, and any other repair nothing else explains.
func (p *Plan) Changes(drift []firewall.Drift) []string {
	if !p.Installed {
		changes := append([]string{fmt.Sprintf("+ firewall: installed for the first time (%s)", p.kind)},
			changesBesideLinks(ruleset.Ruleset{}, p.rs)...)
		links := 0
		for _, s := range p.rs.Sets {
			links += len(s.Elements)
		}
		return append(changes, fmt.Sprintf("relay links: +%d -0", links))
	}
	changes := changesBesideLinks(p.Prev, p.rs)
	if p.Links.Total() > 0 {
		changes = append(changes, fmt.Sprintf("relay links: +%d -%d", p.Links.Missing, p.Links.Extra))
	}
	drift = withoutLinkDrift(drift)
	for _, d := range drift {
		if d.Kind == firewall.RuleUnexpected && d.Foreign {
			changes = append(changes, "- not relayfw's, removed: "+d.String())
		}
	}
	if len(changes) == 0 {
		for _, d := range drift { // a hand edit nothing else explains
			changes = append(changes, "~ repair: "+d.String())
		}
	}
	return changes
}

// PlanChanges is a dry run: what applying rs with b would change.
func (s *System) PlanChanges(ctx context.Context, b firewall.Backend, rs ruleset.Ruleset) ([]string, error) {
	p, err := s.NewPlan(ctx, b, rs)
	if err != nil {
		return nil, err
	}
	switch {
	case p.holds != nil:
		return nil, nil
	case !p.Installed:
		return p.Changes(nil), nil
	}
	drift, err := b.Check(ctx, p.asInstalled)
	if err != nil {
		return nil, err
	}
	return p.Changes(drift), nil
}

// withoutLinkDrift drops the drift in the elements of the sets that
// follow the consensus: Plan counts those itself.
func withoutLinkDrift(drift []firewall.Drift) []firewall.Drift {
	var out []firewall.Drift
	for _, d := range drift {
		if !d.Links {
			out = append(out, d)
		}
	}
	return out
}

// asInstalled is rs with the sets that follow the consensus — the relay
// links and the inbound protection's trusted sources — as the kernel holds
// them (installed, from Backend.RelayLinks), and how far those are behind
// rs. A set the kernel does not have stays as in rs: its absence is drift.
func asInstalled(rs ruleset.Ruleset, installed map[string][]ruleset.Region) (ruleset.Ruleset, LinksBehind) {
	var behind LinksBehind
	out := rs
	out.Sets = slices.Clone(rs.Sets)
	var in ruleset.Inbound
	if rs.Inbound != nil {
		in = *rs.Inbound
	}
	for _, ls := range rs.LinkSets() {
		have, ok := installed[ls.Name]
		if !ok {
			continue
		}
		m, e := ruleset.DiffRegions(ls.Want, have)
		behind.Missing += m
		behind.Extra += e
		if !ls.Trusted {
			i := slices.IndexFunc(out.Sets, func(s ruleset.Set) bool { return s.Name == ls.Name })
			out.Sets[i].Elements = have
			continue
		}
		ranges := make([]ruleset.AddrRange, len(have))
		for i, r := range have {
			ranges[i] = ruleset.AddrRange{First: r.AddrFirst, Last: r.AddrLast}
		}
		in = in.WithTrustedRanges(ls.Family, ranges)
	}
	if rs.Inbound != nil {
		out.Inbound = &in
	}
	return out, behind
}

// changesBesideLinks is ruleset.Changes but for the sets that follow the
// consensus: the kernel's own sets are what apply compares (refresh
// changes them between applies).
func changesBesideLinks(prev, next ruleset.Ruleset) []string {
	for _, rs := range []*ruleset.Ruleset{&prev, &next} {
		rs.Sets = slices.Clone(rs.Sets)
		for i := range rs.Sets {
			rs.Sets[i].Elements = nil
		}
	}
	if prev.Inbound != nil && next.Inbound != nil {
		in := *prev.Inbound
		in.Trusted = next.Inbound.Trusted
		prev.Inbound = &in
	}
	return ruleset.Changes(prev, next)
}

// LinksBehind is how far the installed relay links are from the cached
// consensus.
type LinksBehind struct{ Missing, Extra int }

// Total counts both directions.
func (l LinksBehind) Total() int { return l.Missing + l.Extra }

// Check compares the kernel with rs: the drift of everything but the
// relay links' elements, and how far the relay links are behind (a new
// consensus that refresh has not installed yet is not drift).
func Check(ctx context.Context, b firewall.Backend, rs ruleset.Ruleset) ([]firewall.Drift, LinksBehind, error) {
	installed, err := b.RelayLinks(ctx, rs)
	if err != nil {
		return nil, LinksBehind{}, err
	}
	asInstalled, behind := asInstalled(rs, installed)
	drift, err := b.Check(ctx, asInstalled)
	return drift, behind, err
}

// Check is Check on s, without reading the table when the record of
// relayfw's last change says the kernel holds rs (KernelHolds).
func (s *System) Check(ctx context.Context, b firewall.Backend, rs ruleset.Ruleset) ([]firewall.Drift, LinksBehind, error) {
	if _, ok := s.KernelHolds(ctx, b, rs); ok {
		return nil, LinksBehind{}, nil
	}
	return Check(ctx, b, rs)
}
