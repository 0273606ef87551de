package host

import (
	"fmt"
	"strings"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/ruleset"
)

// ExtraReapply decides what refresh does about allow.extra's host names,
// which it resolves again (an answer can change, and a boot-time apply
// may have run before the network was up): reapply is true when they now
// resolve to other addresses than in the ruleset relayfw last applied
// with b and nothing else differs but the sets that follow the consensus,
// so that applying rs replaces just those rules. It is false, with a
// warning, when a name did not resolve (what is installed stays) or when
// other inputs changed since that apply too (apply is the operator's).
func (in *Inputs) ExtraReapply(b firewall.Backend, rs ruleset.Ruleset) (reapply bool, warning string) {
	names, unresolved := in.ExtraNames()
	if names == 0 {
		return false, ""
	}
	st, ok := in.sys.ReadState()
	if !ok || st.Backend != Kind(b) {
		return false, ""
	}
	prev, err := LoadRuleset(in.sys.AppliedRulesetPath())
	if err != nil {
		return false, ""
	}
	extraSame, restSame := compareExtra(prev, rs)
	switch {
	case extraSame:
		return false, ""
	case unresolved > 0:
		return false, fmt.Sprintf("allow.extra: %d of %d host names did not resolve; the installed allowances stay as they are", unresolved, names)
	case !restSame:
		return false, "allow.extra: host names resolve to other addresses than at the last apply, but other inputs changed too: relayfw apply installs both"
	}
	return true, ""
}

// compareExtra compares two rulesets' allow.extra rules (named extra-…),
// and the rest but for the sets that follow the consensus.
func compareExtra(prev, next ruleset.Ruleset) (extraSame, restSame bool) {
	pe, pr := splitExtra(prev)
	ne, nr := splitExtra(next)
	return len(ruleset.Changes(pe, ne)) == 0, len(changesBesideLinks(pr, nr)) == 0
}

// splitExtra parts rs into its allow.extra rules and the rest.
func splitExtra(rs ruleset.Ruleset) (extra, rest ruleset.Ruleset) {
	rest = rs
	rest.Outbound = nil
	for _, r := range rs.Outbound {
		if strings.HasPrefix(r.Name, "extra-") {
			extra.Outbound = append(extra.Outbound, r)
		} else {
			rest.Outbound = append(rest.Outbound, r)
		}
	}
	return extra, rest
}
