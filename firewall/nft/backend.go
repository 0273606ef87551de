package nft

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/rules"
)

// Backend installs the ruleset as the nftables table inet relayfw.
type Backend struct {
	// NetNS, when non-zero, is a network namespace file descriptor: the
	// netlink socket is opened there (tests use it).
	NetNS int
}

var _ firewall.Backend = (*Backend)(nil)

// Name is "nftables".
func (b *Backend) Name() string { return "nftables" }

// Render is the nft -f text of the ruleset.
func (b *Backend) Render(rs rules.Ruleset) (string, error) { return Render(rs) }

// conn opens a netlink connection whose send buffer fits a batch of about
// size bytes: google/nftables sends a whole batch in one sendmsg, and a
// large exit policy is tens of thousands of set elements.
func (b *Backend) conn(ctx context.Context, size int) (*nftables.Conn, error) {
	// The netlink library takes no context: an operation that was
	// canceled does not start talking to the kernel.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	opts := []nftables.ConnOption{nftables.AsLasting()}
	if b.NetNS != 0 {
		opts = append(opts, nftables.WithNetNSFd(b.NetNS))
	}
	if size > 0 {
		buf := max(size*2, 4<<20)
		opts = append(opts, nftables.WithSockOptions(func(c *netlink.Conn) error {
			// Acks must not echo the (large) requests back.
			if err := c.SetOption(netlink.CapAcknowledge, true); err != nil {
				return err
			}
			raw, err := c.SyscallConn()
			if err != nil {
				return err
			}
			var serr error
			err = raw.Control(func(fd uintptr) {
				// SO_SNDBUFFORCE passes wmem_max for CAP_NET_ADMIN callers.
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, buf)
				if serr == nil {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, buf)
				}
			})
			if err != nil {
				return err
			}
			return serr
		}))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, classify(err)
	}
	return c, nil
}

// classify maps netlink errors to the firewall package's sentinels.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return fmt.Errorf("nftables: %w", firewall.ErrNotPermitted)
	case errors.Is(err, syscall.EPROTONOSUPPORT), errors.Is(err, syscall.EAFNOSUPPORT), errors.Is(err, syscall.EOPNOTSUPP):
		return fmt.Errorf("nftables: %w: the kernel does not answer nf_tables over netlink (%v)", firewall.ErrUnavailable, err)
	}
	return fmt.Errorf("nftables: %w", err)
}

// Available asks the kernel for its inet tables.
func (b *Backend) Available(ctx context.Context) error {
	c, err := b.conn(ctx, 0)
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	_, err = c.ListTablesOfFamily(nftables.TableFamilyINet)
	return classify(err)
}

// Apply replaces the table in one transaction, unless it already holds
// exactly the ruleset.
func (b *Backend) Apply(ctx context.Context, rs rules.Ruleset) (firewall.Result, error) {
	p, err := newPlan(rs)
	if err != nil {
		return firewall.Result{}, err
	}
	res := firewall.Result{Rules: p.ruleCount(), Sets: p.setCount(), Elements: p.elementCount()}
	c, err := b.conn(ctx, p.batchSize())
	if err != nil {
		return res, err
	}
	defer c.CloseLasting()
	drift, err := p.drift(ctx, c)
	if err != nil {
		return res, err
	}
	if len(drift) == 0 {
		return res, nil
	}
	res.Drift = drift
	var keep map[string][]nftables.SetElement
	if p.inbound != nil {
		if keep, err = p.inbound.liveBlocks(c); err != nil {
			return res, err
		}
	}
	if err := p.queueReplace(c, keep); err != nil {
		return res, err
	}
	if err := c.Flush(); err != nil {
		return res, classify(fmt.Errorf("replacing table inet %s: %w", TableName, err))
	}
	res.Changed = true
	return res, nil
}

// batchSize estimates the netlink batch of a replacement, in bytes.
func (p plan) batchSize() int {
	return 64*1024 + len(p.rules)*512 + p.elementCount()*96
}

// Check reports how the installed table differs from the ruleset.
func (b *Backend) Check(ctx context.Context, rs rules.Ruleset) ([]string, error) {
	p, err := newPlan(rs)
	if err != nil {
		return nil, err
	}
	c, err := b.conn(ctx, 0)
	if err != nil {
		return nil, err
	}
	defer c.CloseLasting()
	return p.drift(ctx, c)
}

