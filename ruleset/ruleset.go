// Package ruleset is the contract between relayfw's model and its
// firewall backends: a backend-neutral Ruleset (outbound rules, relay-link
// sets, exit maps, the inbound protection), what every backend relies on
// (Validate), its reference semantics (Decide), and the compiler from tor
// instances' exit policies and host facts to a ruleset.
package ruleset

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/relayfw/relayfw/exitpolicy"
)

// Family selects IPv4, IPv6 or both.
type Family string

const (
	AnyFamily Family = ""
	IPv4      Family = "ipv4"
	IPv6      Family = "ipv6"
)

// Action is what a Rule does: the exit policy's accept and reject, and
// log. A log rule logs (rate-limited) and lets the packet go on to the
// next rule.
type Action = exitpolicy.Action

const (
	Accept        = exitpolicy.Accept
	Reject        = exitpolicy.Reject
	Log    Action = "log"
)

// Verdict classes: what a rule's matches count as (status, metrics,
// explain).
const (
	ClassEstablished     = "established"      // loopback, established and related, mid-stream pickup
	ClassHostAllowance   = "host_allowance"   // what the host itself needs, and allow.extra
	ClassRelayLink       = "relay_link"       // other relays and directory servers
	ClassExit            = "exit"             // accepted by the exit policy
	ClassRejectedPolicy  = "rejected_policy"  // TCP the exit policy does not accept
	ClassRejectedDefault = "rejected_default" // everything else
	ClassLog             = "log"              // logged, decides nothing
)

// Reject kinds: a TCP reset, or ICMP/ICMPv6 administratively prohibited.
const (
	RejectTCPReset        = "tcp-reset"
	RejectAdminProhibited = "admin-prohibited"
)

// Rule is one backend-neutral outbound rule. Every set field must match
// (an empty field matches anything); the first matching rule decides.
type Rule struct {
	// Name is a stable identifier; backends put it in the rule comment
	// ("relayfw: <name>") and count per name.
	Name    string `json:"name"`
	Comment string `json:"comment"`
	// Class is the verdict class (Class* constants).
	Class string `json:"class"`

	Family   Family   `json:"family,omitempty"`
	OutIface string   `json:"oif,omitempty"`
	CtState  []string `json:"ct_state,omitempty"` // "new", "established", "related"
	Proto    string   `json:"proto,omitempty"`    // "tcp", "udp", "icmp", "icmpv6"
	// TCPMidstream matches a TCP packet with ACK and without SYN, for the
	// pickup of connections that predate the firewall.
	TCPMidstream bool           `json:"tcp_midstream,omitempty"`
	ICMPTypes    []int          `json:"icmp_types,omitempty"`
	SrcAddrs     []netip.Prefix `json:"saddr,omitempty"`
	DstAddrs     []netip.Prefix `json:"daddr,omitempty"`
	SrcPorts     []PortRange    `json:"sport,omitempty"`
	DstPorts     []PortRange    `json:"dport,omitempty"`
	// Set names a set of Ruleset.Sets that (daddr . dport) must be in.
	Set string `json:"set,omitempty"`
	// ExitMap names an exit map of Ruleset.ExitMaps: the class of daddr
	// there must accept the TCP dport.
	ExitMap string `json:"exit_map,omitempty"`
	// SocketUID matches packets of sockets owned by this user.
	SocketUID *uint32 `json:"skuid,omitempty"`

	Action     Action `json:"action"`
	RejectWith string `json:"reject_with,omitempty"`
	// LogPrefix and LogPerMinute configure a log rule.
	LogPrefix    string `json:"log_prefix,omitempty"`
	LogPerMinute uint   `json:"log_per_minute,omitempty"`
}

// Set is a named set of single (address . port) elements: each Region
// has one address and one port. Sets hold relay links: every element
// passes CheckRelayLink.
type Set struct {
	Name     string   `json:"name"`
	Family   Family   `json:"family"`
	Comment  string   `json:"comment"`
	Elements []Region `json:"elements"`
	// Private lets the elements be internal addresses (CheckRelayLink):
	// the relays of a tor instance that runs TestingTorNetwork.
	Private bool `json:"private,omitempty"`
}

// Ruleset is what a backend installs: ordered outbound rules, the sets and
// the exit maps they look up. IPv4 and IPv6 alike.
type Ruleset struct {
	Version  int       `json:"version"`
	Outbound []Rule    `json:"outbound"`
	Sets     []Set     `json:"sets"`
	ExitMaps []ExitMap `json:"exit_maps"`
	// Inbound, when not nil, protects the relays' ORPorts (opt-in).
	Inbound *Inbound `json:"inbound,omitempty"`
}

