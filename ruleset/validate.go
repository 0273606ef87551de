package ruleset

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Validate is the contract every backend relies on: what a ruleset must be
// for a backend to install exactly its meaning. Compile's rulesets always
// pass; a ruleset read from JSON (a rollback, a provisioning program's)
// may not. Backends add only their own limits (nftables: one output
// interface, lo; iptables: log prefixes of 29 characters).
func (rs Ruleset) Validate() error {
	sets := map[string]Family{}
	for _, s := range rs.Sets {
		if s.Family != IPv4 && s.Family != IPv6 {
			return fmt.Errorf("set %q: needs family ipv4 or ipv6", s.Name)
		}
		if err := validName(s.Name); err != nil {
			return fmt.Errorf("set %q: %w", s.Name, err)
		}
		for _, e := range s.Elements {
			if e.AddrFirst != e.AddrLast || e.Ports.First != e.Ports.Last || e.Ports.First == 0 {
				return fmt.Errorf("set %q: %s:%d-%d is not one address and one port", s.Name, e.AddrFirst, e.Ports.First, e.Ports.Last)
			}
			if e.AddrFirst.Is4() != (s.Family == IPv4) {
				return fmt.Errorf("set %q: element %s of the wrong family", s.Name, e.AddrFirst)
			}
			if err := CheckRelayLink(netip.AddrPortFrom(e.AddrFirst, e.Ports.First), s.Private); err != nil {
				return fmt.Errorf("set %q: %s: a relay link may not go to %w", s.Name, netip.AddrPortFrom(e.AddrFirst, e.Ports.First), err)
			}
		}
		sets[s.Name] = s.Family
	}
	maps := map[string]Family{}
	for _, m := range rs.ExitMaps {
		if m.Family != IPv4 && m.Family != IPv6 {
			return fmt.Errorf("exit map %q: needs family ipv4 or ipv6", m.Name)
		}
		if err := validName(m.Name); err != nil {
			return fmt.Errorf("exit map %q: %w", m.Name, err)
		}
		for _, pc := range m.Prefixes {
			if pc.Prefix.Addr().Is4() != (m.Family == IPv4) || pc.Class < NoClass || pc.Class >= len(m.Classes) {
				return fmt.Errorf("exit map %q: prefix %s of the wrong family or class", m.Name, pc.Prefix)
			}
		}
		for _, c := range m.Classes {
			if len(c.Ports) == 0 {
				return fmt.Errorf("exit map %q: class %s accepts no port", m.Name, c.Name)
			}
			if err := validName(c.Name); err != nil {
				return fmt.Errorf("exit map %q: class %q: %w", m.Name, c.Name, err)
			}
			for _, pr := range c.Ports {
				if pr.First == 0 || pr.First > pr.Last {
					return fmt.Errorf("exit map %q: class %s: %d-%d is not a port range", m.Name, c.Name, pr.First, pr.Last)
				}
			}
		}
		maps[m.Name] = m.Family
	}
	for _, r := range rs.Outbound {
		if err := r.validate(sets, maps); err != nil {
			return fmt.Errorf("rule %q: %w", r.Name, err)
		}
	}
	if rs.Inbound != nil {
		for name := range sets {
			if strings.HasPrefix(name, "inbound") {
				return fmt.Errorf("set %q: names starting with inbound are the inbound protection's", name)
			}
		}
		for name := range maps {
			if strings.HasPrefix(name, "inbound") {
				return fmt.Errorf("exit map %q: names starting with inbound are the inbound protection's", name)
			}
		}
		return rs.Inbound.Validate()
	}
	return nil
}

func (r Rule) validate(sets, maps map[string]Family) error {
	if err := r.validateMatches(); err != nil {
		return err
	}
	if err := r.validateLookups(sets, maps); err != nil {
		return err
	}
	return r.validateAction()
}

