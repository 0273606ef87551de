// Package exitpolicy is tor's exit-policy language: entries as tor
// parses and prints them, first-match verdicts, and the effective policy
// tor computes from a torrc's options and the host's addresses.
package exitpolicy

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/relayfw/relayfw/internal/torcompat"
)

// Action is what an exit-policy entry, or a firewall rule, does with a
// matching destination. The ruleset adds its own log action to these.
type Action string

const (
	Accept Action = "accept"
	Reject Action = "reject"
)

func (a Action) String() string { return string(a) }

// Entry is one exit-policy line after tor's expansion: one address family,
// one prefix, one port range. Addr keeps the address as the operator wrote
// it (tor prints "accept 203.0.113.77/24:80", not the masked network).
type Entry struct {
	Action  Action
	Addr    netip.Addr // IPv4 or IPv6 (never 4in6-unmapped)
	Bits    int        // prefix length; 0 is a wildcard
	PortMin uint16
	PortMax uint16
}

// IPv6 reports whether the entry is about IPv6 destinations.
func (e Entry) IPv6() bool { return !e.Addr.Is4() }

// String formats the entry exactly as tor's policy_write_item does for a
// descriptor (and so for GETINFO exit-policy/full).
func (e Entry) String() string {
	var b strings.Builder
	b.WriteString(string(e.Action))
	if e.IPv6() {
		b.WriteByte('6')
	}
	b.WriteByte(' ')
	maxBits := 32
	if e.IPv6() {
		maxBits = 128
	}
	if e.Bits == 0 {
		b.WriteByte('*')
	} else {
		b.WriteString(torcompat.AddrString(e.Addr))
		if e.Bits < maxBits {
			b.WriteByte('/')
			b.WriteString(strconv.Itoa(e.Bits))
		}
	}
	switch {
	case e.PortMin <= 1 && e.PortMax == 65535:
		b.WriteString(":*")
	case e.PortMin == e.PortMax:
		fmt.Fprintf(&b, ":%d", e.PortMin)
	default:
		fmt.Fprintf(&b, ":%d-%d", e.PortMin, e.PortMax)
	}
	return b.String()
}

// Contains reports whether the entry's prefix contains addr (tor's
// tor_addr_compare_masked with CMP_EXACT: families never match each other).
func (e Entry) Contains(addr netip.Addr) bool {
	if addr.Is4() != e.Addr.Is4() {
		return false
	}
	return maskedEqual(addr, e.Addr, e.Bits)
}

// Matches reports whether the entry decides a connection to addr:port.
func (e Entry) Matches(addr netip.Addr, port uint16) bool {
	return e.Contains(addr) && port >= e.PortMin && port <= e.PortMax
}

// Network is the entry's prefix as a masked netip.Prefix.
func (e Entry) Network() netip.Prefix {
	p, _ := e.Addr.Prefix(e.Bits)
	return p
}

func maskedEqual(a, b netip.Addr, bits int) bool {
	pa, _ := a.Prefix(bits)
	pb, _ := b.Prefix(bits)
	return pa.Addr() == pb.Addr()
}

// ExitPolicy is an ordered list of entries; the first match decides.
type ExitPolicy struct {
	Entries []Entry
}

// Verdict is the answer for one destination: the action and the entry that
// decided it (Index is its position in Entries, -1 when nothing matched and
// tor's implicit accept applied).
type Verdict struct {
	Action Action
	Index  int
	Entry  Entry
}

// Decide answers first-match for addr:port, as tor's
// compare_tor_addr_to_addr_policy does for a known address and port.
func (p ExitPolicy) Decide(addr netip.Addr, port uint16) Verdict {
	addr = addr.Unmap()
	for i, e := range p.Entries {
		if e.Matches(addr, port) {
			return Verdict{Action: e.Action, Index: i, Entry: e}
		}
	}
	return Verdict{Action: Accept, Index: -1}
}

// IsRejectStar is tor's policy_is_reject_star(policy, family, 1) for both
// families: true when the policy can accept nothing at all. tor then
// publishes "reject *:*".
func (p ExitPolicy) IsRejectStar() bool {
	return p.RejectsFamily(false) && p.RejectsFamily(true)
}

// RejectsFamily is tor's policy_is_reject_star(policy, family, 1) for one
// family (v6 false: IPv4): true when the policy accepts no destination of
// it.
func (p ExitPolicy) RejectsFamily(v6 bool) bool {
	for _, e := range p.Entries {
		if e.IPv6() != v6 {
			continue
		}
		if e.Action == Accept {
			return false
		}
		if e.PortMin <= 1 && e.PortMax == 65535 && e.Bits == 0 {
			return true
		}
	}
	return true
}

