package nft

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/ruleset"
)

// The inbound protection lives in the same table: a base chain on the
// input hook whose rules send the first packet (a SYN, conntrack state
// new) of a connection to a protected endpoint into the chain inbound:
// one rule for the ports protected on every address (one set for both
// families when they protect the same ports, else one per family), one
// per family for the address-bound ports (a set of address . port). The
// input chain's policy is accept: everything else reaching the host is
// left to the host's own firewall, and a verdict of this table never
// overrides another table's drop.
const (
	InputChainName   = "input"
	InboundChainName = "inbound"
)

// inboundSet is one set of the inbound protection.
type inboundSet struct {
	name string
	// kind is "ports", "endpoints", "trust", "block", "minute", "hour"
	// or "conns"
	kind      string
	keyType   string // "inet_service", "ipv4_addr", "ipv6_addr", "ipv4_addr . inet_service", "ipv6_addr . inet_service"
	interval  bool
	dynamic   bool // filled by the packet path: its elements are not compared
	timeout   uint // seconds; 0: none
	size      uint // 0: unbounded
	ports     []uint16
	endpoints []netip.AddrPort    // address-bound ports
	ranges    []ruleset.AddrRange // trusted sources, joined as the kernel holds them
}

// inboundJump is one rule of the input chain: new connections to the
// ports of set (on every address; fam "": of both families) or to the
// endpoints of set (address . port) jump to the chain inbound.
type inboundJump struct {
	fam       ruleset.Family
	set       string
	endpoints bool
}

// inboundRule is one rule of the chain inbound.
type inboundRule struct {
	name string
	fam  ruleset.Family
	// match is what the rule looks for: "trusted" (saddr in the trust
	// set), "blocked" (the source in the block set), "meter" (the source
	// over the rate of the meter set), "conns" (the source holding more
	// connections than max).
	match string
	set   string
	mask  int // source prefix length; the family's length: no mask
	// a meter's rate, per unit, and its burst; the block set it adds to
	rate  uint
	unit  string // "minute" or "hour"
	burst uint
	block string
	max   uint // conns
}

// inboundPlan is the inbound protection's share of the table.
type inboundPlan struct {
	sets  []inboundSet
	rules []inboundRule
	jumps []inboundJump
}

func newInboundPlan(in ruleset.Inbound) *inboundPlan {
	p := &inboundPlan{}
	v4, v6 := in.PortsOn(ruleset.IPv4), in.PortsOn(ruleset.IPv6)
	if slices.Equal(v4, v6) {
		if len(v4) > 0 {
			p.sets = append(p.sets, inboundSet{name: ruleset.InboundPortsSet, kind: "ports", keyType: "inet_service", ports: v4})
			p.jumps = append(p.jumps, inboundJump{set: ruleset.InboundPortsSet})
		}
	} else {
		for _, fam := range []ruleset.Family{ruleset.IPv4, ruleset.IPv6} {
			if ports := in.PortsOn(fam); len(ports) > 0 {
				name := ruleset.InboundSetName("ports", fam)
				p.sets = append(p.sets, inboundSet{name: name, kind: "ports", keyType: "inet_service", ports: ports})
				p.jumps = append(p.jumps, inboundJump{fam: fam, set: name})
			}
		}
	}
	for _, fam := range []ruleset.Family{ruleset.IPv4, ruleset.IPv6} {
		if eps := in.BoundEndpoints(fam); len(eps) > 0 {
			name := ruleset.InboundSetName("endpoints", fam)
			p.sets = append(p.sets, inboundSet{name: name, kind: "endpoints", keyType: addrKeyType(fam) + " . inet_service", endpoints: eps})
			p.jumps = append(p.jumps, inboundJump{fam: fam, set: name, endpoints: true})
		}
	}
	for _, fam := range []ruleset.Family{ruleset.IPv4, ruleset.IPv6} {
		p.sets = append(p.sets, inboundSet{name: ruleset.InboundSetName("trust", fam), kind: "trust", keyType: addrKeyType(fam),
			interval: true, ranges: ruleset.Ranges(in.TrustedOf(fam))})
	}
	dyn := func(kind string, timeout uint) {
		for _, fam := range []ruleset.Family{ruleset.IPv4, ruleset.IPv6} {
			p.sets = append(p.sets, inboundSet{name: ruleset.InboundSetName(kind, fam), kind: kind, keyType: addrKeyType(fam),
				dynamic: true, timeout: timeout, size: in.SetSize})
		}
	}
	dyn("block", in.BlockSeconds)
	dyn("minute", in.MinuteMeterSeconds())
	dyn("hour", in.HourMeterSeconds())
	dyn("conns", 0)

	// The rules in order, each for IPv4, then IPv6.
	for _, kind := range []string{"trusted", "blocked", "minute", "hour", "conns"} {
		for _, fam := range []ruleset.Family{ruleset.IPv4, ruleset.IPv6} {
			r := inboundRule{fam: fam, mask: in.Prefix(fam), block: ruleset.InboundSetName("block", fam)}
			switch kind {
			case "trusted": // exact addresses, unmasked
				r.name, r.match, r.set, r.mask = ruleset.InboundRuleTrusted, "trusted", ruleset.InboundSetName("trust", fam), fam.Bits()
			case "blocked":
				r.name, r.match, r.set = ruleset.InboundRuleBlocked, "blocked", r.block
			case "minute":
				r.name, r.match, r.set = ruleset.InboundRuleMinute, "meter", ruleset.InboundSetName("minute", fam)
				r.rate, r.unit, r.burst = in.PerMinute, "minute", in.Burst
			case "hour":
				r.name, r.match, r.set = ruleset.InboundRuleHour, "meter", ruleset.InboundSetName("hour", fam)
				r.rate, r.unit, r.burst = in.PerHour, "hour", in.PerHour
			case "conns":
				r.name, r.match, r.set, r.max = ruleset.InboundRuleConns, "conns", ruleset.InboundSetName("conns", fam), in.MaxConns
			}
			r.name = ruleset.InboundRuleName(r.name, fam)
			p.rules = append(p.rules, r)
		}
	}
	return p
}

