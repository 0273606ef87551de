package exitpolicy

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/relayfw/relayfw/internal/torcompat"
)

// This file is tor's exit-policy summary (src/core/or/policies.c:
// policy_summarize, parse_short_policy, write_short_policy): the one line
// per family that clients choose exits by. The directory authorities
// summarize a relay's IPv4 policy into its microdescriptor's "p" line
// (the full consensus's "p" line); the relay summarizes its IPv6 policy
// itself ("ipv6-policy" in its descriptor, "p6" in its microdescriptor).

// MaxSummaryLen is tor's MAX_EXITPOLICY_SUMMARY_LEN: a summary longer than
// this is cut short (its accepted ports, at a comma).
const MaxSummaryLen = 1000

// PortRange is a range of ports, Min <= Max.
type PortRange struct{ Min, Max uint16 }

func (r PortRange) String() string {
	if r.Min == r.Max {
		return strconv.Itoa(int(r.Min))
	}
	return fmt.Sprintf("%d-%d", r.Min, r.Max)
}

// Ports is a set of ports 1-65535 as sorted, disjoint ranges, adjacent
// ones merged (Normalize).
type Ports []PortRange

// AllPorts is 1-65535.
var AllPorts = Ports{{1, 65535}}

// Normalize sorts the ranges and merges those that overlap or touch;
// port 0 is dropped.
func (p Ports) Normalize() Ports {
	rs := slices.Clone(p)
	slices.SortFunc(rs, func(a, b PortRange) int { return int(a.Min) - int(b.Min) })
	var out Ports
	for _, r := range rs {
		if r.Min == 0 {
			if r.Max == 0 {
				continue
			}
			r.Min = 1
		}
		if n := len(out); n > 0 && int(r.Min) <= int(out[n-1].Max)+1 {
			out[n-1].Max = max(out[n-1].Max, r.Max)
			continue
		}
		out = append(out, r)
	}
	return out
}

// Minus is the ports of p that are not in q (both normalized).
func (p Ports) Minus(q Ports) Ports {
	var out Ports
	for _, r := range p {
		lo := int(r.Min)
		for _, s := range q {
			if int(s.Max) < lo || s.Min > r.Max {
				continue
			}
			if int(s.Min) > lo {
				out = append(out, PortRange{uint16(lo), s.Min - 1})
			}
			lo = int(s.Max) + 1
		}
		if lo <= int(r.Max) {
			out = append(out, PortRange{uint16(lo), r.Max})
		}
	}
	return out
}

// Count is the number of ports in the set.
func (p Ports) Count() int {
	n := 0
	for _, r := range p {
		n += int(r.Max) - int(r.Min) + 1
	}
	return n
}

