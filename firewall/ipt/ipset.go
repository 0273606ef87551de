package ipt

import (
	"fmt"
	"os/exec"
	"slices"
	"strings"

	"github.com/relayfw/relayfw/rules"
)

// Sets without intervals (relay links: address . port points) become
// ipsets of type hash:ip,port, matched with -m set; a consensus has
// thousands of relays, which as rules would be walked one by one.

// ipsetName is the ipset holding a ruleset set.
func ipsetName(set string) string { return "relayfw-" + set }

// ipsetMaxElem leaves room for a consensus several times today's size.
const ipsetMaxElem = 262144

// pointSets are the ruleset's sets without intervals, for one family.
func pointSets(rs rules.Ruleset, v6 bool) []rules.Set {
	var out []rules.Set
	for _, s := range rs.Sets {
		if !s.Interval && (s.Family == rules.IPv6) == v6 {
			out = append(out, s)
		}
	}
	return out
}

// ipsetEntries are the set's elements as ipset save prints them, sorted.
func ipsetEntries(s rules.Set) []string {
	out := make([]string, 0, len(s.Elements))
	for _, e := range s.Elements {
		out = append(out, fmt.Sprintf("%s,tcp:%d", e.AddrFirst, e.Ports.First))
	}
	slices.Sort(out)
	return out
}

// ipsets runs the ipset command.
type ipsets struct{ path string }

// entries returns the set's entries (sorted), or exists=false.
func (x ipsets) entries(name string) (entries []string, exists bool, err error) {
	out, err := runTool("ipset", "", x.path, "save", name)
	if stderrSays(err, "does not exist") {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	for _, l := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(l, "add "+name+" "); ok {
			entries = append(entries, rest)
		}
	}
	slices.Sort(entries)
	return entries, true, nil
}

// replaceScript fills a fresh temporary set and swaps it in: the live set
// changes in one step.
func replaceScript(name string, v6 bool, entries []string) string {
	family := "inet"
	if v6 {
		family = "inet6"
	}
	tmp := name + "-new"
	var b strings.Builder
	fmt.Fprintf(&b, "create %s hash:ip,port family %s maxelem %d -exist\n", name, family, ipsetMaxElem)
	fmt.Fprintf(&b, "create %s hash:ip,port family %s maxelem %d -exist\n", tmp, family, ipsetMaxElem)
	fmt.Fprintf(&b, "flush %s\n", tmp)
	for _, e := range entries {
		fmt.Fprintf(&b, "add %s %s\n", tmp, e)
	}
	fmt.Fprintf(&b, "swap %s %s\n", tmp, name)
	fmt.Fprintf(&b, "destroy %s\n", tmp)
	return b.String()
}

func (x ipsets) restore(script string) error {
	_, err := runTool("ipset", script, x.path, "restore")
	return err
}

func (x ipsets) destroy(name string) error {
	out, err := exec.Command(x.path, "destroy", name).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "does not exist") {
		return fmt.Errorf("ipset destroy %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// setDrift compares one set; added and removed count the entries a
// replacement changes.
func (x ipsets) setDrift(s rules.Set, v6 bool) (drift []string, added, removed int, err error) {
	name := ipsetName(s.Name)
	want := ipsetEntries(s)
	have, exists, err := x.entries(name)
	if err != nil {
		return nil, 0, 0, err
	}
	if !exists {
		return []string{fmt.Sprintf("ipset %s is missing", name)}, len(want), 0, nil
	}
	for i, j := 0, 0; i < len(want) || j < len(have); {
		switch {
		case j == len(have) || (i < len(want) && want[i] < have[j]):
			added++
			i++
		case i == len(want) || have[j] < want[i]:
			removed++
			j++
		default:
			i++
			j++
		}
	}
	if added > 0 {
		drift = append(drift, fmt.Sprintf("ipset %s: %d entries missing", name, added))
	}
	if removed > 0 {
		drift = append(drift, fmt.Sprintf("ipset %s: %d unexpected entries", name, removed))
	}
	return drift, added, removed, nil
}