func addrKeyType(fam ruleset.Family) string {
	if fam == ruleset.IPv6 {
		return "ipv6_addr"
	}
	return "ipv4_addr"
}

// text writes the sets (at the top of the table).
func (s inboundSet) text(b *strings.Builder) {
	fmt.Fprintf(b, "\tset %s {\n\t\ttype %s\n", s.name, s.keyType)
	if s.size > 0 {
		fmt.Fprintf(b, "\t\tsize %d\n", s.size)
	}
	switch {
	case s.interval:
		b.WriteString("\t\tflags interval\n")
	case s.dynamic && s.timeout > 0:
		b.WriteString("\t\tflags dynamic,timeout\n")
	case s.dynamic:
		b.WriteString("\t\tflags dynamic\n")
	}
	if s.timeout > 0 {
		fmt.Fprintf(b, "\t\ttimeout %ds\n", s.timeout)
	}
	switch {
	case len(s.ports) > 0:
		writeElements(b, len(s.ports), func(i int) string { return fmt.Sprint(s.ports[i]) })
	case len(s.endpoints) > 0:
		writeElements(b, len(s.endpoints), func(i int) string {
			return fmt.Sprintf("%s . %d", s.endpoints[i].Addr(), s.endpoints[i].Port())
		})
	case len(s.ranges) > 0:
		writeElements(b, len(s.ranges), func(i int) string { return addrRangeText(s.ranges[i].First, s.ranges[i].Last) })
	}
	b.WriteString("\t}\n\n")
}

// source is the rule's source address expression, masked.
func (r inboundRule) source() string {
	ip := "ip"
	if r.fam == ruleset.IPv6 {
		ip = "ip6"
	}
	if r.mask == r.fam.Bits() {
		return ip + " saddr"
	}
	return fmt.Sprintf("%s saddr & %s", ip, maskAddr(r.fam, r.mask))
}

