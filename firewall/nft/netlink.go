package nft

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/relayfw/relayfw/ruleset"
)

// exprs is the netlink form of the rule: the same statements, in the same
// order, as text() and as nft itself generates for that text.
func (r kernelRule) exprs(sets map[string]*nftables.Set) []expr.Any {
	var e exprList
	r.metaExprs(&e)
	r.addrExprs(&e)
	r.transportExprs(&e)
	if r.lookupExprs(&e, sets) {
		return e // a verdict map: the map's verdict is the rule's
	}
	r.verdictExprs(&e)
	return e
}

// exprList builds a rule's expressions, loading into register 1 unless
// told otherwise.
type exprList []expr.Any

func (e *exprList) add(x ...expr.Any) { *e = append(*e, x...) }
func (e *exprList) cmp(data []byte) {
	e.add(&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data})
}
func (e *exprList) meta(key expr.MetaKey) { e.add(&expr.Meta{Key: key, Register: 1}) }
func (e *exprList) payload(base expr.PayloadBase, offset, length, reg uint32) {
	e.add(&expr.Payload{DestRegister: reg, Base: base, Offset: offset, Len: length})
}

// addrOffset is where the source (or destination) address is in the
// network header of the rule's family, and its length.
func (r kernelRule) addrOffset(src bool) (offset, length uint32) {
	if r.nfproto == nfprotoIPv6 {
		if src {
			return 8, 16
		}
		return 24, 16
	}
	if src {
		return 12, 4
	}
	return 16, 4
}

// metaExprs match the output interface, conntrack state, socket owner
// and family.
func (r kernelRule) metaExprs(e *exprList) {
	if r.oifLo {
		e.meta(expr.MetaKeyOIF)
		e.cmp(binaryutil.NativeEndian.PutUint32(1)) // lo is ifindex 1 in every namespace
	}
	if r.ctMask != 0 {
		e.add(&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(r.ctMask), Xor: binaryutil.NativeEndian.PutUint32(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}})
	}
	if r.skuid != nil {
		e.meta(expr.MetaKeySKUID)
		e.cmp(binaryutil.NativeEndian.PutUint32(*r.skuid))
	}
	if r.nfproto != 0 {
		e.meta(expr.MetaKeyNFPROTO)
		e.cmp([]byte{r.nfproto})
	}
}

// addrExprs match the source address and the destination prefix.
func (r kernelRule) addrExprs(e *exprList) {
	if r.saddr.IsValid() {
		off, l := r.addrOffset(true)
		e.payload(expr.PayloadBaseNetworkHeader, off, l, 1)
		e.cmp(r.saddr.AsSlice())
	}
	if !r.daddr.IsValid() {
		return
	}
	// As nft: a whole-byte prefix loads just its bytes; any other loads
	// the address and masks it.
	off, l := r.addrOffset(false)
	bits := r.daddr.Bits()
	addr := r.daddr.Addr().AsSlice()
	if bits > 0 && bits%8 == 0 {
		e.payload(expr.PayloadBaseNetworkHeader, off, uint32(bits/8), 1)
		e.cmp(addr[:bits/8])
		return
	}
	e.payload(expr.PayloadBaseNetworkHeader, off, l, 1)
	mask := make([]byte, l)
	for i := 0; i < bits; i++ {
		mask[i/8] |= 1 << (7 - i%8)
	}
	e.add(&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: l, Mask: mask, Xor: make([]byte, l)})
	e.cmp(addr)
}

