// Package ipt installs relayfw's ruleset with iptables and ip6tables, in
// whatever mode (legacy or nf_tables) the host's iptables is: the chain
// RELAYFW-OUTPUT in the filter table of each family, entered by one jump at
// the top of OUTPUT (and, with inbound protection, RELAYFW-INPUT, entered
// from the top of INPUT, and RELAYFW-INBOUND). Chain content is written in
// one iptables-restore --noflush transaction per family; go-iptables reads
// the state back. An apply that fails at a later step undoes the earlier
// ones (undo.go), so that it leaves the firewall it found.
package ipt

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/relayfw/relayfw/ruleset"
)

// Chain is the chain relayfw owns in each family's filter table.
const Chain = "RELAYFW-OUTPUT"

// maxMultiportSlots is multiport's limit: 15 ports, a range counting two.
const maxMultiportSlots = 15

// Lines returns the chain's rules for one family (v6 false: iptables) in
// the exact form `iptables -S` prints them, so installed and desired
// state compare as text.
func Lines(rs ruleset.Ruleset, v6 bool) ([]string, error) {
	fp, err := planFamily(rs, v6)
	return fp.lines, err
}

// familyPlan is what one family installs: its ipsets and chain rules.
type familyPlan struct {
	ipsets  []ipset
	lines   []string
	inbound *inboundPlan // nil: no inbound protection
}

// planFamily renders one family; rs.Validate is the contract it relies on
// (its own limits come on top: output interface lo only, one source port,
// log prefixes of 29 characters).
func planFamily(rs ruleset.Ruleset, v6 bool) (familyPlan, error) {
	if err := rs.Validate(); err != nil {
		return familyPlan{}, err
	}
	fam := familyOf(v6)
	var fp familyPlan
	fp.ipsets = wantedIpsets(rs, v6)
	classSet := map[string]string{} // class name -> ipset name
	for _, s := range fp.ipsets {
		if s.class != "" {
			classSet[s.class] = s.name
		}
	}
	for _, r := range rs.Outbound {
		if r.Family != ruleset.AnyFamily && r.Family != fam {
			continue
		}
		lines, err := ruleLines(rs, r, v6, classSet)
		if err != nil {
			return familyPlan{}, fmt.Errorf("rule %q: %w", r.Name, err)
		}
		fp.lines = append(fp.lines, lines...)
	}
	if rs.Inbound != nil {
		p := inboundRules(*rs.Inbound, v6)
		fp.inbound = &p
	}
	return fp, nil
}