// Lines is the policy as tor's GETINFO exit-policy/full prints it, one
// entry per line; a policy that accepts nothing is the single "reject *:*".
func (p ExitPolicy) Lines() []string {
	if p.IsRejectStar() {
		return []string{"reject *:*"}
	}
	out := make([]string, len(p.Entries))
	for i, e := range p.Entries {
		out[i] = e.String()
	}
	return out
}

// String is Lines joined by newlines.
func (p ExitPolicy) String() string { return strings.Join(p.Lines(), "\n") }

// ErrMalformed marks an exit-policy entry tor refuses; tor then refuses
// to start.
var ErrMalformed = errors.New("malformed exit policy entry")

// EntryError describes a refused entry.
type EntryError struct {
	Entry  string
	Reason string
}

func (e *EntryError) Error() string {
	return fmt.Sprintf("malformed exit policy entry %q: %s", e.Entry, e.Reason)
}

func (e *EntryError) Unwrap() error { return ErrMalformed }

// rawEntry is an entry before tor's expansion of "private" and of "*"
// into its IPv4 and IPv6 halves.
type rawEntry struct {
	action  Action
	private bool
	unspec  bool // "*" with accept/reject: both families
	addr    netip.Addr
	bits    int
	portMin uint16
	portMax uint16
}

// Parse parses the value of one ExitPolicy line (comma-separated
// entries) exactly as tor's parse_addr_policy does, and expands "private"
// and "*". Entries tor ignores with a warning (accept6/reject6 with an IPv4
// address) are left out and described in warnings. Any malformed entry
// fails the whole value, as it makes tor refuse to start.
func Parse(value string) (entries []Entry, warnings []string, err error) {
	for _, item := range splitPolicyList(value) {
		raw, warn, err := parsePolicyItem(item)
		if err != nil {
			return nil, nil, err
		}
		if warn != "" {
			warnings = append(warnings, warn)
		}
		if raw == nil {
			continue
		}
		entries = append(entries, expandRaw(*raw)...)
	}
	return entries, warnings, nil
}

// splitPolicyList is smartlist_split_string(value, ",",
// SPLIT_SKIP_SPACE|SPLIT_IGNORE_BLANK).
func splitPolicyList(value string) []string {
	var out []string
	for _, part := range strings.Split(value, ",") {
		part = strings.TrimFunc(part, func(r rune) bool { return r < 0x80 && torcompat.IsSpace(byte(r)) })
		if part != "" {
			out = append(out, part)
		}
	}
	return out
}

// privateNets is tor's private_nets[] in its order.
var privateNets = []string{
	"0.0.0.0/8", "169.254.0.0/16",
	"127.0.0.0/8", "192.168.0.0/16", "10.0.0.0/8", "172.16.0.0/12",
	"[::]/8",
	"[fc00::]/7", "[fe80::]/10", "[fec0::]/10", "[ff00::]/8", "[::]/127",
}

func expandRaw(r rawEntry) []Entry {
	switch {
	case r.private:
		out := make([]Entry, 0, len(privateNets))
		for _, n := range privateNets {
			addr, bits := mustParseNet(n)
			out = append(out, Entry{Action: r.action, Addr: addr, Bits: bits, PortMin: r.portMin, PortMax: r.portMax})
		}
		return out
	case r.unspec:
		return []Entry{
			{Action: r.action, Addr: netip.IPv4Unspecified(), Bits: 0, PortMin: r.portMin, PortMax: r.portMax},
			{Action: r.action, Addr: netip.IPv6Unspecified(), Bits: 0, PortMin: r.portMin, PortMax: r.portMax},
		}
	default:
		return []Entry{{Action: r.action, Addr: r.addr, Bits: r.bits, PortMin: r.portMin, PortMax: r.portMax}}
	}
}

func mustParseNet(s string) (netip.Addr, int) {
	addr, bits, _, _, err := parseMaskPorts(s+":*", false)
	if err != nil {
		panic("exitpolicy: bad built-in network " + s)
	}
	return addr.addr, bits
}

// tokenKeywords are the keywords of tor's router descriptor token table
// that a policy item may start with; any other keyword is an error.
func keywordAction(kw string) (action Action, six, ok bool) {
	switch kw {
	case "accept":
		return Accept, false, true
	case "reject":
		return Reject, false, true
	case "accept6":
		return Accept, true, true
	case "reject6":
		return Reject, true, true
	}
	return "", false, false
}

