package nft

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/rules"
)

// The inbound protection lives in the same table: a base chain on the
// input hook whose one rule sends the first packet (a SYN, conntrack state
// new) of a connection to a protected port into the chain inbound. The
// input chain's policy is accept: everything else reaching the host is
// left to the host's own firewall, and a verdict of this table never
// overrides another table's drop.
const (
	InputChainName   = "input"
	InboundChainName = "inbound"
)

// inboundSet is one set of the inbound protection.
type inboundSet struct {
	name     string
	kind     string // "ports", "trust", "block", "minute", "hour", "conns"
	keyType  string // "inet_service", "ipv4_addr", "ipv6_addr"
	interval bool
	dynamic  bool // filled by the packet path: its elements are not compared
	timeout  uint // seconds; 0: none
	size     uint // 0: unbounded
	ports    []uint16
	ranges   []rules.AddrRange // trusted sources, joined as the kernel holds them
}

// inboundRule is one rule of the chain inbound.
type inboundRule struct {
	name string
	fam  rules.Family
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
}

func newInboundPlan(in rules.Inbound) *inboundPlan {
	p := &inboundPlan{}
	p.sets = append(p.sets, inboundSet{name: rules.InboundPortsSet, kind: "ports", keyType: "inet_service", ports: in.Ports})
	for _, fam := range []rules.Family{rules.IPv4, rules.IPv6} {
		p.sets = append(p.sets, inboundSet{name: rules.InboundSetName("trust", fam), kind: "trust", keyType: addrKeyType(fam),
			interval: true, ranges: rules.Ranges(in.TrustedOf(fam))})
	}
	dyn := func(kind string, timeout uint) {
		for _, fam := range []rules.Family{rules.IPv4, rules.IPv6} {
			p.sets = append(p.sets, inboundSet{name: rules.InboundSetName(kind, fam), kind: kind, keyType: addrKeyType(fam),
				dynamic: true, timeout: timeout, size: in.SetSize})
		}
	}
	dyn("block", in.BlockSeconds)
	dyn("minute", in.MinuteMeterSeconds())
	dyn("hour", in.HourMeterSeconds())
	dyn("conns", 0)

	// The rules in order, each for IPv4, then IPv6.
	for _, kind := range []string{"trusted", "blocked", "minute", "hour", "conns"} {
		for _, fam := range []rules.Family{rules.IPv4, rules.IPv6} {
			r := inboundRule{fam: fam, mask: in.Prefix(fam), block: rules.InboundSetName("block", fam)}
			switch kind {
			case "trusted": // exact addresses, unmasked
				r.name, r.match, r.set, r.mask = rules.InboundRuleTrusted, "trusted", rules.InboundSetName("trust", fam), fam.Bits()
			case "blocked":
				r.name, r.match, r.set = rules.InboundRuleBlocked, "blocked", r.block
			case "minute":
				r.name, r.match, r.set = rules.InboundRuleMinute, "meter", rules.InboundSetName("minute", fam)
				r.rate, r.unit, r.burst = in.PerMinute, "minute", in.Burst
			case "hour":
				r.name, r.match, r.set = rules.InboundRuleHour, "meter", rules.InboundSetName("hour", fam)
				r.rate, r.unit, r.burst = in.PerHour, "hour", in.PerHour
			case "conns":
				r.name, r.match, r.set, r.max = rules.InboundRuleConns, "conns", rules.InboundSetName("conns", fam), in.MaxConns
			}
			r.name = rules.InboundRuleName(r.name, fam)
			p.rules = append(p.rules, r)
		}
	}
	return p
}

func addrKeyType(fam rules.Family) string {
	if fam == rules.IPv6 {
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
	case len(s.ranges) > 0:
		writeElements(b, len(s.ranges), func(i int) string { return addrRangeText(s.ranges[i].First, s.ranges[i].Last) })
	}
	b.WriteString("\t}\n\n")
}

