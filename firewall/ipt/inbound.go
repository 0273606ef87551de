package ipt

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/ruleset"
)

// The inbound protection: RELAYFW-INPUT, entered by one jump at the top of
// INPUT, sends the SYN of a new connection to a protected endpoint into
// RELAYFW-INBOUND (a rule for the ports protected on every address of the
// family, then one per address-bound address, -d ADDR), whose rules end in
// RETURN, DROP or REJECT; whatever returns goes on through INPUT as
// before. INPUT's policy is not touched.
const (
	InputChain   = "RELAYFW-INPUT"
	InboundChain = "RELAYFW-INBOUND"
)

// inboundPlan is one family's share: RELAYFW-INPUT's and RELAYFW-INBOUND's
// rules, as iptables -S prints them.
type inboundPlan struct {
	input, inbound []string
}

// inboundRules renders the protection for one family. The hashlimit meters
// count per source network; a source over a rate is added to the block
// set (SET is no verdict: the next rule drops what is now blocked).
func inboundRules(in ruleset.Inbound, v6 bool) inboundPlan {
	fam := familyOf(v6)
	mask := in.Prefix(fam)
	comment := func(name string) string { return fmt.Sprintf("-m comment --comment %q", ruleset.CommentPrefix+name) }
	ruleComment := func(base string) string { return comment(ruleset.InboundRuleName(base, fam)) }
	trust := ipsetName(ruleset.InboundSetName("trust", fam))
	block := ipsetName(ruleset.InboundSetName("block", fam))
	grace := ipsetName(ruleset.InboundSetName("grace", fam))
	var p inboundPlan
	jump := func(dst string, ports []uint16) {
		ranges := make([]ruleset.PortRange, len(ports))
		for i, port := range ports {
			ranges[i] = ruleset.PortRange{First: port, Last: port}
		}
		for _, d := range portMatches("", "", ruleset.PortClass{Ports: ranges}) {
			p.input = append(p.input, fmt.Sprintf("-A %s %s-p tcp %s -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW %s -j %s",
				InputChain, dst, d.ports, comment(ruleset.InboundRuleJump), InboundChain))
		}
	}
	if ports := in.PortsOn(fam); len(ports) > 0 {
		jump("", ports)
	}
	// The address-bound ports, by address (sorted: they come sorted).
	bound := in.BoundEndpoints(fam)
	for i := 0; i < len(bound); {
		addr, ports := bound[i].Addr(), []uint16{}
		for ; i < len(bound) && bound[i].Addr() == addr; i++ {
			ports = append(ports, bound[i].Port())
		}
		jump("-d "+netip.PrefixFrom(addr, addr.BitLen()).String()+" ", ports)
	}
	add := func(f string, a ...any) { p.inbound = append(p.inbound, "-A "+InboundChain+" "+fmt.Sprintf(f, a...)) }
	add("-m set --match-set %s src %s -j RETURN", trust, ruleComment(ruleset.InboundRuleTrusted))
	add("-m set --match-set %s src %s -j DROP", block, ruleComment(ruleset.InboundRuleBlocked))
	meter := func(rule, name string, rate uint, unit string, burst uint, expireSeconds uint) {
		rateText, unitMillis := hashlimitRate(rate, unit)
		m := fmt.Sprintf("-m hashlimit --hashlimit-above %s --hashlimit-burst %d --hashlimit-mode srcip --hashlimit-name %s --hashlimit-htable-max %d",
			rateText, burst, ownedPrefix+ruleset.InboundSetName(name, fam), in.SetSize)
		if uint64(expireSeconds)*1000 != unitMillis {
			m += fmt.Sprintf(" --hashlimit-htable-expire %d", uint64(expireSeconds)*1000)
		}
		if mask != fam.Bits() {
			m += fmt.Sprintf(" --hashlimit-srcmask %d", mask)
		}
		// A source just unblocked skips the meters until they have
		// refilled: hashlimit's cannot be reset (see Unblock).
		add("-m set ! --match-set %s src %s %s -j SET --add-set %s src --exist", grace, m, ruleComment(rule), block)
	}
	meter(ruleset.InboundRuleMinute, "minute", in.PerMinute, "min", in.Burst, in.MinuteMeterSeconds())
	meter(ruleset.InboundRuleHour, "hour", in.PerHour, "hour", in.PerHour, in.HourMeterSeconds())
	add("-m set --match-set %s src %s -j DROP", block, ruleComment(ruleset.InboundRuleLimited))
	add("-p tcp -m connlimit --connlimit-above %d --connlimit-mask %d --connlimit-saddr %s -j REJECT --reject-with tcp-reset",
		in.MaxConns, mask, ruleComment(ruleset.InboundRuleConns))
	return p
}