// String lists the ranges as a summary does: "80,443,8000-8100"; "" for
// none.
func (p Ports) String() string {
	parts := make([]string, len(p))
	for i, r := range p {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

// Summary is tor's summary of one family of an exit policy.
type Summary struct {
	// Accepted are the ports the policy accepts for (almost) every
	// address, as policy_summarize decides it: an accept counts only for
	// all addresses ("*"), and a port stays accepted unless it was
	// rejected for more than two IPv4 /8s (one IPv6 /16) before; rejects
	// of tor's private networks and of IPv6 networks smaller than a /64 do
	// not count. These are all the ports, before a long summary is cut.
	Accepted Ports
	// Text is the summary exactly as tor publishes it: "accept 80,443",
	// "reject 25,119", "accept 1-65535", "reject 1-65535", at most
	// MaxSummaryLen bytes.
	Text string
}

func (s Summary) String() string { return s.Text }

// summary cutoffs, tor's REJECT_CUTOFF_*: an IPv4 port is rejected in the
// summary once more than 2^25 addresses (two /8s) reject it, an IPv6 port
// once more than 2^48 /64s (one /16) do; IPv6 rejects are counted in /64s.
const (
	rejectCutoffV4 = uint64(1) << (32 - 0 - 7)
	rejectCutoffV6 = uint64(1) << (128 - 64 - 16)
	rejectScaleV6  = 64
)

// summaryItem is tor's policy_summary_item_t.
type summaryItem struct {
	min, max    uint16
	rejectCount uint64
	accepted    bool
}

// policySummary is tor's summary list: items covering 1-65535 in order.
type policySummary []summaryItem

// split makes min and max fall at the start and the end of items
// (policy_summary_split) and returns the index of the item starting at
// min.
func (s *policySummary) split(min, max uint16) int {
	items := *s
	i, _ := slices.BinarySearchFunc(items, min, func(it summaryItem, port uint16) int {
		switch {
		case it.max < port:
			return -1
		case it.min > port:
			return 1
		}
		return 0
	})
	if items[i].min != min {
		old := items[i]
		items[i].max = min - 1
		old.min = min
		items = slices.Insert(items, i+1, old)
		i++
	}
	start := i
	for items[i].max < max {
		i++
	}
	if items[i].max != max {
		old := items[i]
		items[i].max = max
		old.min = max + 1
		items = slices.Insert(items, i+1, old)
	}
	*s = items
	return start
}

// accept is policy_summary_accept.
func (s *policySummary) accept(min, max uint16, cutoff uint64) {
	i := s.split(min, max)
	for items := *s; i < len(items) && items[i].max <= max; i++ {
		if !items[i].accepted && items[i].rejectCount <= cutoff {
			items[i].accepted = true
		}
	}
}

// reject is policy_summary_reject: it counts the addresses of a network
// of bits prefix length against the ports.
func (s *policySummary) reject(bits int, min, max uint16, v6 bool) {
	i := s.split(min, max)
	addrBits, scale := 32, 0
	if v6 {
		addrBits, scale = 128, rejectScaleV6
	}
	if bits > addrBits-scale {
		return // smaller than a /64: too small to ever count
	}
	var count uint64
	if shift := addrBits - scale - bits; shift >= 64 {
		count = ^uint64(0)
	} else {
		count = uint64(1) << shift
	}
	for items := *s; i < len(items) && items[i].max <= max; i++ {
		if items[i].rejectCount <= ^uint64(0)-count {
			items[i].rejectCount += count
		} else {
			items[i].rejectCount = ^uint64(0)
		}
	}
}

// privateNetEntries are tor's private_nets as (address, prefix length):
// rejects of exactly these are left out of a summary.
var privateNetEntries = func() []Entry {
	out := make([]Entry, len(privateNets))
	for i, n := range privateNets {
		out[i].Addr, out[i].Bits = mustParseNet(n)
	}
	return out
}()

// isPrivateNet is policy_summary_add_item's test: the entry's address (as
// written, not masked) and prefix length are one of tor's private
// networks.
func isPrivateNet(e Entry) bool {
	for _, p := range privateNetEntries {
		if e.Addr == p.Addr && e.Bits == p.Bits {
			return true
		}
	}
	return false
}

// Summarize is tor's policy_summarize(policy, family) for IPv4 (v6 false)
// or IPv6.
func (p ExitPolicy) Summarize(v6 bool) Summary {
	cutoff := rejectCutoffV4
	if v6 {
		cutoff = rejectCutoffV6
	}
	s := policySummary{{min: 1, max: 65535}}
	for _, e := range p.Entries {
		if e.IPv6() != v6 {
			continue
		}
		switch {
		case e.Action == Accept:
			if e.Bits == 0 {
				s.accept(e.PortMin, e.PortMax, cutoff)
			}
		case !isPrivateNet(e):
			s.reject(e.Bits, e.PortMin, e.PortMax, v6)
		}
	}
	var accepts, rejects Ports
	start := uint16(1)
	for i, it := range s {
		if i == len(s)-1 || it.accepted != s[i+1].accepted {
			r := PortRange{start, it.max}
			if it.accepted {
				accepts = append(accepts, r)
			} else {
				rejects = append(rejects, r)
			}
			if i < len(s)-1 {
				start = s[i+1].min
			}
		}
	}
	return Summary{Accepted: accepts, Text: summaryText(accepts, rejects)}
}

// RejectAllSummary is the summary of a policy that accepts no port: what
// tor publishes for it, and what a client reads where a microdescriptor
// has no summary line (tor writes no ipv6-policy line for it).
const RejectAllSummary = "reject 1-65535"

// summaryText is the end of policy_summarize: "reject 1-65535" when
// nothing is accepted, "accept 1-65535" when nothing is rejected, else
// the shorter list (accept on a tie); when both are too long, the accepted
// ports, cut at the last comma that fits in MaxSummaryLen.
func summaryText(accepts, rejects Ports) string {
	switch {
	case len(accepts) == 0:
		return RejectAllSummary
	case len(rejects) == 0:
		return "accept 1-65535"
	}
	a, r := accepts.String(), rejects.String()
	room := MaxSummaryLen - len("accept") - 1
	switch {
	case len(r) > room && len(a) > room:
		cut := strings.LastIndexByte(a[:room+1], ',')
		return "accept " + a[:cut]
	case len(r) < len(a):
		return "reject " + r
	}
	return "accept " + a
}

// ShortPolicy is a summary as tor reads it (short_policy_t): accept or
// reject, and the port ranges listed.
type ShortPolicy struct {
	Accept  bool
	Entries []PortRange
}

// ErrBadSummary marks a summary tor does not read (parse_short_policy
// returns NULL): a client then has no exit policy for the relay, as if
// it exited nowhere.
var ErrBadSummary = errors.New("malformed exit policy summary")

// ParseSummary is tor's parse_short_policy: "accept " or "reject ", then
// comma-separated ports and ranges. As in tor, an entry that does not
// start with a digit is skipped, an empty entry too, and anything else
// malformed refuses the whole summary, as do no entries at all and more
// than MaxSummaryLen of them.
func ParseSummary(summary string) (ShortPolicy, error) {
	var sp ShortPolicy
	bad := func(why string) (ShortPolicy, error) {
		return ShortPolicy{}, fmt.Errorf("%w %q: %s", ErrBadSummary, clip(summary), why)
	}
	rest, ok := strings.CutPrefix(summary, "accept ")
	if ok {
		sp.Accept = true
	} else if rest, ok = strings.CutPrefix(summary, "reject "); !ok {
		return bad("not accept or reject")
	}
	for rest != "" {
		if len(sp.Entries) == MaxSummaryLen {
			return bad(fmt.Sprintf("more than %d entries", MaxSummaryLen))
		}
		low, next, ok := parseULong(rest, 1)
		if !ok {
			if !torcompat.IsDigit(rest[0]) || rest[0] == ',' {
				// Unrecognized: skip to the next entry.
				i := strings.IndexByte(next, ',')
				if i < 0 {
					break
				}
				rest = next[i+1:]
				continue
			}
			return bad(fmt.Sprintf("bad entry at %q", clip(rest)))
		}
		high := low
		switch {
		case next == "":
		case next[0] == ',':
			next = next[1:]
		case next[0] == '-':
			if high, next, ok = parseULong(next[1:], low); !ok {
				return bad(fmt.Sprintf("bad range at %q", clip(rest)))
			}
			switch {
			case next == "":
			case next[0] == ',':
				next = next[1:]
			default:
				return bad(fmt.Sprintf("bad range at %q", clip(rest)))
			}
		default:
			return bad(fmt.Sprintf("bad entry at %q", clip(rest)))
		}
		sp.Entries = append(sp.Entries, PortRange{uint16(low), uint16(high)})
		rest = next
	}
	if len(sp.Entries) == 0 {
		return bad("no port entries")
	}
	return sp, nil
}

// parseULong is tor_parse_ulong(s, 10, min, 65535, &ok, &next): strtoul
// and a range check. A negative number is out of range either way.
func parseULong(s string, min int64) (int64, string, bool) {
	v, rest, converted, overflow := torcompat.Strtol(s)
	if !converted {
		return 0, s, false
	}
	if overflow || v < min || v > 65535 {
		return 0, rest, false
	}
	return v, rest, true
}

// clip shortens what an error quotes.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// String is tor's write_short_policy.
func (sp ShortPolicy) String() string {
	var b strings.Builder
	if sp.Accept {
		b.WriteString("accept ")
	} else {
		b.WriteString("reject ")
	}
	for i, e := range sp.Entries {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(e.String())
	}
	return b.String()
}

// Accepted is the ports a client believes the relay accepts for most
// addresses (short_policy's meaning: an accept list, or everything a
// reject list leaves out).
func (sp ShortPolicy) Accepted() Ports {
	listed := Ports(sp.Entries).Normalize()
	if sp.Accept {
		return listed
	}
	return AllPorts.Minus(listed)
}
