package nft

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/relayfw/relayfw/ruleset"
)

var ctNames = []struct {
	bit  uint32
	name string
}{{ctInvalid, "invalid"}, {ctEstablished, "established"}, {ctRelated, "related"}, {ctNew, "new"}}

var protoNames = map[byte]string{protoTCP: "tcp", protoUDP: "udp", protoICMP: "icmp", protoICMPv6: "ipv6-icmp"}

// Render returns the ruleset as `nft -f` input that replaces the relayfw
// table in one transaction (creating it first, so the delete cannot fail).
func Render(rs ruleset.Ruleset) (string, error) {
	p, err := newPlan(rs)
	if err != nil {
		return "", err
	}
	return p.text(), nil
}

func (p plan) text() string {
	var b strings.Builder
	b.WriteString("#!/usr/sbin/nft -f\n")
	b.WriteString("# relayfw: the outbound firewall compiled from the relay's ExitPolicy.\n")
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\n", TableName, TableName)
	fmt.Fprintf(&b, "table inet %s {\n", TableName)
	for _, s := range p.sets {
		addrType := "ipv4_addr"
		if s.v6 {
			addrType = "ipv6_addr"
		}
		fmt.Fprintf(&b, "\tset %s {\n\t\ttype %s . inet_service\n", s.name, addrType)
		writeElements(&b, len(s.elements), func(i int) string { return elementText(s.elements[i]) })
		b.WriteString("\t}\n\n")
	}
	if p.inbound != nil {
		p.inbound.textSets(&b)
	}
	for stage := range 2 {
		for _, c := range p.classes {
			if c.stage != stage {
				continue
			}
			if c.ports != nil {
				fmt.Fprintf(&b, "\tset %s {\n\t\ttype inet_service\n\t\tflags interval\n", c.chain)
				writeElements(&b, len(c.ports), func(i int) string { return portText(c.ports[i]) })
				b.WriteString("\t}\n\n")
			}
			fmt.Fprintf(&b, "\tchain %s {\n\t\t%s\n\t}\n\n", c.chain, c.rule.text())
		}
		for _, m := range p.maps {
			if m.stage != stage {
				continue
			}
			addrType := "ipv4_addr"
			if m.v6 {
				addrType = "ipv6_addr"
			}
			fmt.Fprintf(&b, "\tmap %s {\n\t\ttype %s : verdict\n\t\tflags interval\n", m.name, addrType)
			writeElements(&b, len(m.intervals), func(i int) string {
				iv := m.intervals[i]
				return addrRangeText(iv.first, iv.last) + " : jump " + iv.chain
			})
			b.WriteString("\t}\n\n")
		}
	}
	fmt.Fprintf(&b, "\tchain %s {\n\t\ttype filter hook output priority filter; policy accept;\n", ChainName)
	for _, r := range p.rules {
		b.WriteString("\t\t")
		b.WriteString(r.text())
		b.WriteByte('\n')
	}
	b.WriteString("\t}\n")
	if p.inbound != nil {
		p.inbound.textChains(&b)
	}
	b.WriteString("}\n")
	return b.String()
}

// writeElements writes a set's element list, one element a line.
func writeElements(b *strings.Builder, n int, element func(i int) string) {
	if n == 0 {
		return
	}
	b.WriteString("\t\telements = {")
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("\n\t\t\t")
		b.WriteString(element(i))
	}
	b.WriteString("\n\t\t}\n")
}

func elementText(e ruleset.Region) string {
	return addrRangeText(e.AddrFirst, e.AddrLast) + " . " + portText(e.Ports)
}

func addrRangeText(first, last netip.Addr) string {
	if first == last {
		return first.String()
	}
	return first.String() + "-" + last.String()
}

func portText(pr ruleset.PortRange) string {
	if pr.First == pr.Last {
		return fmt.Sprint(pr.First)
	}
	return fmt.Sprintf("%d-%d", pr.First, pr.Last)
}

// text is the rule in nft syntax, statement by statement in the order the
// netlink expressions are generated (nft drops the explicit meta matches
// it would otherwise add as dependencies).
func (r kernelRule) text() string {
	var w words
	ip := r.metaText(&w)
	if r.saddr.IsValid() {
		w.add("%s saddr %s", ip, r.saddr)
	}
	if r.daddr.IsValid() {
		if r.daddr.IsSingleIP() {
			w.add("%s daddr %s", ip, r.daddr.Addr())
		} else {
			w.add("%s daddr %s", ip, r.daddr)
		}
	}
	r.transportText(&w)
	r.actionText(&w, ip)
	w.add("comment %q", ruleset.CommentPrefix+r.name)
	return strings.Join(w, " ")
}

// words are a rule's statements in nft syntax.
type words []string

func (w *words) add(f string, a ...any) { *w = append(*w, fmt.Sprintf(f, a...)) }

// metaText says the output interface, conntrack state, socket owner and
// family; ip is the family's address keyword, "ip" or "ip6".
func (r kernelRule) metaText(w *words) (ip string) {
	if r.oifLo {
		w.add(`oif "lo"`)
	}
	if r.ctMask != 0 {
		var names []string
		for _, c := range ctNames {
			if r.ctMask&c.bit != 0 {
				names = append(names, c.name)
			}
		}
		w.add("ct state %s", strings.Join(names, ","))
	}
	if r.skuid != nil {
		w.add("meta skuid %d", *r.skuid)
	}
	switch r.nfproto {
	case nfprotoIPv4:
		w.add("meta nfproto ipv4")
	case nfprotoIPv6:
		w.add("meta nfproto ipv6")
		return "ip6"
	}
	return "ip"
}

// transportText says the protocol, TCP flags, ICMP type and ports.
func (r kernelRule) transportText(w *words) {
	if r.l4proto != 0 {
		w.add("meta l4proto %s", protoNames[r.l4proto])
	}
	l4 := protoNames[r.l4proto]
	if r.midstream {
		w.add("tcp flags & (syn | ack) == ack")
	}
	if r.icmpType >= 0 {
		if r.l4proto == protoICMPv6 {
			w.add("icmpv6 type %d", r.icmpType)
		} else {
			w.add("icmp type %d", r.icmpType)
		}
	}
	if r.sport != 0 {
		w.add("%s sport %d", l4, r.sport)
	}
	switch {
	case r.dport.First == 0:
	case r.dport.First == r.dport.Last:
		w.add("%s dport %d", l4, r.dport.First)
	default:
		w.add("%s dport %d-%d", l4, r.dport.First, r.dport.Last)
	}
}

// actionText says the lookups, then the verdict map, or the log rate,
// the counter and the verdict.
func (r kernelRule) actionText(w *words, ip string) {
	if r.set != "" {
		w.add("%s daddr . tcp dport @%s", ip, r.set)
	}
	if r.portSet != "" {
		w.add("tcp dport @%s", r.portSet)
	}
	if r.vmap != "" {
		w.add("%s daddr vmap @%s", ip, r.vmap)
		return
	}
	if r.logPrefix != "" {
		w.add("limit rate %d/minute", r.logRate)
	}
	w.add("counter")
	switch {
	case r.logPrefix != "":
		w.add("log prefix %q", r.logPrefix)
	case r.reject == "":
		w.add("accept")
	case r.reject == ruleset.RejectTCPReset:
		w.add("reject with tcp reset")
	case r.reject == ruleset.RejectAdminProhibited:
		w.add("reject with icmpx admin-prohibited")
	}
}
