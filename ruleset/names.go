package ruleset

import "strings"

// CommentPrefix starts the comment of every kernel object relayfw owns
// ("relayfw: <rule name>"): how backends and check tell relayfw's rules
// from anyone else's.
const CommentPrefix = "relayfw: "

// RelayLinkSetName names the relay-link set of a family: "relays4" or
// "relays6".
func RelayLinkSetName(fam Family) string { return "relays" + suffix(fam) }

// RuleName is the name of a rule relayfw generated, from its comment;
// false for a comment relayfw did not write.
func RuleName(comment string) (string, bool) {
	return strings.CutPrefix(comment, CommentPrefix)
}

// LinkSet is a set of the ruleset whose contents follow the consensus:
// relay links ((address, port) points of rs.Sets) or, with inbound
// protection, a family's trusted sources (address ranges, no ports).
// Refresh brings these up to date between applies; every other object
// changes only with an apply.
type LinkSet struct {
	// Name is the ruleset's name of the set (a backend may name its own
	// object otherwise, e.g. ipset relayfw-relays4).
	Name    string
	Family  Family
	Trusted bool
	// Want is what rs puts in it.
	Want []Region
}

// LinkSets are the sets of rs that follow the consensus, relay links
// first.
func (rs Ruleset) LinkSets() []LinkSet {
	var out []LinkSet
	for _, s := range rs.Sets {
		out = append(out, LinkSet{Name: s.Name, Family: s.Family, Want: s.Elements})
	}
	if rs.Inbound == nil {
		return out
	}
	for _, fam := range []Family{IPv4, IPv6} {
		var want []Region
		for _, r := range Ranges(rs.Inbound.TrustedOf(fam)) {
			want = append(want, Region{AddrFirst: r.First, AddrLast: r.Last})
		}
		out = append(out, LinkSet{Name: InboundSetName("trust", fam), Family: fam, Trusted: true, Want: want})
	}
	return out
}

// IsLinkSet reports whether name is one of rs's sets that follow the
// consensus.
func (rs Ruleset) IsLinkSet(name string) bool {
	for _, s := range rs.LinkSets() {
		if s.Name == name {
			return true
		}
	}
	return false
}