// transportExprs match the protocol, TCP flags, ICMP type and ports.
func (r kernelRule) transportExprs(e *exprList) {
	if r.l4proto != 0 {
		e.meta(expr.MetaKeyL4PROTO)
		e.cmp([]byte{r.l4proto})
	}
	if r.midstream {
		e.payload(expr.PayloadBaseTransportHeader, 13, 1, 1)
		e.add(&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x12}, Xor: []byte{0}})
		e.cmp([]byte{0x10})
	}
	if r.icmpType >= 0 {
		e.payload(expr.PayloadBaseTransportHeader, 0, 1, 1)
		e.cmp([]byte{byte(r.icmpType)})
	}
	switch {
	case r.sport != 0 && r.dport.First != 0:
		// nft merges adjacent source and destination port matches.
		e.payload(expr.PayloadBaseTransportHeader, 0, 4, 1)
		e.cmp(append(binaryutil.BigEndian.PutUint16(r.sport), binaryutil.BigEndian.PutUint16(r.dport.First)...))
	case r.sport != 0:
		e.payload(expr.PayloadBaseTransportHeader, 0, 2, 1)
		e.cmp(binaryutil.BigEndian.PutUint16(r.sport))
	case r.dport.First != 0 && r.dport.First == r.dport.Last:
		e.payload(expr.PayloadBaseTransportHeader, 2, 2, 1)
		e.cmp(binaryutil.BigEndian.PutUint16(r.dport.First))
	case r.dport.First != 0:
		e.payload(expr.PayloadBaseTransportHeader, 2, 2, 1)
		e.add(&expr.Cmp{Op: expr.CmpOpGte, Register: 1, Data: binaryutil.BigEndian.PutUint16(r.dport.First)},
			&expr.Cmp{Op: expr.CmpOpLte, Register: 1, Data: binaryutil.BigEndian.PutUint16(r.dport.Last)})
	}
}

// lookupExprs look the packet up in the rule's relay-link set, port set
// or verdict map; true for a verdict map, which ends the rule.
func (r kernelRule) lookupExprs(e *exprList, sets map[string]*nftables.Set) (vmap bool) {
	if r.set != "" {
		off, l := r.addrOffset(false)
		e.payload(expr.PayloadBaseNetworkHeader, off, l, 1)
		// The port follows the address in the next free register: 32-bit
		// register 9 after an IPv4 address, 128-bit register 2 after IPv6.
		portReg := uint32(9)
		if r.nfproto == nfprotoIPv6 {
			portReg = 2
		}
		e.payload(expr.PayloadBaseTransportHeader, 2, 2, portReg)
		s := sets[r.set]
		e.add(&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID})
	}
	if r.portSet != "" {
		e.payload(expr.PayloadBaseTransportHeader, 2, 2, 1)
		s := sets[r.portSet]
		e.add(&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID})
	}
	if r.vmap == "" {
		return false
	}
	off, l := r.addrOffset(false)
	e.payload(expr.PayloadBaseNetworkHeader, off, l, 1)
	s := sets[r.vmap]
	e.add(&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: s.Name, SetID: s.ID})
	return true
}

// verdictExprs are the log rate limit, the counter and the verdict (or
// the log statement).
func (r kernelRule) verdictExprs(e *exprList) {
	if r.logPrefix != "" {
		// nft's defaults for "limit rate N/minute": a burst of 5 packets.
		e.add(&expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(r.logRate), Unit: expr.LimitTimeMinute, Burst: 5})
	}
	e.add(&expr.Counter{})
	switch {
	case r.logPrefix != "":
		// The kernel reports the default level with the rule; say it too,
		// so the installed rule compares equal.
		e.add(&expr.Log{Key: 1<<unix.NFTA_LOG_PREFIX | 1<<unix.NFTA_LOG_LEVEL,
			Level: expr.LogLevelWarning, Data: []byte(r.logPrefix)})
	case r.reject == "":
		e.add(&expr.Verdict{Kind: expr.VerdictAccept})
	case r.reject == ruleset.RejectTCPReset:
		e.add(&expr.Reject{Type: unix.NFT_REJECT_TCP_RST, Code: 0})
	case r.reject == ruleset.RejectAdminProhibited:
		e.add(&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED})
	}
}

func (r kernelRule) userData() []byte {
	return userdata.AppendString(nil, userdata.TypeComment, ruleset.CommentPrefix+r.name)
}

func table() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
}

func chain(t *nftables.Table) *nftables.Chain {
	policy := nftables.ChainPolicyAccept
	return &nftables.Chain{Name: ChainName, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &policy}
}

func (s kernelSet) object(t *nftables.Table) (*nftables.Set, error) {
	addrType := nftables.TypeIPAddr
	if s.v6 {
		addrType = nftables.TypeIP6Addr
	}
	keyType, err := nftables.ConcatSetType(addrType, nftables.TypeInetService)
	if err != nil {
		return nil, err
	}
	// A concatenated hash set: nft gives it no flags.
	return &nftables.Set{Table: t, Name: s.name, KeyType: keyType}, nil
}