// parsePolicyItem is router_parse_addr_policy_item_from_string(s, -1).
// It returns nil and a warning for an entry tor ignores.
func parsePolicyItem(item string) (*rawEntry, string, error) {
	fail := func(reason string) (*rawEntry, string, error) {
		return nil, "", &EntryError{Entry: item, Reason: reason}
	}
	kw, args := tokenizePolicyItem(item)
	action, six, ok := keywordAction(kw)
	if !ok {
		return fail("expected accept, reject, accept6 or reject6")
	}
	if len(args) != 1 {
		return fail(fmt.Sprintf("%s takes exactly one ADDR[/MASK][:PORT] argument, got %d", kw, len(args)))
	}
	arg := args[0]
	if strings.HasPrefix(arg, "private") {
		rest := strings.TrimLeft(arg[len("private"):], " \t\n\r")
		if !strings.HasPrefix(rest, ":") {
			return fail("private needs a port: private:PORT")
		}
		lo, hi, err := parsePortRange(rest[1:], true)
		if err != nil {
			return fail(err.Error())
		}
		if six {
			// tor's private entry has no address family, so its
			// accept6/reject6 check drops it.
			return nil, fmt.Sprintf("%s %s in exit policy is ignored, as tor does (use %s private:PORT)",
				kw, arg, strings.TrimSuffix(kw, "6")), nil
		}
		return &rawEntry{action: action, private: true, portMin: lo, portMax: hi}, "", nil
	}
	parsed, bits, lo, hi, err := parseMaskPorts(arg, six)
	if err != nil {
		return fail(err.Error())
	}
	r := &rawEntry{action: action, unspec: parsed.unspec, addr: parsed.addr, bits: bits, portMin: lo, portMax: hi}
	if six && (r.unspec || r.addr.Is4()) {
		return nil, fmt.Sprintf("IPv4 address %q with %s in exit policy; ignored, as tor does (use %s with IPv4 addresses)",
			arg, kw, strings.TrimSuffix(kw, "6")), nil
	}
	return r, "", nil
}

// tokenizePolicyItem is get_next_token with tor's descriptor token table,
// reduced to what a policy item needs: the keyword (after an optional
// "opt") and its whitespace-separated arguments.
func tokenizePolicyItem(s string) (keyword string, args []string) {
	s = eatWhitespace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] // one line only; the rest would be an object
	}
	next := findWhitespace(s)
	keyword, s = s[:next], s[next:]
	if keyword == "opt" {
		s = eatWhitespaceNoNL(s)
		next = findWhitespace(s)
		keyword, s = s[:next], s[next:]
	}
	if _, _, ok := keywordAction(keyword); !ok {
		return keyword, nil
	}
	s = eatWhitespaceNoNL(s)
	// get_token_arguments
	for s != "" {
		end := findWhitespace(s)
		args = append(args, s[:end])
		if end == len(s) {
			break
		}
		s = eatWhitespace(s[end+1:])
	}
	return keyword, args
}

// eatWhitespace is tor's eat_whitespace: skips spaces, tabs, newlines and
// "#" comments up to a newline.
func eatWhitespace(s string) string {
	for s != "" {
		switch s[0] {
		case ' ', '\t', '\n', '\r':
			s = s[1:]
		case '#':
			s = s[1:]
			for s != "" && s[0] != '\n' {
				s = s[1:]
			}
		default:
			return s
		}
	}
	return s
}

func eatWhitespaceNoNL(s string) string {
	for s != "" && (s[0] == ' ' || s[0] == '\t' || s[0] == '\r') {
		s = s[1:]
	}
	return s
}

// findWhitespace is tor's find_whitespace: the index of the first space,
// tab, CR, LF or "#".
func findWhitespace(s string) int {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ' ', '\t', '\r', '\n', '#':
			return i
		}
	}
	return len(s)
}

type parsedAddr struct {
	addr   netip.Addr
	unspec bool
}

// maxAddressLength is tor's MAX_ADDRESS_LENGTH.
const maxAddressLength = 48 + 2 + (1 + 16) + 12 + 1

// parseMaskPorts is tor_addr_parse_mask_ports(s, TAPMP_EXTENDED_STAR [|
// TAPMP_STAR_IPV6_ONLY], ...).
func parseMaskPorts(s string, starIPv6Only bool) (parsedAddr, int, uint16, uint16, error) {
	if len(s) > maxAddressLength {
		return parsedAddr{}, 0, 0, 0, errors.New("address pattern is too long")
	}
	address, mask, port, err := splitMaskPorts(s)
	if err != nil {
		return parsedAddr{}, 0, 0, 0, err
	}
	out, anyFlag, err := parsePatternAddr(address, starIPv6Only)
	if err != nil {
		return out, 0, 0, 0, err
	}
	bits, err := maskBits(out.addr, mask, anyFlag)
	if err != nil {
		return out, 0, 0, 0, err
	}
	var portStr string
	if port != nil {
		portStr = *port
	}
	lo, hi, err := parsePortRange(portStr, port != nil)
	if err != nil {
		return out, 0, 0, 0, err
	}
	return out, bits, lo, hi, nil
}