// maskAddr is the netmask of a prefix length, as an address.
func maskAddr(fam ruleset.Family, bits int) netip.Addr {
	b := make([]byte, fam.Bits()/8)
	for i := 0; i < bits; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func (r inboundRule) text() string {
	var s string
	switch r.match {
	case "trusted":
		s = fmt.Sprintf("%s @%s counter return", r.source(), r.set)
	case "blocked":
		s = fmt.Sprintf("%s @%s counter drop", r.source(), r.set)
	case "meter":
		s = fmt.Sprintf("update @%s { %s limit rate over %d/%s burst %d packets } add @%s { %s } counter drop",
			r.set, r.source(), r.rate, r.unit, r.burst, r.block, r.source())
	case "conns":
		s = fmt.Sprintf("meta l4proto tcp add @%s { %s ct count over %d } counter reject with tcp reset", r.set, r.source(), r.max)
	}
	return s + fmt.Sprintf(" comment %q", ruleset.CommentPrefix+r.name)
}

// text is the input chain's rule.
func (j inboundJump) text() string {
	var match string
	switch {
	case j.endpoints && j.fam == ruleset.IPv6:
		match = "ip6 daddr . tcp dport @" + j.set
	case j.endpoints:
		match = "ip daddr . tcp dport @" + j.set
	case j.fam == "":
		match = "tcp dport @" + j.set
	default:
		match = fmt.Sprintf("meta nfproto %s tcp dport @%s", j.fam, j.set)
	}
	return match + ` tcp flags & (fin | syn | rst | ack) == syn ct state new counter jump ` + InboundChainName + ` comment "` + ruleset.CommentPrefix + ruleset.InboundRuleJump + `"`
}

// textSets and textChains write the inbound share of print's text.
func (p *inboundPlan) textSets(b *strings.Builder) {
	for _, s := range p.sets {
		s.text(b)
	}
}

func (p *inboundPlan) textChains(b *strings.Builder) {
	fmt.Fprintf(b, "\n\tchain %s {\n", InboundChainName)
	for _, r := range p.rules {
		fmt.Fprintf(b, "\t\t%s\n", r.text())
	}
	b.WriteString("\t}\n")
	fmt.Fprintf(b, "\n\tchain %s {\n\t\ttype filter hook input priority filter; policy accept;\n", InputChainName)
	for _, j := range p.jumps {
		fmt.Fprintf(b, "\t\t%s\n", j.text())
	}
	b.WriteString("\t}\n")
}

// object is the set as nft creates it from the text.
func (s inboundSet) object(t *nftables.Table) *nftables.Set {
	key := nftables.TypeInetService
	switch s.keyType {
	case "ipv4_addr":
		key = nftables.TypeIPAddr
	case "ipv6_addr":
		key = nftables.TypeIP6Addr
	case "ipv4_addr . inet_service", "ipv6_addr . inet_service":
		// A concatenated hash set, as the relay-link sets: nft gives it
		// no flags.
		addr := nftables.TypeIPAddr
		if s.keyType[:4] == "ipv6" {
			addr = nftables.TypeIP6Addr
		}
		key, _ = nftables.ConcatSetType(addr, nftables.TypeInetService) // two types: never fails
	}
	return &nftables.Set{Table: t, Name: s.name, KeyType: key, Interval: s.interval, Dynamic: s.dynamic,
		HasTimeout: s.timeout > 0, Timeout: time.Duration(s.timeout) * time.Second, Size: uint32(s.size)}
}

// setElements are the static elements: ports, endpoints, or trusted
// prefixes.
func (s inboundSet) setElements() []nftables.SetElement {
	if len(s.ports) > 0 {
		out := make([]nftables.SetElement, len(s.ports))
		for i, p := range s.ports {
			out[i] = nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(p)}
		}
		return out
	}
	if len(s.endpoints) > 0 {
		out := make([]nftables.SetElement, len(s.endpoints))
		for i, e := range s.endpoints {
			out[i] = nftables.SetElement{Key: elementKey(e.Addr(), e.Port())}
		}
		return out
	}
	return intervalElements(len(s.ranges), func(i int) ([]byte, []byte, *expr.Verdict) {
		return s.ranges[i].First.AsSlice(), s.ranges[i].Last.AsSlice(), nil
	})
}

// rawElements are the static elements as rawElements reads them back.
func (s inboundSet) rawElements() []string {
	out := []string{}
	for _, p := range s.ports {
		out = append(out, string(binaryutil.BigEndian.PutUint16(p)))
	}
	for _, e := range s.endpoints {
		out = append(out, string(elementKey(e.Addr(), e.Port())))
	}
	for _, r := range s.ranges {
		out = append(out, rawInterval(r.First.AsSlice(), r.Last.AsSlice(), ""))
	}
	return sortedStrings(out)
}

