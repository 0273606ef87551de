package firewall

import (
	"github.com/relayfw/relayfw/ruleset"
)

// ReadLinks is RelayLinks for a backend that reads one set at a time:
// read returns the installed contents of a set, or ok false when the
// backend does not hold it (or holds it as another type); such a set is
// absent from the result.
func ReadLinks(rs ruleset.Ruleset, read func(ruleset.LinkSet) (regions []ruleset.Region, ok bool, err error)) (map[string][]ruleset.Region, error) {
	out := map[string][]ruleset.Region{}
	for _, s := range rs.LinkSets() {
		regions, ok, err := read(s)
		if err != nil {
			return nil, err
		}
		if ok {
			out[s.Name] = append([]ruleset.Region{}, regions...)
		}
	}
	return out, nil
}

// Count adds a rule's packet and byte counts to sums under its name, read
// from its comment; a rule whose comment relayfw did not write is left
// out.
func Count(sums map[string]Counter, comment string, packets, bytes uint64) {
	name, ok := ruleset.RuleName(comment)
	if !ok {
		return
	}
	sum := sums[name]
	sum.Packets += packets
	sum.Bytes += bytes
	sums[name] = sum
}