// Remove deletes the table inet relayfw, and nothing else.
func (b *Backend) Remove(ctx context.Context) (bool, error) {
	return b.withTable(ctx, func(c *nftables.Conn, t *nftables.Table) error {
		c.DelTable(t)
		if err := c.Flush(); err != nil {
			return classify(fmt.Errorf("deleting table inet %s: %w", TableName, err))
		}
		return nil
	})
}

// Refresh brings the sets that follow the consensus up to date in one
// transaction: the relay links (it deletes the elements that left and
// adds the new ones) and the inbound protection's trusted sources,
// leaving the chains alone.
func (b *Backend) Refresh(ctx context.Context, rs rules.Ruleset) (added, removed int, err error) {
	p, err := newPlan(rs)
	if err != nil {
		return 0, 0, err
	}
	c, err := b.conn(ctx, p.batchSize())
	if err != nil {
		return 0, 0, err
	}
	defer c.CloseLasting()
	t, err := ownTable(c)
	if err != nil {
		return 0, 0, err
	}
	if t == nil {
		return 0, 0, fmt.Errorf("table inet %s is not installed: run relayfw apply first", TableName)
	}
	have := map[string]*nftables.Set{}
	sets, err := c.GetSets(t)
	if err != nil {
		return 0, 0, classify(err)
	}
	for _, s := range sets {
		have[s.Name] = s
	}
	// What each set gets: a relay-link set only what changed (a consensus
	// moves a few relays an hour); an interval set of trusted sources
	// (authorities, relays) is replaced whole in the same transaction.
	type job struct {
		name     string
		interval bool
		want     []string
		update   func(s *nftables.Set, missing, extra []string) error
	}
	var jobs []job
	for _, want := range p.sets {
		jobs = append(jobs, job{want.name, false, want.rawElements(), func(s *nftables.Set, missing, extra []string) error {
			if err := delElements(c, s, keysAsElements(extra)); err != nil {
				return err
			}
			return addElements(c, s, keysAsElements(missing))
		}})
	}
	if p.inbound != nil {
		for _, want := range p.inbound.sets {
			if want.interval {
				jobs = append(jobs, job{want.name, true, want.rawElements(), func(s *nftables.Set, _, _ []string) error {
					c.FlushSet(s)
					return addElements(c, s, want.setElements())
				}})
			}
		}
	}
	changed := false
	for _, j := range jobs {
		s, missing, extra, err := installedDiff(c, have, j.name, j.interval, j.want)
		if err != nil {
			return 0, 0, err
		}
		if len(missing) == 0 && len(extra) == 0 {
			continue
		}
		added += len(missing)
		removed += len(extra)
		changed = true
		if err := j.update(s, missing, extra); err != nil {
			return 0, 0, err
		}
	}
	if !changed {
		return 0, 0, nil
	}
	if err := c.Flush(); err != nil {
		return 0, 0, classify(fmt.Errorf("refreshing sets: %w", err))
	}
	return added, removed, nil
}

// installedDiff reads the named set of the installed table (have) and
// compares its elements with want (rawElements' form): what is missing
// and what is extra. A set that is missing or of another kind is an error
// that apply mends.
func installedDiff(c *nftables.Conn, have map[string]*nftables.Set, name string, interval bool, want []string) (*nftables.Set, []string, []string, error) {
	s, ok := have[name]
	if !ok || s.Interval != interval || s.IsMap {
		return nil, nil, nil, fmt.Errorf("set %s is missing or of another type: run relayfw apply", name)
	}
	elems, err := c.GetSetElements(s)
	if err != nil {
		return nil, nil, nil, classify(err)
	}
	got, err := rawElements(s, elems)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("set %s: %w: run relayfw apply", name, err)
	}
	missing, extra := firewall.SortedDiff(want, got)
	return s, missing, extra, nil
}