// sourceExprs load the (masked) source address into register 1, after
// the family match nft adds for an ip/ip6 payload in an inet table.
func (r inboundRule) sourceExprs() []expr.Any {
	nfproto := byte(nfprotoIPv4)
	if r.fam == ruleset.IPv6 {
		nfproto = nfprotoIPv6
	}
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
	}
	return append(e, r.loadSource()...)
}

// loadSource loads the source address, masked, into register 1.
func (r inboundRule) loadSource() []expr.Any {
	off, l := uint32(12), uint32(4)
	if r.fam == ruleset.IPv6 {
		off, l = 8, 16
	}
	e := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: l}}
	if r.mask != r.fam.Bits() {
		e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: l,
			Mask: maskAddr(r.fam, r.mask).AsSlice(), Xor: make([]byte, l)})
	}
	return e
}

// exprs is the netlink form of the rule, as nft generates it for text().
func (r inboundRule) exprs(sets map[string]*nftables.Set) []expr.Any {
	var e []expr.Any
	lookup := func(name string) *expr.Lookup {
		s := sets[name]
		return &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID}
	}
	dynset := func(name string, op uint32, inner expr.Any) *expr.Dynset {
		s := sets[name]
		d := &expr.Dynset{SrcRegKey: 1, SetName: s.Name, SetID: s.ID, Operation: op}
		if inner != nil {
			d.Exprs = []expr.Any{inner}
		}
		return d
	}
	switch r.match {
	case "trusted":
		e = append(r.sourceExprs(), lookup(r.set), &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictReturn})
	case "blocked":
		e = append(r.sourceExprs(), lookup(r.set), &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
	case "meter":
		unit := expr.LimitTimeMinute
		if r.unit == "hour" {
			unit = expr.LimitTimeHour
		}
		e = append(r.sourceExprs(), dynset(r.set, unix.NFT_DYNSET_OP_UPDATE,
			&expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(r.rate), Over: true, Unit: unit, Burst: uint32(r.burst)}))
		e = append(e, r.loadSource()...)
		e = append(e, dynset(r.block, unix.NFT_DYNSET_OP_ADD, nil), &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
	case "conns":
		e = append([]expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{protoTCP}},
		}, r.sourceExprs()...)
		e = append(e, dynset(r.set, unix.NFT_DYNSET_OP_ADD, &expr.Connlimit{Count: uint32(r.max), Flags: expr.NFT_CONNLIMIT_F_INV}),
			&expr.Counter{}, &expr.Reject{Type: unix.NFT_REJECT_TCP_RST, Code: 0})
	}
	return e
}

func (r inboundRule) userData() []byte {
	return userdata.AppendString(nil, userdata.TypeComment, ruleset.CommentPrefix+r.name)
}

// exprs is the input chain's rule, as nft generates it for text(): a
// SYN of a new connection to a protected endpoint jumps to the chain
// inbound.
func (j inboundJump) exprs(sets map[string]*nftables.Set) []expr.Any {
	s := sets[j.set]
	var e []expr.Any
	if j.fam != "" {
		nfproto := byte(nfprotoIPv4)
		if j.fam == ruleset.IPv6 {
			nfproto = nfprotoIPv6
		}
		e = append(e, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}})
	}
	e = append(e, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{protoTCP}})
	if j.endpoints {
		// The port follows the address in the next free register: 32-bit
		// register 9 after an IPv4 address, 128-bit register 2 after IPv6.
		off, l, portReg := uint32(16), uint32(4), uint32(9)
		if j.fam == ruleset.IPv6 {
			off, l, portReg = 24, 16, 2
		}
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: l},
			&expr.Payload{DestRegister: portReg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
	} else {
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
	}
	return append(e,
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x17}, Xor: []byte{0}}, // fin|syn|rst|ack
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},                                  // syn
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ctNew), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictJump, Chain: InboundChainName},
	)
}

func jumpUserData() []byte {
	return userdata.AppendString(nil, userdata.TypeComment, ruleset.CommentPrefix+ruleset.InboundRuleJump)
}

// inputChain is the base chain on the input hook.
func inputChain(t *nftables.Table) *nftables.Chain {
	policy := nftables.ChainPolicyAccept
	return &nftables.Chain{Name: InputChainName, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &policy}
}