// hashlimitRate is a rate as iptables prints it (libxt_hashlimit's
// print_rate: the largest unit that divides the per-packet period
// evenly), and that unit's length in milliseconds, hashlimit's default
// expiry of a meter.
func hashlimitRate(n uint, unit string) (string, uint64) {
	const scale = 1000000
	units := []struct {
		name string
		mult uint64
	}{{"day", 86400 * scale}, {"hour", 3600 * scale}, {"min", 60 * scale}, {"sec", scale}}
	var per uint64
	for _, u := range units {
		if u.name == unit {
			per = u.mult / uint64(n)
		}
	}
	if per == 0 {
		per = 1
	}
	i := 1
	for ; i < len(units); i++ {
		if per > units[i].mult || units[i].mult/per < units[i].mult%per {
			break
		}
	}
	u := units[i-1]
	return fmt.Sprintf("%d/%s", u.mult/per, u.name), u.mult / scale * 1000
}

// inboundIpsets are one family's trusted sources (hash:net) and block
// set (hash:ip with a timeout; an IPv6 one holds /64s by its netmask).
func inboundIpsets(in ruleset.Inbound, v6 bool) []ipset {
	fam := familyOf(v6)
	var entries []string
	for _, r := range ruleset.Ranges(in.TrustedOf(fam)) {
		for _, p := range r.Prefixes() {
			if p.Bits() == 0 {
				for _, h := range halves(p.Addr()) {
					entries = append(entries, netEntry(h))
				}
				continue
			}
			entries = append(entries, netEntry(p))
		}
	}
	slices.Sort(entries)
	block := ipset{name: ipsetName(ruleset.InboundSetName("block", fam)), typ: "hash:ip", v6: v6, dynamic: true,
		maxelem: in.SetSize, timeout: in.BlockSeconds}
	if mask := in.Prefix(fam); mask != fam.Bits() {
		block.netmask = mask
	}
	grace := block
	grace.name, grace.timeout = ipsetName(ruleset.InboundSetName("grace", fam)), graceSeconds(in)
	return []ipset{
		{name: ipsetName(ruleset.InboundSetName("trust", fam)), typ: "hash:net", v6: v6, entries: entries},
		block, grace,
	}
}

// graceSeconds is how long a source unblocked by relayfw unblock skips
// the meters: until both have refilled, as if it had never been metered.
func graceSeconds(in ruleset.Inbound) uint {
	return max(in.MinuteMeterSeconds(), in.HourMeterSeconds())
}

// carriedOver are the entries of a set with timeouts ("ADDR timeout N",
// as ipset save prints them) for its replacement, each with the time it
// has left, at most timeout.
func carriedOver(entries []string, timeout uint) []string {
	var out []string
	for _, e := range entries {
		if addr, left, ok := timedEntry(e); ok && left > 0 {
			out = append(out, fmt.Sprintf("%s timeout %d", addr, min(left, uint64(timeout))))
		}
	}
	return out
}

// timedEntry reads an entry of a set with timeouts as ipset save prints
// it, "198.51.100.9 timeout 86312": the address and the seconds left.
func timedEntry(e string) (addr netip.Addr, left uint64, ok bool) {
	f := strings.Fields(e)
	if len(f) != 3 || f[1] != "timeout" {
		return addr, 0, false
	}
	addr, err := netip.ParseAddr(f[0])
	if err != nil {
		return addr, 0, false
	}
	left, err = strconv.ParseUint(f[2], 10, 32)
	return addr, left, err == nil
}

// Blocked reads the block sets.
func (b *Backend) Blocked(ctx context.Context, in ruleset.Inbound) ([]firewall.Block, error) {
	var out []firewall.Block
	for _, fam := range []ruleset.Family{ruleset.IPv4, ruleset.IPv6} {
		s, err := b.ipset.one(ctx, ipsetName(ruleset.InboundSetName("block", fam)))
		if err != nil {
			return nil, err
		}
		if s == nil {
			continue
		}
		for _, e := range s.entries {
			if a, left, ok := timedEntry(e); ok {
				out = append(out, firewall.Block{Source: in.Source(a), ExpiresSeconds: int64(left)})
			}
		}
	}
	return out, nil
}

// Unblock deletes the source from the block set. hashlimit's meters
// cannot be reset from outside the kernel, so the source also goes into
// the grace set, whose members skip the meters until they have refilled
// (the concurrent limit still applies): its next connection starts
// afresh, as with nftables.
func (b *Backend) Unblock(ctx context.Context, source netip.Prefix) (bool, error) {
	fam := ruleset.FamilyOf(source.Addr())
	name := ipsetName(ruleset.InboundSetName("block", fam))
	addr := source.Masked().Addr()
	blocked, err := b.ipset.contains(ctx, name, addr.String())
	if noSuchSet(err) {
		return false, fmt.Errorf("the inbound protection is not installed")
	}
	if err != nil || !blocked {
		return false, err
	}
	grace := ipsetName(ruleset.InboundSetName("grace", fam))
	if err := b.ipset.restore(ctx, fmt.Sprintf("add %s %s\ndel %s %s\n", grace, addr, name, addr)); err != nil {
		return false, fmt.Errorf("%w (relayfw apply restores a missing set)", err)
	}
	return true, nil
}
