// Package nft installs relayfw's ruleset as one nftables table, inet
// relayfw, over netlink (github.com/google/nftables): no nft binary needed.
//
// The text (print --format nft) and the netlink objects (apply) are both
// generated from one plan, rule by rule, so that `nft -f` of the text and
// apply leave the same kernel state; the integration tests check it.
package nft

import (
	"fmt"
	"net/netip"

	"github.com/relayfw/relayfw/ruleset"
)

// TableName is the one table relayfw owns; its family is inet.
const (
	TableName = "relayfw"
	ChainName = "output"
)

// Linux netfilter protocol numbers used in the plan.
const (
	nfprotoIPv4 = 2
	nfprotoIPv6 = 10

	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
)

// conntrack state bits (ct state).
const (
	ctInvalid     = 1
	ctEstablished = 2
	ctRelated     = 4
	ctNew         = 8
)

// kernelRule is one nftables rule. A ruleset.Rule with several addresses or
// ICMP types becomes several kernel rules with the same comment.
type kernelRule struct {
	name      string
	oifLo     bool
	ctMask    uint32
	nfproto   byte // 0: any family
	skuid     *uint32
	saddr     netip.Addr
	daddr     netip.Prefix // invalid: any
	l4proto   byte         // 0: any protocol
	midstream bool
	icmpType  int // -1: none
	sport     uint16
	dport     ruleset.PortRange // First 0: any
	set       string            // lookup of (daddr . tcp dport) in this set
	portSet   string            // lookup of tcp dport in this set
	vmap      string            // jump by daddr through this verdict map (no counter, no verdict of its own)
	reject    string            // "" accept, else ruleset.RejectTCPReset / RejectAdminProhibited
	logPrefix string            // a log rule: no verdict
	logRate   uint              // per minute
}

// kernelSet is one named set of (address . port) elements.
type kernelSet struct {
	name     string
	v6       bool
	elements []ruleset.Region
}

// kernelMap is an interval verdict map from destination address to the
// chain of the address's port class (or, for a large exit map, to the
// chain of the shard that holds the address).
type kernelMap struct {
	name      string
	v6        bool
	intervals []mapInterval
	stage     int // made after the chains of its stage, before those of the next
}

// mapInterval sends the addresses first to last to chain.
type mapInterval struct {
	first, last netip.Addr
	chain       string
}

// kernelClass is a regular chain of one rule: a port class's, which
// accepts the class's ports, looked up in a set of its own, or every port
// (no set); or a shard's, which looks the address up in the shard's map.
type kernelClass struct {
	chain string
	ports []ruleset.PortRange // nil: no port set
	rule  kernelRule
	stage int // 0: class chains, 1: shard chains (they jump to stage-0 maps)
}

// mapShardSize bounds the intervals of one verdict map. Reading a map back
// (check, and apply's no-op test) costs the kernel more than linear time
// in the map's size (each dump message walks the rbtree from its start),
// so a larger exit map is split into shards of this many intervals, and
// a small top map sends each address to its shard's chain.
const mapShardSize = 4096

// plan is the table's content.
type plan struct {
	rules   []kernelRule // the output chain
	sets    []kernelSet
	maps    []kernelMap
	classes []kernelClass
	inbound *inboundPlan // nil: no inbound protection
	// links are the names of the sets that follow the consensus
	// (ruleset.LinkSets): refresh brings them up to date.
	links map[string]bool
}

// inboundSets are the inbound protection's sets; none without it.
func (p plan) inboundSets() []inboundSet {
	if p.inbound == nil {
		return nil
	}
	return p.inbound.sets
}

var ctBits = map[string]uint32{"invalid": ctInvalid, "established": ctEstablished, "related": ctRelated, "new": ctNew}

var protoNumbers = map[string]byte{"tcp": protoTCP, "udp": protoUDP, "icmp": protoICMP, "icmpv6": protoICMPv6}

// newPlan expands a ruleset into kernel rules and sets. It refuses rule
// fields this backend cannot express instead of installing something else.
func newPlan(rs ruleset.Ruleset) (plan, error) {
	// rs.Validate is the contract; the limits below are this backend's own.
	if err := rs.Validate(); err != nil {
		return plan{}, err
	}
	p := plan{links: map[string]bool{}}
	for _, s := range rs.LinkSets() {
		p.links[s.Name] = true
	}
	for _, s := range rs.Sets {
		p.sets = append(p.sets, kernelSet{name: s.Name, v6: s.Family == ruleset.IPv6, elements: s.Elements})
	}
	exitRule := map[string]string{} // exit map -> name of the rule that looks it up
	for _, r := range rs.Outbound {
		if r.ExitMap != "" {
			exitRule[r.ExitMap] = r.Name
		}
	}
	for _, m := range rs.ExitMaps {
		if err := p.addExitMap(m, exitRule[m.Name]); err != nil {
			return plan{}, err
		}
	}
	for _, r := range rs.Outbound {
		krs, err := expandRule(r)
		if err != nil {
			return plan{}, fmt.Errorf("rule %q: %w", r.Name, err)
		}
		p.rules = append(p.rules, krs...)
	}
	if rs.Inbound != nil {
		p.inbound = newInboundPlan(*rs.Inbound)
	}
	return p, nil
}