// object is the verdict map, as nft creates "type ipv4_addr : verdict;
// flags interval" (an rbtree: lookups cost log n, whatever n).
func (m kernelMap) object(t *nftables.Table) *nftables.Set {
	keyType := nftables.TypeIPAddr
	if m.v6 {
		keyType = nftables.TypeIP6Addr
	}
	return &nftables.Set{Table: t, Name: m.name, KeyType: keyType, DataType: nftables.TypeVerdict,
		IsMap: true, Interval: true}
}

// portSetObject is a class's "type inet_service; flags interval" set.
func (c kernelClass) portSetObject(t *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: t, Name: c.chain, KeyType: nftables.TypeInetService, Interval: true}
}

// intervalElements encodes ranges for an rbtree interval set as nft does:
// a start element per range, then an end element (flagged) at the first
// key after it, left out when the range reaches the last key.
func intervalElements(n int, at func(i int) (first, last []byte, verdict *expr.Verdict)) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, 2*n)
	for i := 0; i < n; i++ {
		first, last, v := at(i)
		out = append(out, nftables.SetElement{Key: first, VerdictData: v})
		if end, ok := nextKey(last); ok {
			out = append(out, nftables.SetElement{Key: end, IntervalEnd: true})
		}
	}
	return out
}

// nextKey is the big-endian key one above k; false when k is the last.
func nextKey(k []byte) ([]byte, bool) {
	out := slices.Clone(k)
	for i := len(out) - 1; i >= 0; i-- {
		out[i]++
		if out[i] != 0 {
			return out, true
		}
	}
	return nil, false
}

func (m kernelMap) setElements() []nftables.SetElement {
	return intervalElements(len(m.intervals), func(i int) ([]byte, []byte, *expr.Verdict) {
		iv := m.intervals[i]
		return iv.first.AsSlice(), iv.last.AsSlice(), &expr.Verdict{Kind: expr.VerdictJump, Chain: iv.chain}
	})
}

func (c kernelClass) setElements() []nftables.SetElement {
	return intervalElements(len(c.ports), func(i int) ([]byte, []byte, *expr.Verdict) {
		pr := c.ports[i]
		return binaryutil.BigEndian.PutUint16(pr.First), binaryutil.BigEndian.PutUint16(pr.Last), nil
	})
}

// elementKey is the concatenated key: the address, then the port in
// network order padded to four bytes.
func elementKey(a netip.Addr, port uint16) []byte {
	k := a.AsSlice()
	return append(k, byte(port>>8), byte(port), 0, 0)
}

func (s kernelSet) setElements() []nftables.SetElement {
	out := make([]nftables.SetElement, len(s.elements))
	for i, e := range s.elements {
		out[i] = nftables.SetElement{Key: elementKey(e.AddrFirst, e.Ports.First)}
	}
	return out
}

// elementsPerMessage keeps one message's element list (about 100 bytes an
// IPv6 interval element) well under 64 KiB.
const elementsPerMessage = 400

// queueReplace queues, on c, the whole-table replacement: add (so that the
// delete cannot fail), delete, then the new table with its content, and
// the elements keep names (blocked sources, each with the time it has
// left). The kernel applies the batch at Flush as one transaction.
func (p plan) queueReplace(c *nftables.Conn, keep map[string][]nftables.SetElement) error {
	t := table()
	c.AddTable(t)
	c.DelTable(t)
	t = c.AddTable(table())
	sets := map[string]*nftables.Set{}
	addSet := func(obj *nftables.Set, elems []nftables.SetElement) error {
		if err := c.AddSet(obj, nil); err != nil {
			return fmt.Errorf("set %s: %w", obj.Name, err)
		}
		sets[obj.Name] = obj
		return addElements(c, obj, elems)
	}
	// In the order of print's text (nft lists objects in the order they
	// were made): relay sets; class chains and their port sets before the
	// maps that jump to them (shard maps), shard chains before the maps that
	// jump to them (top maps); the output chain last.
	for _, s := range p.sets {
		obj, err := s.object(t)
		if err != nil {
			return err
		}
		if err := addSet(obj, s.setElements()); err != nil {
			return err
		}
	}
	if p.inbound != nil {
		if err := p.inbound.queueSets(t, addSet); err != nil {
			return err
		}
		for name, elems := range keep {
			if err := addElements(c, sets[name], elems); err != nil {
				return err
			}
		}
	}
	for stage := range 2 {
		for _, k := range p.classes {
			if k.stage != stage {
				continue
			}
			ch := c.AddChain(&nftables.Chain{Name: k.chain, Table: t})
			if k.ports != nil {
				if err := addSet(k.portSetObject(t), k.setElements()); err != nil {
					return err
				}
			}
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: k.rule.exprs(sets), UserData: k.rule.userData()})
		}
		for _, m := range p.maps {
			if m.stage == stage {
				if err := addSet(m.object(t), m.setElements()); err != nil {
					return err
				}
			}
		}
	}
	ch := c.AddChain(chain(t))
	for _, r := range p.rules {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r.exprs(sets), UserData: r.userData()})
	}
	if p.inbound != nil {
		p.inbound.queueChains(c, t, sets)
	}
	return nil
}

