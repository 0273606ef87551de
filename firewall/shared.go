package firewall

import (
	"errors"
	"fmt"
	"strings"

	"github.com/relayfw/relayfw/rules"
)

// CommentPrefix starts the comment of every rule relayfw generates; the
// rest of the comment is the rule's name (rules.Rule.Name).
const CommentPrefix = "relayfw: "

// RuleName is the name of a rule relayfw generated, from its comment;
// false for a comment relayfw did not write.
func RuleName(comment string) (string, bool) {
	return strings.CutPrefix(comment, CommentPrefix)
}

// CheckRule refuses what no backend installs though the ruleset's
// Validate lets it pass: an output interface but lo, a source that is not
// one address, a source port that is not one port, or one that goes with
// several destination ports.
func CheckRule(r rules.Rule) error {
	if r.OutIface != "" && r.OutIface != "lo" {
		return fmt.Errorf("output interface %q: only lo is supported", r.OutIface)
	}
	for _, p := range r.SrcAddrs {
		if !p.IsSingleIP() {
			return fmt.Errorf("source %s: only single addresses are supported", p)
		}
	}
	switch {
	case len(r.SrcPorts) == 0:
		return nil
	case len(r.SrcPorts) > 1 || r.SrcPorts[0].First != r.SrcPorts[0].Last || r.SrcPorts[0].First == 0:
		return errors.New("sport: only one single port is supported")
	case len(r.DstPorts) > 1 || len(r.DstPorts) == 1 && r.DstPorts[0].First != r.DstPorts[0].Last:
		return errors.New("a source port goes with one single destination port")
	}
	return nil
}

// LinkSet is a set of the ruleset whose contents follow the consensus:
// relay links ((address, port) points of rs.Sets) or, with inbound
// protection, a family's trusted sources (address ranges, no ports).
// Refresh brings these up to date between applies, and RelayLinks reads
// them back.
type LinkSet struct {
	// Name is the ruleset's name of the set (a backend may name its own
	// object otherwise, e.g. ipset relayfw-relays4).
	Name    string
	Family  rules.Family
	Trusted bool
	// Want is what rs puts in it.
	Want []rules.Region
}

// LinkSets are the sets of rs that follow the consensus, relay links
// first.
func LinkSets(rs rules.Ruleset) []LinkSet {
	var out []LinkSet
	for _, s := range rs.Sets {
		out = append(out, LinkSet{Name: s.Name, Family: s.Family, Want: s.Elements})
	}
	if rs.Inbound == nil {
		return out
	}
	for _, fam := range []rules.Family{rules.IPv4, rules.IPv6} {
		var want []rules.Region
		for _, r := range rules.Ranges(rs.Inbound.TrustedOf(fam)) {
			want = append(want, rules.Region{AddrFirst: r.First, AddrLast: r.Last})
		}
		out = append(out, LinkSet{Name: rules.InboundSetName("trust", fam), Family: fam, Trusted: true, Want: want})
	}
	return out
}

// IsLinkSet reports whether name is one of rs's sets that follow the
// consensus.
func IsLinkSet(rs rules.Ruleset, name string) bool {
	for _, s := range LinkSets(rs) {
		if s.Name == name {
			return true
		}
	}
	return false
}

// ReadLinks is RelayLinks for a backend that reads one set at a time:
// read returns the installed contents of a set, or ok false when the
// backend does not hold it (or holds it as another type); such a set is
// absent from the result.
func ReadLinks(rs rules.Ruleset, read func(LinkSet) (regions []rules.Region, ok bool, err error)) (map[string][]rules.Region, error) {
	out := map[string][]rules.Region{}
	for _, s := range LinkSets(rs) {
		regions, ok, err := read(s)
		if err != nil {
			return nil, err
		}
		if ok {
			out[s.Name] = append([]rules.Region{}, regions...)
		}
	}
	return out, nil
}

// Count adds a rule's packet and byte counts to sums under its name, read
// from its comment; a rule whose comment relayfw did not write is left
// out.
func Count(sums map[string]Counter, comment string, packets, bytes uint64) {
	name, ok := RuleName(comment)
	if !ok {
		return
	}
	sum := sums[name]
	sum.Packets += packets
	sum.Bytes += bytes
	sums[name] = sum
}