func expandRule(r ruleset.Rule) ([]kernelRule, error) {
	base := kernelRule{name: r.Name, icmpType: -1, oifLo: r.OutIface == "lo"}
	// Validate has checked states, family, protocol and ports.
	for _, s := range r.CtState {
		base.ctMask |= ctBits[s]
	}
	switch r.Family {
	case ruleset.IPv4:
		base.nfproto = nfprotoIPv4
	case ruleset.IPv6:
		base.nfproto = nfprotoIPv6
	}
	base.l4proto = protoNumbers[r.Proto]
	base.midstream = r.TCPMidstream
	base.skuid = r.SocketUID
	if len(r.SrcPorts) == 1 {
		base.sport = r.SrcPorts[0].First
	}
	base.set, base.vmap = r.Set, r.ExitMap
	switch r.Action {
	case ruleset.Accept:
	case ruleset.Log:
		if len(r.LogPrefix) > 127 { // nftables' log prefix limit
			return nil, fmt.Errorf("a log prefix of at most 127 characters")
		}
		base.logPrefix, base.logRate = r.LogPrefix, r.LogPerMinute
	case ruleset.Reject:
		base.reject = r.RejectWith
	default:
		return nil, fmt.Errorf("unknown action %q", r.Action)
	}

	// Expand lists: one kernel rule per source, destination and ICMP type.
	out := []kernelRule{base}
	expand := func(n int, set func(k *kernelRule, i int)) {
		if n == 0 {
			return
		}
		var next []kernelRule
		for _, k := range out {
			for i := 0; i < n; i++ {
				c := k
				set(&c, i)
				next = append(next, c)
			}
		}
		out = next
	}
	for _, list := range [][]netip.Prefix{r.SrcAddrs, r.DstAddrs} {
		for _, pfx := range list {
			if base.nfproto == 0 || (pfx.Addr().Is4() != (base.nfproto == nfprotoIPv4)) {
				return nil, fmt.Errorf("address %s does not match the rule's family", pfx)
			}
		}
	}
	expand(len(r.SrcAddrs), func(k *kernelRule, i int) { k.saddr = r.SrcAddrs[i].Addr() })
	expand(len(r.DstAddrs), func(k *kernelRule, i int) { k.daddr = r.DstAddrs[i].Masked() })
	expand(len(r.DstPorts), func(k *kernelRule, i int) { k.dport = r.DstPorts[i] })
	if len(r.ICMPTypes) > 0 && r.Proto != "icmp" && r.Proto != "icmpv6" {
		return nil, fmt.Errorf("icmp_types need proto icmp or icmpv6")
	}
	for _, t := range r.ICMPTypes {
		if t < 0 || t > 255 {
			return nil, fmt.Errorf("icmp type %d out of range", t)
		}
	}
	expand(len(r.ICMPTypes), func(k *kernelRule, i int) { k.icmpType = r.ICMPTypes[i] })
	return out, nil
}

// addExitMap adds the map, and a chain (and port set) per class. The
// chains are entered with jump: a port the class does not accept returns
// to the output chain, whose next rules reject.
func (p *plan) addExitMap(m ruleset.ExitMap, ruleName string) error {
	v6 := m.Family == ruleset.IPv6
	if ruleName == "" {
		return fmt.Errorf("exit map %q: no rule looks it up", m.Name)
	}
	for _, c := range m.Classes {
		k := kernelClass{chain: c.Name,
			rule: kernelRule{name: ruleName, icmpType: -1, l4proto: protoTCP}}
		if !c.AllPorts() {
			k.ports, k.rule.portSet = c.Ports, c.Name
		}
		p.classes = append(p.classes, k)
	}
	var intervals []mapInterval
	for _, iv := range m.Intervals() {
		intervals = append(intervals, mapInterval{first: iv.First, last: iv.Last, chain: m.Classes[iv.Class].Name})
	}
	top := kernelMap{name: m.Name, v6: v6, intervals: intervals, stage: 1}
	if len(intervals) > mapShardSize {
		// Shard i holds its intervals and answers for the addresses from
		// its first interval's start (the family's first address for
		// shard 0) up to the next shard's start.
		top.intervals = nil
		nfproto := byte(nfprotoIPv4)
		first := netip.IPv4Unspecified()
		if v6 {
			nfproto, first = nfprotoIPv6, netip.IPv6Unspecified()
		}
		for i := 0; i < len(intervals); i += mapShardSize {
			name := fmt.Sprintf("%s_s%d", m.Name, i/mapShardSize)
			chunk := intervals[i:min(i+mapShardSize, len(intervals))]
			p.maps = append(p.maps, kernelMap{name: name, v6: v6, intervals: chunk})
			p.classes = append(p.classes, kernelClass{chain: name, stage: 1,
				rule: kernelRule{name: ruleName, icmpType: -1, nfproto: nfproto, vmap: name}})
			last := lastOfFamily(v6)
			if end := i + mapShardSize; end < len(intervals) {
				last = intervals[end].first.Prev()
			}
			top.intervals = append(top.intervals, mapInterval{first: first, last: last, chain: name})
			first = last.Next()
		}
	}
	p.maps = append(p.maps, top)
	return nil
}

// lastOfFamily is the highest IPv4 or IPv6 address.
func lastOfFamily(v6 bool) netip.Addr {
	if v6 {
		return netip.AddrFrom16([16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	}
	return netip.AddrFrom4([4]byte{0xff, 0xff, 0xff, 0xff})
}
