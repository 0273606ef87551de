package firewall

import (
	"fmt"
	"strings"
)

// Drift is one difference between what the kernel holds and the ruleset,
// as a backend's Check (or Apply, before it repairs it) finds it. Its
// text, the one check, apply --dry-run and status print, is String's.
type Drift struct {
	// Scope is the part of the backend the object is in, for a backend
	// of several ("iptables", "ip6tables"); empty for the whole.
	Scope string
	// Object is what differs, as the backend names it: "table inet
	// relayfw", "chain output", "set relays4", "map exit4", "ipset
	// relayfw-relays4", "OUTPUT". Empty for a rule whose own text names
	// its chain (iptables' -A lines).
	Object string
	Kind   DriftKind
	// N is the number of elements (ElementsMissing, ElementsUnexpected)
	// or the rule's position, from 1 (RuleMissing, RuleUnexpected,
	// RulesReordered).
	N int
	// Handle is the kernel's handle of an unexpected rule, when the
	// backend names rules by handle rather than by position (nftables).
	Handle uint64
	// Detail is how the object differs (Differs), the rule (RuleMissing,
	// RuleUnexpected), an example element, why the object cannot be read
	// (Unreadable), or what makes it unexpected (Unexpected).
	Detail string
	// Foreign marks an unexpected rule relayfw did not generate (it has no
	// comment starting with CommentPrefix): an apply removes it.
	Foreign bool
	// Links marks a difference in the elements of a set that follows the
	// consensus (LinkSets): the relay links or the trusted sources, which
	// refresh brings up to date and which the caller counts itself.
	Links bool
}

// DriftKind is the kind of a difference.
type DriftKind int

// The kinds of drift, with the text String makes of each (scope and
// object left out).
const (
	// Described is a drift known only by its text (Detail), as read back
	// from JSON.
	Described DriftKind = iota
	NotInstalled
	Missing    // "X is missing"
	Unexpected // "unexpected X" or "unexpected X: Detail"
	Differs    // "X Detail", e.g. "set s has the wrong type or flags"
	Unreadable // "X: Detail"
	// ElementsMissing and ElementsUnexpected count a set's elements
	// (an ipset's entries), with an example in Detail when there is one.
	ElementsMissing
	ElementsUnexpected
	RuleMissing    // "X: missing rule N: Detail"
	RuleUnexpected // "X: unexpected rule N: Detail", or "(handle H)" for N
	RulesReordered // "X: rules from N on are in another order"
)

// String is the drift as relayfw prints it.
func (d Drift) String() string {
	var b strings.Builder
	if d.Scope != "" {
		b.WriteString(d.Scope + ": ")
	}
	b.WriteString(d.text())
	return b.String()
}

// text is the drift without its scope.
func (d Drift) text() string {
	switch d.Kind {
	case NotInstalled:
		return d.Object + " is not installed"
	case Missing:
		return d.Object + " is missing"
	case Unexpected:
		if d.Detail != "" {
			return "unexpected " + d.Object + ": " + d.Detail
		}
		return "unexpected " + d.Object
	case Differs:
		return d.Object + " " + d.Detail
	case Unreadable:
		return d.Object + ": " + d.Detail
	case ElementsMissing:
		return fmt.Sprintf("%s: %d %s missing%s", d.Object, d.N, d.elements(), d.example())
	case ElementsUnexpected:
		return fmt.Sprintf("%s: %d unexpected %s%s", d.Object, d.N, d.elements(), d.example())
	case RuleMissing:
		return fmt.Sprintf("%smissing rule %d: %s", d.in(), d.N, d.Detail)
	case RuleUnexpected:
		if d.Handle != 0 {
			return fmt.Sprintf("%sunexpected rule (handle %d): %s", d.in(), d.Handle, d.Detail)
		}
		return fmt.Sprintf("%sunexpected rule %d: %s", d.in(), d.N, d.Detail)
	case RulesReordered:
		return fmt.Sprintf("%srules from %d on are in another order", d.in(), d.N)
	}
	return d.Detail
}

// in is the object a rule is in, as a prefix.
func (d Drift) in() string {
	if d.Object == "" {
		return ""
	}
	return d.Object + ": "
}

// elements is what the object's elements are called: ipset says entries.
func (d Drift) elements() string {
	if strings.HasPrefix(d.Object, "ipset ") {
		return "entries"
	}
	return "elements"
}

func (d Drift) example() string {
	if d.Detail == "" {
		return ""
	}
	return ", e.g. " + d.Detail
}

// MarshalText is String: status --format json lists drift as its text.
func (d Drift) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText keeps the text alone (Described).
func (d *Drift) UnmarshalText(text []byte) error {
	*d = Drift{Kind: Described, Detail: string(text)}
	return nil
}

// Strings are the drifts' texts (nil for none).
func Strings(drift []Drift) []string {
	var out []string
	for _, d := range drift {
		out = append(out, d.String())
	}
	return out
}