// RulesetVersion is the version of the Ruleset JSON format. Version 2
// replaced the exit policy's interval sets by exit maps; version 3 the
// inbound protection's ports by endpoints (address and port: a reader of
// "ports" would see nothing protected).
const RulesetVersion = 3

// Set returns the named set.
func (rs Ruleset) Set(name string) (Set, bool) {
	for _, s := range rs.Sets {
		if s.Name == name {
			return s, true
		}
	}
	return Set{}, false
}

// ExitMap returns the named exit map.
func (rs Ruleset) ExitMap(name string) (ExitMap, bool) {
	for _, m := range rs.ExitMaps {
		if m.Name == name {
			return m, true
		}
	}
	return ExitMap{}, false
}

// Packet is an outgoing packet as the ruleset sees it.
type Packet struct {
	OutIface string
	Src, Dst netip.Addr
	Proto    string // "tcp", "udp", "icmp", "icmpv6"
	SrcPort  uint16
	DstPort  uint16
	CtState  string // "new" (default), "established", "related"
	SYN, ACK bool
	ICMPType int
	// UID owns the sending socket; nil when unknown (no user rule matches).
	UID *uint32
}

// Verdict is the answer of a ruleset for one packet, in the shape of the
// exit policy's: the action, and the rule that decided it (Index is its
// position in Outbound, -1 when none did: backends then accept, as the
// chain policy is accept, and every compiled ruleset ends in catch-all
// rejects).
type Verdict struct {
	Action Action
	Index  int
	Rule   Rule
}

// Decide is first-match over the outbound rules; log rules decide nothing.
func (rs Ruleset) Decide(p Packet) Verdict {
	for i, r := range rs.Outbound {
		if r.Action != Log && rs.matches(r, p) {
			return Verdict{Action: r.Action, Index: i, Rule: r}
		}
	}
	return Verdict{Action: Accept, Index: -1}
}

func (rs Ruleset) matches(r Rule, p Packet) bool {
	state := p.CtState
	if state == "" {
		state = "new"
	}
	switch {
	case r.Family == IPv4 && !p.Dst.Is4(), r.Family == IPv6 && p.Dst.Is4():
		return false
	case r.OutIface != "" && r.OutIface != p.OutIface:
		return false
	case len(r.CtState) > 0 && !slices.Contains(r.CtState, state):
		return false
	case r.Proto != "" && r.Proto != p.Proto:
		return false
	case r.TCPMidstream && !(p.Proto == "tcp" && p.ACK && !p.SYN):
		return false
	case len(r.ICMPTypes) > 0 && !slices.Contains(r.ICMPTypes, p.ICMPType):
		return false
	case len(r.SrcAddrs) > 0 && !prefixesContain(r.SrcAddrs, p.Src):
		return false
	case len(r.DstAddrs) > 0 && !prefixesContain(r.DstAddrs, p.Dst):
		return false
	case len(r.SrcPorts) > 0 && !portsContain(r.SrcPorts, p.SrcPort):
		return false
	case len(r.DstPorts) > 0 && !portsContain(r.DstPorts, p.DstPort):
		return false
	case r.SocketUID != nil && (p.UID == nil || *p.UID != *r.SocketUID):
		return false
	}
	if r.ExitMap != "" {
		m, ok := rs.ExitMap(r.ExitMap)
		if !ok || !m.Accepts(p.Dst, p.DstPort) {
			return false
		}
	}
	if r.Set != "" {
		s, ok := rs.Set(r.Set)
		if !ok {
			return false
		}
		_, found := slices.BinarySearchFunc(s.Elements, p, func(e Region, p Packet) int {
			if c := e.AddrLast.Compare(p.Dst); c < 0 {
				return -1
			} else if e.AddrFirst.Compare(p.Dst) > 0 {
				return 1
			}
			switch {
			case e.Ports.Last < p.DstPort:
				return -1
			case e.Ports.First > p.DstPort:
				return 1
			}
			return 0
		})
		if !found {
			return false
		}
	}
	return true
}

func prefixesContain(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func portsContain(rs []PortRange, port uint16) bool {
	for _, r := range rs {
		if port >= r.First && port <= r.Last {
			return true
		}
	}
	return false
}

// String is a one-line summary, for logs.
func (rs Ruleset) String() string {
	n, prefixes, classes := 0, 0, 0
	for _, s := range rs.Sets {
		n += len(s.Elements)
	}
	for _, m := range rs.ExitMaps {
		prefixes += len(m.Prefixes)
		classes += len(m.Classes)
	}
	return fmt.Sprintf("%d rules, %d sets, %d set elements, %d exit-map prefixes, %d port classes",
		len(rs.Outbound), len(rs.Sets), n, prefixes, classes)
}
