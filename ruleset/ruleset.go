// Package ruleset is the contract between relayfw's model and its
// firewall backends: a backend-neutral Ruleset (outbound rules, relay-link
// sets, exit maps, the inbound protection), what every backend relies on
// (Validate), its reference semantics (Decide), and the compiler from tor
// instances' exit policies and host facts to a ruleset.
package ruleset

import (
	"cmp"
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

// Host is what the compiler needs to know about the machine beyond the
// exit policy: what the host itself must keep reaching.
type Host struct {
	// Resolvers get DNS (UDP and TCP port 53).
	Resolvers []netip.Addr
	// LocalResolver is the user of the host's own recursive resolver
	// (unbound, bind9, …): its sockets get DNS to any address.
	LocalResolver *UserRef
	// Updates is the user package downloads run as (_apt): its sockets get
	// TCP 80 and 443 to any address, whatever the exit policy.
	Updates *UserRef
	// DHCP, NTP and Ping allow DHCP/DHCPv6 client traffic, NTP (UDP 123)
	// and ICMP echo requests; NDP IPv6 neighbour and router discovery and
	// MLD, without which IPv6 stops working.
	DHCP, NTP, Ping, NDP bool
	// RelayLinks are ORPorts and DirPorts of other relays and directory
	// authorities, reachable over TCP whatever the exit policy says, by
	// sockets of RelayLinkUsers only. Those CheckRelayLink refuses are
	// left out.
	RelayLinks []netip.AddrPort
	// RelayLinkUsers are the users of the tor instances that make relay
	// links: only their sockets reach RelayLinks (the consensus is written
	// by tor's user; any other user must not get what it lists). None:
	// root, as whom tor runs without User.
	RelayLinkUsers []UserRef
	// PrivateRelayLinks lets relay links be internal addresses: a tor
	// instance runs TestingTorNetwork.
	PrivateRelayLinks bool
	// ExitSources are OutboundBindAddressExit addresses: where set for a
	// family, the exit policy applies only to packets from them.
	ExitSources []netip.Addr
	// Extra are the admin's own allowances (relayfw.toml allow.extra).
	Extra []Allowance
	// LogRejectsPerMinute, when not 0, logs rejected packets to the kernel
	// log at most this often ("relayfw reject: " prefix).
	LogRejectsPerMinute uint
	// Inbound, when not nil, is the ORPort protection to install.
	Inbound *Inbound
}

// UserRef is a user by name (for comments) and uid (for the kernel).
type UserRef struct {
	Name string
	UID  uint32
}

// Allowance lets the host reach destinations the exit policy does not
// cover, e.g. package mirrors for the user _apt.
type Allowance struct {
	Name  string         // "relayfw: extra-<name>" in rule comments
	Proto string         // "tcp" or "udp"
	Dst   []netip.Prefix // none: any address
	Ports []PortRange    // none: any port
	UID   *uint32        // only sockets of this user
}

// DefaultHost allows DHCP, NTP, ping and NDP, the defaults an operator
// expects.
func DefaultHost() Host { return Host{DHCP: true, NTP: true, Ping: true, NDP: true} }

// Instance is one tor process on the host as the firewall sees it: its
// exit policy applies to its own exit traffic only.
type Instance struct {
	Name   string                // "default", or the Debian instance name
	Policy exitpolicy.ExitPolicy // the effective policy; reject *:* for a non-exit
	// UID is the instance's User: its policy applies to sockets of this
	// user only. nil (one torrc without a User) means every socket.
	UID  *uint32
	User string // its User's name, for comments
	// ExitSources are its OutboundBindAddressExit addresses: where set for
	// a family, its policy applies only to packets from them.
	ExitSources []netip.Addr
}

// Compile turns an effective exit policy and host facts into the ruleset
// of a single tor that has no User: its policy applies to every socket,
// its relay links to Host.RelayLinkUsers' (root's when none is given).
func Compile(p exitpolicy.ExitPolicy, h Host) Ruleset {
	return CompileInstances([]Instance{{Name: "default", Policy: p, ExitSources: h.ExitSources}}, h)
}

// ExitInstances are the instances that exit traffic of a family; the
// others (middles, bridges, clients) add no exit rule.
func ExitInstances(insts []Instance, v6 bool) []Instance {
	var out []Instance
	for _, in := range insts {
		if !in.Policy.RejectsFamily(v6) {
			out = append(out, in)
		}
	}
	return out
}

// ExitMapName names the exit map of the i-th exit instance (0-based) of
// n: "exit4"/"exit6" for a single one, else "exit4_i1", "exit4_i2", …
// (short: the iptables backend puts them into 31-character ipset names).
func ExitMapName(i, n int, v6 bool) string {
	name := "exit" + suffix(IPv4)
	if v6 {
		name = "exit" + suffix(IPv6)
	}
	if n > 1 {
		name += fmt.Sprintf("_i%d", i+1)
	}
	return name
}

// CompileInstances turns the effective exit policies of the host's tor
// instances and host facts into the ruleset, in this order (first match
// decides): loopback, established, ICMP the host needs, host allowances,
// relay links (one rule per family and tor user: the users in
// Host.RelayLinkUsers), each exit instance's policy as one exit map
// lookup per family (scoped to its user and exit addresses), then reject.
func CompileInstances(insts []Instance, h Host) Ruleset {
	rs := Ruleset{Version: RulesetVersion}
	add := func(r Rule) { rs.Outbound = append(rs.Outbound, r) }

	add(Rule{Name: "loopback", Class: ClassEstablished, Comment: "loopback traffic, including the resets and ICMP errors rejects send to local sockets",
		OutIface: "lo", Action: Accept})
	add(Rule{Name: "established", Class: ClassEstablished, Comment: "packets of established and related connections",
		CtState: []string{"established", "related"}, Action: Accept})
	add(Rule{Name: "midstream", Class: ClassEstablished, Comment: "TCP connections that predate the firewall (conntrack sees them as new, without SYN)",
		CtState: []string{"new"}, Proto: "tcp", TCPMidstream: true, Action: Accept})
	if h.NDP {
		add(Rule{Name: "icmpv6-nd", Class: ClassHostAllowance, Comment: "IPv6 neighbour and router discovery, MLD",
			Family: IPv6, Proto: "icmpv6", ICMPTypes: []int{130, 131, 132, 133, 134, 135, 136, 143}, Action: Accept})
	}
	if h.Ping {
		add(Rule{Name: "ping4", Class: ClassHostAllowance, Comment: "ICMP echo requests", Family: IPv4, Proto: "icmp", ICMPTypes: []int{8}, Action: Accept})
		add(Rule{Name: "ping6", Class: ClassHostAllowance, Comment: "ICMPv6 echo requests", Family: IPv6, Proto: "icmpv6", ICMPTypes: []int{128}, Action: Accept})
	}
	if len(h.Resolvers) > 0 {
		for _, fam := range []Family{IPv4, IPv6} {
			dst := prefixesOf(h.Resolvers, fam)
			if len(dst) == 0 {
				continue
			}
			for _, proto := range []string{"udp", "tcp"} {
				add(Rule{Name: "dns-" + proto + suffix(fam), Class: ClassHostAllowance, Comment: "DNS to the configured resolvers",
					Family: fam, Proto: proto, DstAddrs: dst, DstPorts: []PortRange{{53, 53}}, Action: Accept})
			}
		}
	}
	if r := h.LocalResolver; r != nil {
		uid := r.UID
		for _, proto := range []string{"udp", "tcp"} {
			add(Rule{Name: "dns-resolver-" + proto, Class: ClassHostAllowance,
				Comment: fmt.Sprintf("DNS of the local recursive resolver (user %s) to any name server", r.Name),
				Proto:   proto, DstPorts: []PortRange{{53, 53}}, SocketUID: &uid, Action: Accept})
		}
	}
	if u := h.Updates; u != nil {
		uid := u.UID
		add(Rule{Name: "updates", Class: ClassHostAllowance,
			Comment: fmt.Sprintf("package updates: TCP 80 and 443 for user %s", u.Name),
			Proto:   "tcp", DstPorts: []PortRange{{80, 80}, {443, 443}}, SocketUID: &uid, Action: Accept})
	}
	if h.DHCP {
		add(Rule{Name: "dhcp4", Class: ClassHostAllowance, Comment: "DHCP client", Family: IPv4, Proto: "udp",
			SrcPorts: []PortRange{{68, 68}}, DstPorts: []PortRange{{67, 67}}, Action: Accept})
		add(Rule{Name: "dhcp6", Class: ClassHostAllowance, Comment: "DHCPv6 client", Family: IPv6, Proto: "udp",
			SrcPorts: []PortRange{{546, 546}}, DstPorts: []PortRange{{547, 547}}, Action: Accept})
	}
	if h.NTP {
		add(Rule{Name: "ntp", Class: ClassHostAllowance, Comment: "NTP", Proto: "udp", DstPorts: []PortRange{{123, 123}}, Action: Accept})
	}
	for _, a := range h.Extra {
		for _, fam := range []Family{IPv4, IPv6} {
			var dst []netip.Prefix
			for _, p := range a.Dst {
				if p.Addr().Is4() == (fam == IPv4) {
					dst = append(dst, p.Masked())
				}
			}
			if len(a.Dst) > 0 && len(dst) == 0 {
				continue // nothing of this family
			}
			add(Rule{Name: "extra-" + a.Name + suffix(fam), Class: ClassHostAllowance, Comment: "allowance from relayfw.toml",
				Family: fam, Proto: a.Proto, DstAddrs: dst, DstPorts: a.Ports, SocketUID: a.UID, Action: Accept})
		}
	}
	linkUsers := relayLinkUsers(h.RelayLinkUsers)
	for _, fam := range []Family{IPv4, IPv6} {
		set := Set{Name: "relays" + suffix(fam), Family: fam, Comment: "ORPorts and DirPorts of known relays and directory authorities",
			Private: h.PrivateRelayLinks}
		for _, ap := range h.RelayLinks {
			if ap.Addr().Is4() == (fam == IPv4) && CheckRelayLink(ap, h.PrivateRelayLinks) == nil {
				a := ap.Addr().Unmap()
				set.Elements = append(set.Elements, Region{AddrFirst: a, AddrLast: a, Ports: PortRange{ap.Port(), ap.Port()}})
			}
		}
		sortRegions(set.Elements)
		set.Elements = slices.Compact(set.Elements)
		rs.Sets = append(rs.Sets, set)
		for _, u := range linkUsers {
			uid := u.UID
			add(Rule{Name: RelayLinkRuleName(fam, uid, len(linkUsers)), Class: ClassRelayLink,
				Comment: fmt.Sprintf("TCP to other relays and directory authorities, for tor's sockets (user %s, uid %d)", u.Name, u.UID),
				Family:  fam, Proto: "tcp", Set: set.Name, SocketUID: &uid, Action: Accept})
		}
	}
	for _, fam := range []Family{IPv4, IPv6} {
		exits := ExitInstances(insts, fam == IPv6)
		if len(insts) == 1 && insts[0].UID == nil {
			exits = insts // one torrc without User: as before instances, always a rule
		}
		for i, in := range exits {
			m := NewExitMap(in.Policy, ExitMapName(i, len(exits), fam == IPv6), fam == IPv6)
			m.Comment = "the TCP ports the exit policy accepts, by class of destination address"
			comment := "the relay's exit policy (TCP)"
			if in.UID != nil {
				m.Comment = fmt.Sprintf("tor instance %s: the TCP ports its exit policy accepts, by class of destination address", in.Name)
				comment = fmt.Sprintf("the exit policy of tor instance %s (TCP, sockets of user %s, uid %d)", in.Name, cmp.Or(in.User, "root"), *in.UID)
			}
			rs.ExitMaps = append(rs.ExitMaps, m)
			add(Rule{Name: m.Name, Class: ClassExit, Comment: comment, Family: fam, Proto: "tcp",
				SrcAddrs: prefixesOf(in.ExitSources, fam), SocketUID: in.UID, ExitMap: m.Name, Action: Accept})
		}
	}
	for i := range rs.Sets {
		if rs.Sets[i].Elements == nil {
			rs.Sets[i].Elements = []Region{} // "elements": [] in JSON
		}
	}
	if h.LogRejectsPerMinute > 0 {
		add(Rule{Name: "log-rejects", Class: ClassLog, Comment: "log what is rejected next, rate-limited",
			Action: Log, LogPrefix: "relayfw reject: ", LogPerMinute: h.LogRejectsPerMinute})
	}
	if h.Inbound != nil {
		in := *h.Inbound
		in.Endpoints = NormalizeEndpoints(in.Endpoints)
		in.Trusted = MergePrefixes(in.Trusted)
		if in.Trusted == nil {
			in.Trusted = []netip.Prefix{} // "trusted": [] in JSON
		}
		rs.Inbound = &in
	}
	add(Rule{Name: "reject-tcp", Class: ClassRejectedPolicy, Comment: "everything else: TCP gets a reset", Proto: "tcp",
		Action: Reject, RejectWith: RejectTCPReset})
	add(Rule{Name: "reject", Class: ClassRejectedDefault, Comment: "everything else: ICMP administratively prohibited",
		Action: Reject, RejectWith: RejectAdminProhibited})
	return rs
}

// RelayLinkRuleName names the relay-link rule of a family for the user
// uid, one of n users: "relay-links4"/"relay-links6" for a single user
// (the usual host: one tor user), else "relay-links4-uid<uid>", so that
// each user's rule keeps its name (and counters) when others come and go.
func RelayLinkRuleName(fam Family, uid uint32, n int) string {
	name := "relay-links" + suffix(fam)
	if n > 1 {
		name += fmt.Sprintf("-uid%d", uid)
	}
	return name
}

// relayLinkUsers are the users who get relay links, one per uid, by uid;
// root when none is given (tor without User runs as root).
func relayLinkUsers(users []UserRef) []UserRef {
	if len(users) == 0 {
		return []UserRef{{Name: "root", UID: 0}}
	}
	out := slices.Clone(users)
	slices.SortStableFunc(out, func(a, b UserRef) int { return cmp.Compare(a.UID, b.UID) })
	return slices.CompactFunc(out, func(a, b UserRef) bool { return a.UID == b.UID })
}

// FamilyOf is an address's family (an IPv4-mapped address is IPv4).
func FamilyOf(a netip.Addr) Family {
	if a.Unmap().Is4() {
		return IPv4
	}
	return IPv6
}

// Bits is the length of the family's addresses: 32, or 128 for IPv6.
func (f Family) Bits() int {
	if f == IPv6 {
		return 128
	}
	return 32
}

func suffix(f Family) string {
	if f == IPv6 {
		return "6"
	}
	return "4"
}

func prefixesOf(addrs []netip.Addr, fam Family) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range addrs {
		a = a.Unmap()
		if a.Is4() != (fam == IPv4) {
			continue
		}
		p := netip.PrefixFrom(a, a.BitLen())
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

func sortRegions(rs []Region) {
	slices.SortFunc(rs, func(a, b Region) int {
		if c := a.AddrFirst.Compare(b.AddrFirst); c != 0 {
			return c
		}
		return int(a.Ports.First) - int(b.Ports.First)
	})
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