// addElements queues elems in as many messages as it takes: the element
// list is one netlink attribute, whose length is 16 bits.
func addElements(c *nftables.Conn, s *nftables.Set, elems []nftables.SetElement) error {
	return inBatches(s, elems, c.SetAddElements)
}

// delElements is addElements' counterpart.
func delElements(c *nftables.Conn, s *nftables.Set, elems []nftables.SetElement) error {
	return inBatches(s, elems, c.SetDeleteElements)
}

func inBatches(s *nftables.Set, elems []nftables.SetElement, queue func(*nftables.Set, []nftables.SetElement) error) error {
	for len(elems) > 0 {
		n := min(len(elems), elementsPerMessage)
		if err := queue(s, elems[:n]); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
		elems = elems[n:]
	}
	return nil
}

// ruleCount is the number of kernel rules.
func (p plan) ruleCount() int {
	n := len(p.rules) + len(p.classes)
	if p.inbound != nil {
		n += len(p.inbound.rules) + len(p.inbound.jumps)
	}
	return n
}

// elementCount is the number of set and map elements (an interval
// counted once), for messages.
func (p plan) elementCount() int {
	n := 0
	for _, s := range p.sets {
		n += len(s.elements)
	}
	for _, m := range p.maps {
		n += len(m.intervals)
	}
	for _, k := range p.classes {
		n += len(k.ports)
	}
	if p.inbound != nil {
		for _, s := range p.inbound.sets {
			n += len(s.ports) + len(s.endpoints) + len(s.ranges)
		}
	}
	return n
}

// setCount is the number of sets and maps.
func (p plan) setCount() int {
	n := len(p.sets) + len(p.maps)
	for _, k := range p.classes {
		if k.ports != nil {
			n++
		}
	}
	if p.inbound != nil {
		n += len(p.inbound.sets)
	}
	return n
}

// normalizedExprs encodes expressions for comparison, with what the
// kernel fills in (counter values, set ids) zeroed.
func normalizedExprs(es []expr.Any) ([]byte, error) {
	var out bytes.Buffer
	for _, e := range es {
		switch x := e.(type) {
		case *expr.Counter:
			e = &expr.Counter{}
		case *expr.Lookup:
			c := *x
			c.SetID = 0
			e = &c
		}
		b, err := expr.Marshal(byte(nftables.TableFamilyINet), e)
		if err != nil {
			return nil, err
		}
		binary.Write(&out, binary.BigEndian, uint32(len(b)))
		out.Write(b)
	}
	return out.Bytes(), nil
}

// decodeElementKey splits a concatenated key into address and port.
func decodeElementKey(k []byte, v6 bool) (netip.Addr, uint16, bool) {
	n := 4
	if v6 {
		n = 16
	}
	if len(k) < n+2 {
		return netip.Addr{}, 0, false
	}
	a, _ := netip.AddrFromSlice(k[:n])
	return a, uint16(k[n])<<8 | uint16(k[n+1]), true
}

// rawElements are the set's element keys, sorted, as rawElements reads
// them back.
func (s kernelSet) rawElements() []string {
	out := make([]string, 0, len(s.elements))
	for _, e := range s.elements {
		out = append(out, string(elementKey(e.AddrFirst, e.Ports.First)))
	}
	slices.Sort(out)
	return out
}
