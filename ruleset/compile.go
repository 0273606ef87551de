package ruleset

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/relayfw/relayfw/exitpolicy"
)

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
	rs.Outbound = append(rs.Outbound, establishedRules()...)
	rs.Outbound = append(rs.Outbound, hostAllowances(h)...)
	rs.Outbound = append(rs.Outbound, extraAllowances(h.Extra)...)
	sets, links := relayLinks(h)
	rs.Sets = sets
	rs.Outbound = append(rs.Outbound, links...)
	maps, exits := exitRules(insts)
	rs.ExitMaps = maps
	rs.Outbound = append(rs.Outbound, exits...)
	if h.LogRejectsPerMinute > 0 {
		rs.Outbound = append(rs.Outbound, Rule{Name: "log-rejects", Class: ClassLog, Comment: "log what is rejected next, rate-limited",
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
	rs.Outbound = append(rs.Outbound,
		Rule{Name: "reject-tcp", Class: ClassRejectedPolicy, Comment: "everything else: TCP gets a reset", Proto: "tcp",
			Action: Reject, RejectWith: RejectTCPReset},
		Rule{Name: "reject", Class: ClassRejectedDefault, Comment: "everything else: ICMP administratively prohibited",
			Action: Reject, RejectWith: RejectAdminProhibited})
	return rs
}

// establishedRules accept loopback traffic, established and related
// connections, and TCP connections that predate the firewall.
func establishedRules() []Rule {
	return []Rule{
		{Name: "loopback", Class: ClassEstablished, Comment: "loopback traffic, including the resets and ICMP errors rejects send to local sockets",
			OutIface: "lo", Action: Accept},
		{Name: "established", Class: ClassEstablished, Comment: "packets of established and related connections",
			CtState: []string{"established", "related"}, Action: Accept},
		{Name: "midstream", Class: ClassEstablished, Comment: "TCP connections that predate the firewall (conntrack sees them as new, without SYN)",
			CtState: []string{"new"}, Proto: "tcp", TCPMidstream: true, Action: Accept},
	}
}

// hostAllowances are what the host itself needs: ICMP, DNS, package
// updates, DHCP and NTP, as Host enables them.
func hostAllowances(h Host) []Rule {
	var out []Rule
	add := func(r Rule) { out = append(out, r) }
	if h.NDP {
		add(Rule{Name: "icmpv6-nd", Class: ClassHostAllowance, Comment: "IPv6 neighbour and router discovery, MLD",
			Family: IPv6, Proto: "icmpv6", ICMPTypes: []int{130, 131, 132, 133, 134, 135, 136, 143}, Action: Accept})
	}
	if h.Ping {
		add(Rule{Name: "ping4", Class: ClassHostAllowance, Comment: "ICMP echo requests", Family: IPv4, Proto: "icmp", ICMPTypes: []int{8}, Action: Accept})
		add(Rule{Name: "ping6", Class: ClassHostAllowance, Comment: "ICMPv6 echo requests", Family: IPv6, Proto: "icmpv6", ICMPTypes: []int{128}, Action: Accept})
	}
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
	return out
}

// extraAllowances are the admin's own allowances, one rule per family
// they have destinations in.
func extraAllowances(extra []Allowance) []Rule {
	var out []Rule
	for _, a := range extra {
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
			out = append(out, Rule{Name: "extra-" + a.Name + suffix(fam), Class: ClassHostAllowance, Comment: "allowance from relayfw.toml",
				Family: fam, Proto: a.Proto, DstAddrs: dst, DstPorts: a.Ports, SocketUID: a.UID, Action: Accept})
		}
	}
	return out
}

// relayLinks are the relay-link sets, one per family (never nil
// elements: "elements": [] in JSON), and their rules, one per family and
// tor user.
func relayLinks(h Host) ([]Set, []Rule) {
	var sets []Set
	var linkRules []Rule
	linkUsers := relayLinkUsers(h.RelayLinkUsers)
	v4 := 0
	for _, ap := range h.RelayLinks {
		if ap.Addr().Is4() {
			v4++
		}
	}
	for _, fam := range []Family{IPv4, IPv6} {
		n := v4 // sized at once: the Tor network's consensus is 12,000 links
		if fam == IPv6 {
			n = len(h.RelayLinks) - v4
		}
		set := Set{Name: RelayLinkSetName(fam), Family: fam, Comment: "ORPorts and DirPorts of known relays and directory authorities",
			Private: h.PrivateRelayLinks, Elements: make([]Region, 0, n)}
		for _, ap := range h.RelayLinks {
			if ap.Addr().Is4() == (fam == IPv4) && CheckRelayLink(ap, h.PrivateRelayLinks) == nil {
				a := ap.Addr().Unmap()
				set.Elements = append(set.Elements, Region{AddrFirst: a, AddrLast: a, Ports: PortRange{ap.Port(), ap.Port()}})
			}
		}
		sortRegions(set.Elements)
		set.Elements = slices.Compact(set.Elements)
		sets = append(sets, set)
		for _, u := range linkUsers {
			uid := u.UID
			linkRules = append(linkRules, Rule{Name: RelayLinkRuleName(fam, uid, len(linkUsers)), Class: ClassRelayLink,
				Comment: fmt.Sprintf("TCP to other relays and directory authorities, for tor's sockets (user %s, uid %d)", u.Name, u.UID),
				Family:  fam, Proto: "tcp", Set: set.Name, SocketUID: &uid, Action: Accept})
		}
	}
	return sets, linkRules
}

// exitRules are each exit instance's exit maps and their lookups, per
// family.
func exitRules(insts []Instance) ([]ExitMap, []Rule) {
	var maps []ExitMap
	var lookups []Rule
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
			maps = append(maps, m)
			lookups = append(lookups, Rule{Name: m.Name, Class: ClassExit, Comment: comment, Family: fam, Proto: "tcp",
				SrcAddrs: prefixesOf(in.ExitSources, fam), SocketUID: in.UID, ExitMap: m.Name, Action: Accept})
		}
	}
	return maps, lookups
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