// queueSets queues the inbound sets (after the relay sets, as in the
// text) and records them in sets.
func (p *inboundPlan) queueSets(t *nftables.Table, addSet func(*nftables.Set, []nftables.SetElement) error) error {
	for _, s := range p.sets {
		if err := addSet(s.object(t), s.setElements()); err != nil {
			return err
		}
	}
	return nil
}

// queueChains queues the chain inbound and the input chain (last).
func (p *inboundPlan) queueChains(c *nftables.Conn, t *nftables.Table, sets map[string]*nftables.Set) {
	ch := c.AddChain(&nftables.Chain{Name: InboundChainName, Table: t})
	for _, r := range p.rules {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r.exprs(sets), UserData: r.userData()})
	}
	in := c.AddChain(inputChain(t))
	for _, j := range p.jumps {
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: j.exprs(sets), UserData: jumpUserData()})
	}
}

// Blocked reads the block sets.
func (b *Backend) Blocked(ctx context.Context, in ruleset.Inbound) ([]firewall.Block, error) {
	var out []firewall.Block
	_, err := b.withTable(ctx, func(c *nftables.Conn, t *nftables.Table) error {
		for _, fam := range []ruleset.Family{ruleset.IPv4, ruleset.IPv6} {
			s, err := c.GetSetByName(t, ruleset.InboundSetName("block", fam))
			if err != nil {
				continue // no inbound protection
			}
			elems, err := c.GetSetElements(s)
			if err != nil {
				return classify(err)
			}
			for _, e := range elems {
				if a, ok := netip.AddrFromSlice(e.Key); ok {
					out = append(out, firewall.Block{Source: in.Source(a), ExpiresSeconds: int64(e.Expires / time.Second)})
				}
			}
		}
		return nil
	})
	return out, err
}

// Unblock deletes the source from the block set and its meters, in one
// transaction; the source is given as any address in its network.
func (b *Backend) Unblock(ctx context.Context, source netip.Prefix) (bool, error) {
	fam := ruleset.FamilyOf(source.Addr())
	key := source.Masked().Addr().AsSlice()
	blocked := false
	_, err := b.withTable(ctx, func(c *nftables.Conn, t *nftables.Table) error {
		// One transaction per set: deleting an element that is not there
		// fails its transaction with ENOENT, which says "not blocked" (or
		// "not metered") without reading sets of up to set_size elements.
		for _, kind := range []string{"block", "minute", "hour"} {
			s, err := c.GetSetByName(t, ruleset.InboundSetName(kind, fam))
			if err != nil {
				if kind == "block" {
					return fmt.Errorf("the inbound protection is not installed")
				}
				continue
			}
			if err := c.SetDeleteElements(s, []nftables.SetElement{{Key: key}}); err != nil {
				return classify(err)
			}
			switch err := c.Flush(); {
			case err == nil:
				blocked = blocked || kind == "block"
			case !errors.Is(err, syscall.ENOENT):
				return classify(fmt.Errorf("unblocking %s: %w", source, err))
			}
		}
		return nil
	})
	return blocked, err
}

// liveBlocks reads the block sets of the installed table, so that a
// replacement of the table keeps them (with the time each has left): an
// apply must not let blocked flooders back in.
func (p *inboundPlan) liveBlocks(c *nftables.Conn) (map[string][]nftables.SetElement, error) {
	t, err := ownTable(c)
	if err != nil || t == nil {
		return nil, err
	}
	out := map[string][]nftables.SetElement{}
	for _, s := range p.sets {
		if s.kind != "block" {
			continue
		}
		have, err := c.GetSetByName(t, s.name)
		if err != nil || !have.HasTimeout || have.KeyType.Bytes != s.object(t).KeyType.Bytes {
			continue // not installed, or another kind of set
		}
		elems, err := c.GetSetElements(have)
		if err != nil {
			return nil, classify(err)
		}
		for _, e := range elems {
			left := min(e.Expires, time.Duration(s.timeout)*time.Second)
			if left < time.Second {
				continue
			}
			out[s.name] = append(out[s.name], nftables.SetElement{Key: e.Key, Timeout: left.Truncate(time.Millisecond)})
		}
	}
	return out, nil
}