// validateMatches checks the fields a packet is matched on, with the
// limits both backends share: output interface lo only, single source
// addresses, one single source port.
func (r Rule) validateMatches() error {
	switch r.Family {
	case AnyFamily, IPv4, IPv6:
	default:
		return fmt.Errorf("unknown family %q", r.Family)
	}
	switch r.Proto {
	case "", "tcp", "udp", "icmp", "icmpv6":
	default:
		return fmt.Errorf("unknown protocol %q", r.Proto)
	}
	for _, s := range r.CtState {
		if s != "new" && s != "established" && s != "related" {
			return fmt.Errorf("unknown ct state %q", s)
		}
	}
	if r.OutIface != "" && r.OutIface != "lo" {
		return fmt.Errorf("output interface %q: only lo is supported", r.OutIface)
	}
	for _, p := range r.SrcAddrs {
		if p.IsValid() && !p.IsSingleIP() {
			return fmt.Errorf("source %s: only single addresses are supported", p)
		}
	}
	if len(r.SrcPorts) > 1 || len(r.SrcPorts) == 1 && (r.SrcPorts[0].First != r.SrcPorts[0].Last || r.SrcPorts[0].First == 0) {
		return errors.New("source ports: only one single port is supported")
	}
	if len(r.SrcPorts) == 1 && (len(r.DstPorts) > 1 || len(r.DstPorts) == 1 && r.DstPorts[0].First != r.DstPorts[0].Last) {
		return errors.New("a source port goes with one single destination port")
	}
	if r.TCPMidstream && r.Proto != "tcp" {
		return errors.New("tcp_midstream needs proto tcp")
	}
	for _, p := range append(slices.Clone(r.SrcAddrs), r.DstAddrs...) {
		if !p.IsValid() || r.Family == IPv4 && !p.Addr().Is4() || r.Family == IPv6 && p.Addr().Is4() {
			return fmt.Errorf("address %s does not fit family %q", p, r.Family)
		}
	}
	for _, pr := range append(slices.Clone(r.SrcPorts), r.DstPorts...) {
		if pr.First == 0 || pr.First > pr.Last {
			return fmt.Errorf("%d-%d is not a port range", pr.First, pr.Last)
		}
	}
	if (len(r.SrcPorts) > 0 || len(r.DstPorts) > 0) && r.Proto != "tcp" && r.Proto != "udp" {
		return errors.New("ports need proto tcp or udp")
	}
	if len(r.ICMPTypes) > 0 && r.Proto != "icmp" && r.Proto != "icmpv6" {
		return errors.New("icmp_types need proto icmp or icmpv6")
	}
	return nil
}

// validateLookups checks set and exit-map lookups against the ruleset's
// sets and maps.
func (r Rule) validateLookups(sets, maps map[string]Family) error {
	if r.Set != "" || r.ExitMap != "" {
		if r.Proto != "tcp" || r.Family == AnyFamily || len(r.DstPorts) > 0 || len(r.DstAddrs) > 0 || (r.Set != "" && r.ExitMap != "") {
			return errors.New("set and exit map lookups need one family, proto tcp, no daddr and no dport")
		}
	}
	if r.Set != "" {
		if fam, ok := sets[r.Set]; !ok || fam != r.Family {
			return fmt.Errorf("set %q is not in the ruleset or not of the rule's family", r.Set)
		}
	}
	if r.ExitMap != "" {
		if fam, ok := maps[r.ExitMap]; !ok || fam != r.Family {
			return fmt.Errorf("exit map %q is not in the ruleset or not of the rule's family", r.ExitMap)
		}
		if r.Action != Accept {
			return errors.New("an exit map lookup accepts")
		}
	}
	if r.Class == ClassRelayLink && (r.Set == "" || r.SocketUID == nil || r.Action != Accept) {
		// The consensus lists them, and tor's user writes it: a relay link
		// for every socket would let any user reach what it lists.
		return errors.New("a relay-link rule accepts a set lookup for one user's sockets (skuid): relay links are tor's alone")
	}
	return nil
}

// validateAction checks the action and what goes with it.
func (r Rule) validateAction() error {
	switch r.Action {
	case Accept:
	case Log:
		if r.LogPerMinute == 0 || r.LogPrefix == "" || strings.ContainsAny(r.LogPrefix, "\"\\\n") {
			return errors.New("a log rule needs a rate and a plain prefix")
		}
	case Reject:
		switch r.RejectWith {
		case RejectTCPReset:
			if r.Proto != "tcp" {
				return errors.New("a TCP reset needs proto tcp")
			}
		case RejectAdminProhibited:
		default:
			return fmt.Errorf("unknown reject kind %q", r.RejectWith)
		}
	default:
		return fmt.Errorf("unknown action %q", r.Action)
	}
	return validName(r.Name)
}

// validName keeps names usable in nft text, iptables comments and ipset
// names: letters, digits, "_" and "-", at most 64 characters.
func validName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("name %q: want 1 to 64 characters", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("name %q: want letters, digits, _ and -", name)
		}
	}
	return nil
}