// splitMaskPorts cuts ADDR[/MASK][:PORT] as tor does: brackets around an
// IPv6 address, '/' after the ']', ':' after the mask (or ']'). mask and
// port are nil when absent.
func splitMaskPorts(s string) (address string, mask, port *string, err error) {
	address = s
	rbracket := -1
	if strings.HasPrefix(address, "[") {
		address = address[1:]
		rbracket = strings.IndexByte(address, ']')
		if rbracket < 0 {
			return "", nil, nil, errors.New("no closing ] after IPv6 address")
		}
	}
	from := 0
	if rbracket >= 0 {
		from = rbracket
	}
	maskAt := indexFrom(address, '/', from)
	portFrom := from
	if maskAt >= 0 {
		portFrom = maskAt
	}
	portAt := indexFrom(address, ':', portFrom)
	if portAt >= 0 {
		p := address[portAt+1:]
		port = &p
		address = address[:portAt]
	}
	if maskAt >= 0 {
		m := address[maskAt+1:]
		mask = &m
		address = address[:maskAt]
	}
	if rbracket >= 0 {
		address = address[:rbracket]
	}
	return address, mask, port, nil
}

// parsePatternAddr reads the address of a pattern: "*" (both families,
// or IPv6 only with starIPv6Only), "*4", "*6", or an address. anyFlag
// says it was a wildcard.
func parsePatternAddr(address string, starIPv6Only bool) (out parsedAddr, anyFlag bool, err error) {
	switch address {
	case "*":
		if starIPv6Only {
			out.addr = netip.IPv6Unspecified()
		} else {
			out.unspec = true
		}
		return out, true, nil
	case "*4":
		out.addr = netip.IPv4Unspecified()
		return out, true, nil
	case "*6":
		out.addr = netip.IPv6Unspecified()
		return out, true, nil
	}
	if a, ok := torcompat.InetPton6(address); ok {
		out.addr = a
	} else if a, ok := torcompat.InetAton(address); ok {
		out.addr = a
	} else {
		return out, false, fmt.Errorf("malformed IP address %q", address)
	}
	return out, false, nil
}

// maskBits is the prefix length of addr with the mask given (nil: none):
// a number of bits or a dotted netmask; an IPv4-mapped address counts its
// mask from bit 96. A wildcard takes no mask and matches everything.
func maskBits(addr netip.Addr, mask *string, anyFlag bool) (int, error) {
	if mask == nil {
		switch {
		case anyFlag:
			return 0, nil
		case addr.Is4():
			return 32, nil
		}
		return 128, nil
	}
	bits := 0
	if v, rest, _, _ := torcompat.Strtol(*mask); rest == "" {
		b := int32(v) // C: (int) strtol(...)
		if b < 0 || b > 128 || (addr.Is4() && b > 32) {
			return 0, fmt.Errorf("bad number of mask bits /%s", *mask)
		}
		bits = int(b)
	} else if m, ok := torcompat.InetAton(*mask); ok {
		m4 := m.As4()
		bits = torcompat.AddrMaskBits(uint32(m4[0])<<24 | uint32(m4[1])<<16 | uint32(m4[2])<<8 | uint32(m4[3]))
		if bits < 0 {
			return 0, fmt.Errorf("netmask %s is not a prefix", *mask)
		}
	} else {
		return 0, fmt.Errorf("malformed mask /%s", *mask)
	}
	if addr.Is4In6() {
		if bits > 32 && bits < 96 {
			return 0, fmt.Errorf("bad mask bits /%d for an IPv4-mapped IPv6 address", bits)
		}
		bits = 96 + bits%32
	}
	if anyFlag {
		return 0, errors.New("a wildcard address takes no mask")
	}
	return bits, nil
}

func indexFrom(s string, c byte, from int) int {
	if from > len(s) {
		return -1
	}
	i := strings.IndexByte(s[from:], c)
	if i < 0 {
		return -1
	}
	return from + i
}

// parsePortRange is tor 0.4.9's parse_port_range: "*", "", N or N-M with
// 1 <= N <= M <= 65535. As in tor, characters after M are ignored.
func parsePortRange(port string, present bool) (uint16, uint16, error) {
	if !present || port == "" || port == "*" {
		return 1, 65535, nil
	}
	lo, rest, ok := torcompat.ParseLong(port, 1, 65535)
	if !ok {
		return 0, 0, fmt.Errorf("malformed port %q (ports are 1-65535)", port)
	}
	hi := lo
	if rest != "" {
		if rest[0] != '-' {
			return 0, 0, fmt.Errorf("malformed port %q", port)
		}
		hi, _, ok = torcompat.ParseLong(rest[1:], 1, 65535)
		if !ok {
			return 0, 0, fmt.Errorf("malformed port range %q (ports are 1-65535)", port)
		}
	}
	if lo > hi {
		return 0, 0, fmt.Errorf("port range %q runs backwards", port)
	}
	return uint16(lo), uint16(hi), nil
}