// Counters sums the counters of the table's rules by rule name, over the
// output chain and the exit policy's class chains.
func (b *Backend) Counters(ctx context.Context) (map[string]firewall.Counter, error) {
	out := map[string]firewall.Counter{}
	_, err := b.withTable(ctx, func(c *nftables.Conn, t *nftables.Table) error {
		chains, err := ownChains(c)
		if err != nil {
			return err
		}
		for _, ch := range chains {
			rs, err := c.GetRules(t, ch)
			if err != nil {
				return classify(err)
			}
			for _, r := range rs {
				comment, ok := userdata.GetString(r.UserData, userdata.TypeComment)
				name, mine := strings.CutPrefix(comment, CommentPrefix)
				if !ok || !mine {
					continue
				}
				for _, e := range r.Exprs {
					if ctr, ok := e.(*expr.Counter); ok {
						sum := out[name]
						sum.Packets += ctr.Packets
						sum.Bytes += ctr.Bytes
						out[name] = sum
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// withTable runs f on a connection with the installed table inet
// relayfw; when the table is not installed, f does not run and installed
// is false.
func (b *Backend) withTable(ctx context.Context, f func(c *nftables.Conn, t *nftables.Table) error) (installed bool, err error) {
	c, err := b.conn(ctx, 0)
	if err != nil {
		return false, err
	}
	defer c.CloseLasting()
	t, err := ownTable(c)
	if err != nil || t == nil {
		return false, err
	}
	return true, f(c, t)
}

// ownTable is the table inet relayfw, or nil when it is not installed.
func ownTable(c *nftables.Conn) (*nftables.Table, error) {
	t, err := c.ListTableOfFamily(TableName, nftables.TableFamilyINet)
	if errors.Is(err, syscall.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, classify(err)
	}
	return t, nil
}

// ownChains are the chains of the table inet relayfw.
func ownChains(c *nftables.Conn) ([]*nftables.Chain, error) {
	all, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, classify(err)
	}
	var out []*nftables.Chain
	for _, ch := range all {
		if ch.Table.Name == TableName {
			out = append(out, ch)
		}
	}
	return out, nil
}

// drift compares the kernel's table with the plan, one line per difference.
func (p plan) drift(ctx context.Context, c *nftables.Conn) ([]string, error) {
	t, err := ownTable(c)
	if err != nil {
		return nil, err
	}
	if t == nil {
		return []string{fmt.Sprintf("table inet %s is not installed", TableName)}, nil
	}
	var drift []string

	chains, err := ownChains(c)
	if err != nil {
		return nil, err
	}
	sets := p.nameSets()
	want := map[string][]chainRule{ChainName: chainRules(p.rules, sets)}
	for _, k := range p.classes {
		want[k.chain] = chainRules([]kernelRule{k.rule}, sets)
	}
	if p.inbound != nil {
		want[InboundChainName] = chainRules(p.inbound.rules, sets)
		for _, j := range p.inbound.jumps {
			want[InputChainName] = append(want[InputChainName], chainRule{j.exprs(sets), jumpUserData(), j.text()})
		}
	}
	have := map[string]*nftables.Chain{}
	for _, ch := range chains {
		if _, ok := want[ch.Name]; !ok {
			drift = append(drift, fmt.Sprintf("unexpected chain %s", ch.Name))
			continue
		}
		have[ch.Name] = ch
	}
	for _, base := range []struct {
		name string
		hook *nftables.ChainHook
		text string
	}{{ChainName, nftables.ChainHookOutput, "output"}, {InputChainName, nftables.ChainHookInput, "input"}} {
		ch := have[base.name]
		if ch != nil && (ch.Type != nftables.ChainTypeFilter || ch.Hooknum == nil || *ch.Hooknum != *base.hook ||
			ch.Priority == nil || *ch.Priority != *nftables.ChainPriorityFilter ||
			ch.Policy == nil || *ch.Policy != nftables.ChainPolicyAccept) {
			drift = append(drift, fmt.Sprintf("chain %s is not \"type filter hook %s priority filter; policy accept\"", base.name, base.text))
		}
	}

	setDrift, err := p.setDrift(c, t)
	if err != nil {
		return nil, err
	}
	drift = append(drift, setDrift...)

	// The class chains in plan order, then the output chain, then the
	// inbound chains.
	names := make([]string, 0, len(want))
	for _, k := range p.classes {
		names = append(names, k.chain)
	}
	names = append(names, ChainName)
	if p.inbound != nil {
		names = append(names, InboundChainName, InputChainName)
	}
	for _, name := range names {
		ch := have[name]
		if ch == nil {
			drift = append(drift, fmt.Sprintf("chain %s is missing", name))
			continue
		}
		if name != ChainName && name != InputChainName && ch.Hooknum != nil {
			drift = append(drift, fmt.Sprintf("chain %s is a base chain", name))
		}
		installed, err := c.GetRules(t, ch)
		if err != nil {
			return nil, classify(err)
		}
		ruleDrift, err := ruleDrift(ctx, name, want[name], installed)
		if err != nil {
			return nil, err
		}
		drift = append(drift, ruleDrift...)
	}
	return drift, nil
}

// nameSets are the plan's sets by name, as rules refer to them when they
// are compared (the kernel's set ids are not compared).
func (p plan) nameSets() map[string]*nftables.Set {
	sets := map[string]*nftables.Set{}
	for _, s := range p.sets {
		sets[s.name] = &nftables.Set{Name: s.name}
	}
	for _, m := range p.maps {
		sets[m.name] = &nftables.Set{Name: m.name}
	}
	for _, k := range p.classes {
		sets[k.chain] = &nftables.Set{Name: k.chain}
	}
	if p.inbound != nil {
		for _, s := range p.inbound.sets {
			sets[s.name] = &nftables.Set{Name: s.name}
		}
	}
	return sets
}

// wantedSet is a set or map the plan installs, with its elements in the
// form rawElements reads them back.
type wantedSet struct {
	obj      *nftables.Set
	elements []string // sorted
	dynamic  bool     // filled by the packet path: elements not compared
}

func (p plan) wantedSets(t *nftables.Table) (map[string]wantedSet, error) {
	out := map[string]wantedSet{}
	for _, s := range p.sets {
		obj, err := s.object(t)
		if err != nil {
			return nil, err
		}
		out[s.name] = wantedSet{obj, s.rawElements(), false}
	}
	for _, k := range p.classes {
		if k.ports == nil {
			continue
		}
		var els []string
		for _, pr := range k.ports {
			els = append(els, rawInterval(binaryutil.BigEndian.PutUint16(pr.First), binaryutil.BigEndian.PutUint16(pr.Last), ""))
		}
		out[k.chain] = wantedSet{k.portSetObject(t), sortedStrings(els), false}
	}
	for _, m := range p.maps {
		els := make([]string, 0, len(m.intervals))
		for _, iv := range m.intervals {
			els = append(els, rawInterval(iv.first.AsSlice(), iv.last.AsSlice(), "jump "+iv.chain))
		}
		out[m.name] = wantedSet{m.object(t), sortedStrings(els), false}
	}
	if p.inbound != nil {
		for _, s := range p.inbound.sets {
			out[s.name] = wantedSet{s.object(t), s.rawElements(), s.dynamic}
		}
	}
	return out, nil
}

func sortedStrings(s []string) []string {
	slices.Sort(s)
	return s
}

func (p plan) setDrift(c *nftables.Conn, t *nftables.Table) ([]string, error) {
	var drift []string
	sets, err := c.GetSets(t)
	if err != nil {
		return nil, classify(err)
	}
	want, err := p.wantedSets(t)
	if err != nil {
		return nil, err
	}
	have := map[string]*nftables.Set{}
	for _, s := range sets {
		if s.Anonymous {
			drift = append(drift, fmt.Sprintf("unexpected anonymous set %s", s.Name))
			continue
		}
		have[s.Name] = s
	}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		w := want[name]
		kind := "set"
		if w.obj.IsMap {
			kind = "map"
		}
		s, ok := have[name]
		if !ok {
			drift = append(drift, fmt.Sprintf("%s %s is missing", kind, name))
			continue
		}
		delete(have, name)
		// google/nftables reads a map's key and data types back garbled;
		// its elements, compared below, show the key all the same.
		if (!s.IsMap && s.KeyType.Bytes != w.obj.KeyType.Bytes) || s.Interval != w.obj.Interval || s.Concatenation != w.obj.Concatenation ||
			s.IsMap != w.obj.IsMap {
			drift = append(drift, fmt.Sprintf("%s %s has the wrong type or flags", kind, name))
			continue
		}
		if s.Dynamic != w.obj.Dynamic || s.HasTimeout != w.obj.HasTimeout || s.Timeout != w.obj.Timeout || s.Size != w.obj.Size {
			drift = append(drift, fmt.Sprintf("%s %s has another size, timeout or dynamic flag", kind, name))
			continue
		}
		if w.dynamic {
			continue // blocked sources and meters: the kernel's own
		}
		elems, err := c.GetSetElements(s)
		if err != nil {
			return nil, classify(err)
		}
		got, err := rawElements(w.obj, elems)
		if err != nil {
			drift = append(drift, fmt.Sprintf("%s %s: %v", kind, name, err))
			continue
		}
		missing, extra := firewall.SortedDiff(w.elements, got)
		if len(missing) > 0 {
			drift = append(drift, fmt.Sprintf("%s %s: %d elements missing, e.g. %s", kind, name, len(missing), rawText(w.obj, missing[0])))
		}
		if len(extra) > 0 {
			drift = append(drift, fmt.Sprintf("%s %s: %d unexpected elements, e.g. %s", kind, name, len(extra), rawText(w.obj, extra[0])))
		}
	}
	rest := make([]string, 0, len(have))
	for n := range have {
		rest = append(rest, n)
	}
	slices.Sort(rest)
	for _, n := range rest {
		drift = append(drift, fmt.Sprintf("unexpected set %s", n))
	}
	return drift, nil
}

// rawElements reads a set's elements back as comparable strings, sorted:
// a point's key; an interval's first and last key, then a map's verdict
// ("jump CHAIN"). Interval sets come from the kernel as start and end
// keys: a lookup finds the greatest key not above the packet's, and
// matches when that is a start; so a start runs up to the next key,
// whatever it is. Comparing raw keys, not text, keeps a no-op apply of a
// large exit map cheap.
func rawElements(s *nftables.Set, elems []nftables.SetElement) ([]string, error) {
	out := make([]string, 0, len(elems))
	if !s.Interval {
		for _, e := range elems {
			out = append(out, string(e.Key))
		}
		slices.Sort(out)
		return out, nil
	}
	ivs, err := intervals(s, elems)
	if err != nil {
		return nil, err
	}
	for _, iv := range ivs {
		out = append(out, rawInterval(iv.first, iv.last, iv.verdict))
	}
	slices.Sort(out)
	return out, nil
}

// interval is an interval set's element read back: keys first to last,
// and a map's verdict.
type interval struct {
	first, last []byte
	verdict     string
}

// intervals reads an interval set's start and end keys back as intervals,
// neighbours with one verdict joined.
func intervals(s *nftables.Set, elems []nftables.SetElement) ([]interval, error) {
	slices.SortStableFunc(elems, func(a, b nftables.SetElement) int {
		if c := bytes.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		if a.IntervalEnd != b.IntervalEnd { // an end before a start at one key
			if a.IntervalEnd {
				return -1
			}
			return 1
		}
		return 0
	})
	var ivs []interval
	for i, e := range elems {
		if e.IntervalEnd {
			continue
		}
		iv := interval{first: e.Key, last: bytes.Repeat([]byte{0xff}, len(e.Key))}
		if i+1 < len(elems) {
			next := elems[i+1].Key
			if bytes.Equal(next, e.Key) {
				continue // a start that an equal key hides
			}
			iv.last = prevKey(next)
		}
		if s.IsMap {
			v, err := decodeVerdict(e.Val)
			if err != nil {
				return nil, err
			}
			iv.verdict = v
		}
		// Neighbouring intervals with one verdict are one interval.
		if n := len(ivs); n > 0 && ivs[n-1].verdict == iv.verdict {
			if end, ok := nextKey(ivs[n-1].last); ok && bytes.Equal(end, iv.first) {
				ivs[n-1].last = iv.last
				continue
			}
		}
		ivs = append(ivs, iv)
	}
	return ivs, nil
}

func rawInterval(first, last []byte, verdict string) string {
	return string(first) + string(last) + verdict
}

// rawText is a raw element in the text print writes, for messages; the
// wanted set's key length tells where the keys end.
func rawText(w *nftables.Set, raw string) string {
	if !w.Interval && len(raw) == 2 {
		return fmt.Sprint(uint16(raw[0])<<8 | uint16(raw[1])) // a port
	}
	if !w.Interval && len(raw) != 8 && len(raw) != 20 {
		a, ok := netip.AddrFromSlice([]byte(raw))
		if ok {
			return a.String()
		}
	}
	if !w.Interval {
		a, port, ok := decodeElementKey([]byte(raw), len(raw) > 8)
		if !ok {
			return fmt.Sprintf("%x", raw)
		}
		return elementText(rules.Region{AddrFirst: a, AddrLast: a, Ports: rules.PortRange{First: port, Last: port}})
	}
	k := int(w.KeyType.Bytes)
	if len(raw) < 2*k {
		return fmt.Sprintf("%x", raw)
	}
	keyText := func(b string) string {
		if k == 2 {
			return fmt.Sprint(uint16(b[0])<<8 | uint16(b[1]))
		}
		a, _ := netip.AddrFromSlice([]byte(b))
		return a.String()
	}
	text := keyText(raw[:k])
	if last := keyText(raw[k : 2*k]); last != text {
		text += "-" + last
	}
	if v := raw[2*k:]; v != "" {
		text += " : " + v
	}
	return text
}

// prevKey is the big-endian key one below k (k is not all zeros).
func prevKey(k []byte) []byte {
	out := slices.Clone(k)
	for i := len(out) - 1; i >= 0; i-- {
		out[i]--
		if out[i] != 0xff {
			break
		}
	}
	return out
}

// decodeVerdict reads a map element's verdict ("jump CHAIN", "accept", …).
func decodeVerdict(b []byte) (string, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return "", err
	}
	ad.ByteOrder = binary.BigEndian
	var code int32
	var chain string
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			code = int32(ad.Uint32())
		case unix.NFTA_VERDICT_CHAIN:
			chain = ad.String()
		}
	}
	if err := ad.Err(); err != nil {
		return "", err
	}
	switch code {
	case unix.NFT_JUMP:
		return "jump " + chain, nil
	case unix.NFT_GOTO:
		return "goto " + chain, nil
	case 1: // NF_ACCEPT
		return "accept", nil
	case 0: // NF_DROP
		return "drop", nil
	}
	return fmt.Sprintf("verdict %d", code), nil
}

// chainRule is a rule as drift compares it: its netlink form and text.
type chainRule struct {
	exprs    []expr.Any
	userData []byte
	text     string
}

// plannedRule is a rule of the plan (the output and class chains', or the
// inbound protection's): its netlink form, comment and text.
type plannedRule interface {
	exprs(sets map[string]*nftables.Set) []expr.Any
	userData() []byte
	text() string
}

// chainRules are the planned rules of one chain as drift compares them.
func chainRules[R plannedRule](planned []R, sets map[string]*nftables.Set) []chainRule {
	out := make([]chainRule, len(planned))
	for i, r := range planned {
		out[i] = chainRule{r.exprs(sets), r.userData(), r.text()}
	}
	return out
}

// ruleDrift compares a chain's installed rules with the plan's, as an edit
// script (longest common subsequence) so one inserted rule is one line.
func ruleDrift(ctx context.Context, chain string, wantRules []chainRule, installed []*nftables.Rule) ([]string, error) {
	want := make([]string, len(wantRules))
	for i, r := range wantRules {
		b, err := normalizedExprs(r.exprs)
		if err != nil {
			return nil, err
		}
		want[i] = string(r.userData) + "\x00" + string(b)
	}
	have := make([]string, len(installed))
	for i, r := range installed {
		b, err := normalizedExprs(r.Exprs)
		if err != nil {
			return nil, err
		}
		have[i] = string(r.UserData) + "\x00" + string(b)
	}
	var drift []string
	var listed map[uint64]string // nft's own text of the chain's rules, read once
	for _, e := range firewall.Diff(want, have) {
		if e.Reordered {
			drift = append(drift, fmt.Sprintf("chain %s: rules from %d on are in another order", chain, e.Want+1))
			continue
		}
		if e.Missing {
			drift = append(drift, fmt.Sprintf("chain %s: missing rule %d: %s", chain, e.Want+1, wantRules[e.Want].text))
		} else {
			r := installed[e.Have]
			if listed == nil {
				listed = listChain(ctx, chain)
			}
			text, ok := listed[r.Handle]
			if !ok {
				text = exprSummary(r)
			}
			drift = append(drift, fmt.Sprintf("chain %s: unexpected rule (handle %d): %s (%s)", chain, r.Handle, text, describe(r)))
		}
	}
	return drift, nil
}

// listChain is nft's own text of a chain's rules by handle, from the nft
// binary when the host has it (the backend itself needs none): the way an
// admin wrote a rule is the way to show it back.
func listChain(ctx context.Context, chain string) map[uint64]string {
	out := map[uint64]string{}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	text, err := exec.CommandContext(ctx, "nft", "-a", "list", "chain", "inet", TableName, chain).Output()
	if err != nil {
		return out
	}
	for _, l := range strings.Split(string(text), "\n") {
		body, handle, ok := strings.Cut(strings.TrimSpace(l), " # handle ")
		if !ok {
			continue
		}
		if h, err := strconv.ParseUint(handle, 10, 64); err == nil {
			out[h] = body
		}
	}
	return out
}

// exprSummary names a rule's expressions, when nft cannot show it.
func exprSummary(r *nftables.Rule) string {
	var kinds []string
	for _, e := range r.Exprs {
		kinds = append(kinds, strings.ToLower(strings.TrimPrefix(fmt.Sprintf("%T", e), "*expr.")))
	}
	return "expressions: " + strings.Join(kinds, ", ")
}

// describe names an installed rule by its comment.
func describe(r *nftables.Rule) string {
	if i := strings.Index(string(r.UserData), CommentPrefix); i >= 0 {
		return fmt.Sprintf("comment %q (changed or out of place)", strings.TrimRight(string(r.UserData[i:]), "\x00"))
	}
	return "not generated by relayfw"
}

// keysAsElements turns raw point-set keys back into elements.
func keysAsElements(keys []string) []nftables.SetElement {
	out := make([]nftables.SetElement, len(keys))
	for i, k := range keys {
		out[i] = nftables.SetElement{Key: []byte(k)}
	}
	return out
}

// Installed reports whether the table inet relayfw exists.
func (b *Backend) Installed(ctx context.Context) (bool, error) {
	c, err := b.conn(ctx, 0)
	if err != nil {
		return false, err
	}
	defer c.CloseLasting()
	t, err := ownTable(c)
	return t != nil, err
}

// RelayLinks reads the installed elements of the ruleset's point sets.
func (b *Backend) RelayLinks(ctx context.Context, rs rules.Ruleset) (map[string][]rules.Region, error) {
	c, err := b.conn(ctx, 0)
	if err != nil {
		return nil, err
	}
	defer c.CloseLasting()
	out := map[string][]rules.Region{}
	t, err := ownTable(c)
	if err != nil || t == nil {
		return out, err
	}
	sets, err := c.GetSets(t)
	if err != nil {
		return nil, classify(err)
	}
	for _, want := range rs.Sets {
		for _, s := range sets {
			if s.Name != want.Name || s.Interval || s.IsMap {
				continue
			}
			elems, err := c.GetSetElements(s)
			if err != nil {
				return nil, classify(err)
			}
			regions := []rules.Region{}
			for _, e := range elems {
				if len(e.Key) != 8 && len(e.Key) != 20 {
					continue // not an (address . port) key
				}
				a, _ := netip.AddrFromSlice(e.Key[:len(e.Key)-4])
				port := uint16(e.Key[len(e.Key)-4])<<8 | uint16(e.Key[len(e.Key)-3])
				regions = append(regions, rules.Region{AddrFirst: a, AddrLast: a, Ports: rules.PortRange{First: port, Last: port}})
			}
			out[want.Name] = regions
		}
	}
	if rs.Inbound == nil {
		return out, nil
	}
	for _, fam := range []rules.Family{rules.IPv4, rules.IPv6} {
		name := rules.InboundSetName("trust", fam)
		for _, s := range sets {
			if s.Name != name || !s.Interval || s.IsMap {
				continue
			}
			elems, err := c.GetSetElements(s)
			if err != nil {
				return nil, classify(err)
			}
			ivs, err := intervals(s, elems)
			if err != nil {
				return nil, err
			}
			regions := []rules.Region{}
			for _, iv := range ivs {
				first, ok1 := netip.AddrFromSlice(iv.first)
				last, ok2 := netip.AddrFromSlice(iv.last)
				if ok1 && ok2 {
					regions = append(regions, rules.Region{AddrFirst: first, AddrLast: last})
				}
			}
			out[name] = regions
		}
	}
	return out, nil
}