// source is the rule's source address expression, masked.
func (r inboundRule) source() string {
	ip := "ip"
	if r.fam == rules.IPv6 {
		ip = "ip6"
	}
	if r.mask == r.fam.Bits() {
		return ip + " saddr"
	}
	return fmt.Sprintf("%s saddr & %s", ip, maskAddr(r.fam, r.mask))
}

// maskAddr is the netmask of a prefix length, as an address.
func maskAddr(fam rules.Family, bits int) netip.Addr {
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
	return s + fmt.Sprintf(" comment %q", CommentPrefix+r.name)
}

// jumpText is the input chain's one rule.
const jumpText = `tcp dport @` + rules.InboundPortsSet + ` tcp flags & (fin | syn | rst | ack) == syn ct state new counter jump ` + InboundChainName + ` comment "` + CommentPrefix + rules.InboundRuleJump + `"`

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
	fmt.Fprintf(b, "\n\tchain %s {\n\t\ttype filter hook input priority filter; policy accept;\n\t\t%s\n\t}\n", InputChainName, jumpText)
}

// object is the set as nft creates it from the text.
func (s inboundSet) object(t *nftables.Table) *nftables.Set {
	key := nftables.TypeInetService
	switch s.keyType {
	case "ipv4_addr":
		key = nftables.TypeIPAddr
	case "ipv6_addr":
		key = nftables.TypeIP6Addr
	}
	return &nftables.Set{Table: t, Name: s.name, KeyType: key, Interval: s.interval, Dynamic: s.dynamic,
		HasTimeout: s.timeout > 0, Timeout: time.Duration(s.timeout) * time.Second, Size: uint32(s.size)}
}

// setElements are the static elements: ports, or trusted prefixes.
func (s inboundSet) setElements() []nftables.SetElement {
	if len(s.ports) > 0 {
		out := make([]nftables.SetElement, len(s.ports))
		for i, p := range s.ports {
			out[i] = nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(p)}
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
	for _, r := range s.ranges {
		out = append(out, rawInterval(r.First.AsSlice(), r.Last.AsSlice(), ""))
	}
	return sortedStrings(out)
}

// sourceExprs load the (masked) source address into register 1, after
// the family match nft adds for an ip/ip6 payload in an inet table.
func (r inboundRule) sourceExprs() []expr.Any {
	nfproto := byte(nfprotoIPv4)
	if r.fam == rules.IPv6 {
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
	if r.fam == rules.IPv6 {
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
	return userdata.AppendString(nil, userdata.TypeComment, CommentPrefix+r.name)
}

// jumpExprs is the input chain's rule: a SYN of a new connection to a
// protected port jumps to the chain inbound.
func jumpExprs(sets map[string]*nftables.Set) []expr.Any {
	s := sets[rules.InboundPortsSet]
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{protoTCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
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
	}
}

func jumpUserData() []byte {
	return userdata.AppendString(nil, userdata.TypeComment, CommentPrefix+rules.InboundRuleJump)
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
	c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: jumpExprs(sets), UserData: jumpUserData()})
}

// Blocked reads the block sets.
func (b *Backend) Blocked(ctx context.Context, in rules.Inbound) ([]firewall.Block, error) {
	var out []firewall.Block
	_, err := b.withTable(ctx, func(c *nftables.Conn, t *nftables.Table) error {
		for _, fam := range []rules.Family{rules.IPv4, rules.IPv6} {
			s, err := c.GetSetByName(t, rules.InboundSetName("block", fam))
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
	fam := rules.FamilyOf(source.Addr())
	key := source.Masked().Addr().AsSlice()
	blocked := false
	_, err := b.withTable(ctx, func(c *nftables.Conn, t *nftables.Table) error {
		// One transaction per set: deleting an element that is not there
		// fails its transaction with ENOENT, which says "not blocked" (or
		// "not metered") without reading sets of up to set_size elements.
		for _, kind := range []string{"block", "minute", "hour"} {
			s, err := c.GetSetByName(t, rules.InboundSetName(kind, fam))
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