// Render is iptables-restore (v6: ip6tables-restore) input that replaces
// the chain and puts the jump at the top of OUTPUT (and, with inbound
// protection, INPUT's), for --noflush.
func Render(rs ruleset.Ruleset, v6 bool) (string, error) {
	fp, err := planFamily(rs, v6)
	if err != nil {
		return "", err
	}
	tool := "iptables-restore"
	if v6 {
		tool = "ip6tables-restore"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# relayfw: load with %s --noflush\n", tool)
	b.WriteString(restoreScript(fp, state{}))
	return b.String(), nil
}

// restoreScript replaces the chains' content and makes each jump the first
// rule of OUTPUT (INPUT); the jumps st has are deleted first, and the
// inbound chains when the plan has none (the kernel applies the whole
// table at COMMIT).
func restoreScript(fp familyPlan, st state) string {
	var b strings.Builder
	b.WriteString("*filter\n")
	fmt.Fprintf(&b, ":%s - [0:0]\n", Chain)
	if fp.inbound != nil {
		fmt.Fprintf(&b, ":%s - [0:0]\n:%s - [0:0]\n", InboundChain, InputChain)
	}
	b.WriteString(deleteJumpsScript(st))
	fmt.Fprintf(&b, "-I OUTPUT 1 -j %s\n", Chain)
	for _, l := range fp.lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	if fp.inbound != nil {
		fmt.Fprintf(&b, "-I INPUT 1 -j %s\n", InputChain)
		for _, l := range slices.Concat(fp.inbound.input, fp.inbound.inbound) {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	} else {
		b.WriteString(deleteChainsScript(st, InputChain, InboundChain))
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// deleteJumpsScript deletes every jump of relayfw's st has.
func deleteJumpsScript(st state) string {
	var b strings.Builder
	for _, h := range hooks {
		for range st.jumps[h.from] {
			fmt.Fprintf(&b, "-D %s -j %s\n", h.from, h.to)
		}
	}
	return b.String()
}

// deleteChainsScript deletes those of the chains st has: all are flushed
// before any is deleted, as one may jump to another (their jumps from the
// built-in chains are deleted before).
func deleteChainsScript(st state, chains ...string) string {
	var flush, del strings.Builder
	for _, c := range chains {
		if st.has(c) {
			fmt.Fprintf(&flush, "-F %s\n", c)
			fmt.Fprintf(&del, "-X %s\n", c)
		}
	}
	return flush.String() + del.String()
}

// familyOf is the family of iptables (false) or ip6tables (true).
func familyOf(v6 bool) ruleset.Family {
	if v6 {
		return ruleset.IPv6
	}
	return ruleset.IPv4
}

var protoNames = map[string][2]string{ // rules proto -> iptables -p, match module
	"tcp":    {"tcp", "tcp"},
	"udp":    {"udp", "udp"},
	"icmp":   {"icmp", "icmp"},
	"icmpv6": {"ipv6-icmp", "icmp6"},
}

// dst is a destination match: the address part (-d or -m iprange) and the
// port part (-m multiport).
type dst struct{ addr, ports string }

func hostPrefix(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

// ruleLines are the -A lines of one rule in one family: one per source,
// destination, port and ICMP type alternative; none for the other
// family's ICMP or an exit map that accepts nothing in this family.
func ruleLines(rs ruleset.Ruleset, r ruleset.Rule, v6 bool, classSet map[string]string) ([]string, error) {
	if r.Proto == "icmp" && v6 || r.Proto == "icmpv6" && !v6 {
		return nil, nil // the other family's ICMP
	}
	l := lineParts{rule: r, srcs: []string{""}, dsts: []dst{{}}, ports: portMatchesOf(r), icmp: icmpMatches(r)}
	if len(r.SrcAddrs) > 0 {
		l.srcs = nil
		for _, p := range r.SrcAddrs { // one address each (Validate)
			l.srcs = append(l.srcs, "-s "+hostPrefix(p.Addr()))
		}
	}
	if l.dsts = dstMatches(rs, r, classSet); len(l.dsts) == 0 {
		return nil, nil // the policy accepts nothing in this family
	}
	l.matches = stateMatches(r)
	var err error
	if l.target, err = target(r, v6, &l.matches); err != nil {
		return nil, err
	}
	return l.lines(), nil
}

// lineParts are the alternatives and matches one rule's lines combine.
type lineParts struct {
	rule    ruleset.Rule
	srcs    []string // "-s ADDR" or ""
	dsts    []dst
	matches []string // after -p, before the ports
	ports   []string // "-m tcp [--sport P ]--dport Q" or ""
	icmp    []string
	target  string
}

// dstMatches are the destination alternatives: addresses, a set of relay
// links, or an exit map's classes; one empty match for any destination.
func dstMatches(rs ruleset.Ruleset, r ruleset.Rule, classSet map[string]string) []dst {
	switch {
	case r.ExitMap != "":
		m, _ := rs.ExitMap(r.ExitMap)
		return exitMapMatches(rs, m, classSet)
	case r.Set != "": // the set's name, as the ruleset chose it
		return []dst{{ports: fmt.Sprintf("-m set --match-set %s dst,dst", ipsetName(r.Set))}}
	case len(r.DstAddrs) == 0:
		return []dst{{}}
	}
	var dsts []dst
	for _, p := range r.DstAddrs {
		if p.Bits() == 0 {
			dsts = append(dsts, dst{}) // -d 0.0.0.0/0 prints as nothing
			continue
		}
		dsts = append(dsts, dst{addr: "-d " + p.Masked().String()})
	}
	return dsts
}

// stateMatches are the conntrack, TCP flag and owner matches.
func stateMatches(r ruleset.Rule) []string {
	var matches []string
	if len(r.CtState) > 0 {
		var states []string
		for _, name := range []string{"invalid", "new", "related", "established"} {
			for _, s := range r.CtState {
				if s == name {
					states = append(states, strings.ToUpper(s))
				}
			}
		}
		matches = append(matches, "-m conntrack --ctstate "+strings.Join(states, ","))
	}
	if r.TCPMidstream {
		matches = append(matches, "-m tcp --tcp-flags SYN,ACK ACK")
	}
	if r.SocketUID != nil {
		matches = append(matches, fmt.Sprintf("-m owner --uid-owner %d", *r.SocketUID))
	}
	return matches
}

// portMatchesOf are the port alternatives: one per destination range,
// each with the source port (one port at most: Validate).
func portMatchesOf(r ruleset.Rule) []string {
	portText := func(pr ruleset.PortRange) string {
		if pr.First == pr.Last {
			return fmt.Sprint(pr.First)
		}
		return fmt.Sprintf("%d:%d", pr.First, pr.Last)
	}
	var sport string
	if len(r.SrcPorts) == 1 {
		sport = "--sport " + portText(r.SrcPorts[0])
	}
	if sport == "" && len(r.DstPorts) == 0 {
		return []string{""}
	}
	module := "-m " + protoNames[r.Proto][1] + " "
	if len(r.DstPorts) == 0 {
		return []string{module + sport}
	}
	var out []string
	for _, pr := range r.DstPorts {
		m := module
		if sport != "" {
			m += sport + " "
		}
		out = append(out, m+"--dport "+portText(pr))
	}
	return out
}

// icmpMatches are the ICMP type alternatives.
func icmpMatches(r ruleset.Rule) []string {
	if len(r.ICMPTypes) == 0 {
		return []string{""}
	}
	var out []string
	for _, t := range r.ICMPTypes {
		if r.Proto == "icmpv6" {
			out = append(out, fmt.Sprintf("-m icmp6 --icmpv6-type %d", t))
		} else {
			out = append(out, fmt.Sprintf("-m icmp --icmp-type %d", t))
		}
	}
	return out
}

// target is the rule's -j; a log rule adds its rate limit to matches.
func target(r ruleset.Rule, v6 bool, matches *[]string) (string, error) {
	switch {
	case r.Action == ruleset.Log:
		if len(r.LogPrefix) > 29 { // iptables' LOG limit
			return "", fmt.Errorf("a log prefix of at most 29 characters")
		}
		*matches = append(*matches, fmt.Sprintf("-m limit --limit %d/min", r.LogPerMinute))
		return fmt.Sprintf("-j LOG --log-prefix %q", r.LogPrefix), nil
	case r.Action == ruleset.Accept:
		return "-j ACCEPT", nil
	case r.Action == ruleset.Reject && r.RejectWith == ruleset.RejectTCPReset:
		return "-j REJECT --reject-with tcp-reset", nil
	case r.Action == ruleset.Reject && r.RejectWith == ruleset.RejectAdminProhibited:
		if v6 {
			return "-j REJECT --reject-with icmp6-adm-prohibited", nil
		}
		return "-j REJECT --reject-with icmp-admin-prohibited", nil
	}
	return "", fmt.Errorf("unknown action %q %q", r.Action, r.RejectWith)
}

// lines combines the alternatives, in iptables -S order: -s, -d, -o, -p,
// then the matches as given, the comment and the target.
func (l lineParts) lines() []string {
	r := l.rule
	proto, hasProto := protoNames[r.Proto]
	comment := fmt.Sprintf("-m comment --comment %q", ruleset.CommentPrefix+r.Name)
	var out []string
	for _, s := range l.srcs {
		for _, d := range l.dsts {
			for _, pm := range l.ports {
				for _, ic := range l.icmp {
					parts := []string{"-A", Chain}
					for _, p := range []string{s, d.addr} {
						if p != "" && !strings.HasPrefix(p, "-m ") {
							parts = append(parts, p)
						}
					}
					if r.OutIface != "" {
						parts = append(parts, "-o", r.OutIface)
					}
					if hasProto {
						parts = append(parts, "-p", proto[0])
					}
					if strings.HasPrefix(d.addr, "-m ") {
						parts = append(parts, d.addr)
					}
					parts = append(parts, l.matches...)
					for _, p := range []string{pm, ic, d.ports} {
						if p != "" {
							parts = append(parts, p)
						}
					}
					out = append(out, strings.Join(append(parts, comment, l.target), " "))
				}
			}
		}
	}
	return out
}

// exitMapMatches are the destination matches of an exit map: per class,
// its ipset (named in classSet; or, past maxClassIpsets, one match per
// address interval of the class), each with the class's ports in
// multiport lists.
func exitMapMatches(rs ruleset.Ruleset, m ruleset.ExitMap, classSet map[string]string) []dst {
	var out []dst
	withSet, withRules := classSets(rs, m)
	if len(m.Prefixes) <= 1 {
		// One class everywhere: no address to match.
		for c := range m.Classes {
			out = append(out, portMatches("", "", m.Classes[c])...)
		}
		return out
	}
	for _, c := range withSet {
		out = append(out, portMatches("", fmt.Sprintf("-m set --match-set %s dst ", classSet[m.Classes[c].Name]), m.Classes[c])...)
	}
	if len(withRules) > 0 {
		fallback := map[int]bool{}
		for _, c := range withRules {
			fallback[c] = true
		}
		for _, iv := range m.Intervals() {
			if fallback[iv.Class] {
				out = append(out, portMatches(addrMatch(iv.First, iv.Last), "", m.Classes[iv.Class])...)
			}
		}
	}
	return out
}

// portMatches puts a class's ports behind one address match: multiport
// lists of at most 15 slots, or nothing for every port.
func portMatches(addr, set string, c ruleset.PortClass) []dst {
	if c.AllPorts() {
		return []dst{{addr, strings.TrimSpace(set)}}
	}
	var out []dst
	var list []string
	slots := 0
	flush := func() {
		if len(list) > 0 {
			out = append(out, dst{addr, set + "-m multiport --dports " + strings.Join(list, ",")})
		}
		list, slots = nil, 0
	}
	for _, pr := range c.Ports {
		item, n := fmt.Sprint(pr.First), 1
		if pr.Last != pr.First {
			item, n = fmt.Sprintf("%d:%d", pr.First, pr.Last), 2
		}
		if slots+n > maxMultiportSlots {
			flush()
		}
		list = append(list, item)
		slots += n
	}
	flush()
	return out
}

// addrMatch is the destination match for an address interval: nothing for
// the whole family, -d for a CIDR block, else an iprange.
func addrMatch(first, last netip.Addr) string {
	for bits := 0; bits <= first.BitLen(); bits++ {
		p := netip.PrefixFrom(first, bits)
		if p.Masked().Addr() == first && lastOf(p) == last {
			if bits == 0 {
				return ""
			}
			return "-d " + p.String()
		}
	}
	return fmt.Sprintf("-m iprange --dst-range %s-%s", first, last)
}

func lastOf(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
