package nft

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"

	"github.com/google/nftables"
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
func (b *Backend) conn(size int) (*nftables.Conn, error) {
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
func (b *Backend) Available(context.Context) error {
	c, err := b.conn(0)
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
	res := firewall.Result{Rules: len(p.rules), Sets: len(p.sets), Elements: p.elementCount()}
	c, err := b.conn(p.batchSize())
	if err != nil {
		return res, err
	}
	defer c.CloseLasting()
	drift, err := p.drift(c)
	if err != nil {
		return res, err
	}
	if len(drift) == 0 {
		return res, nil
	}
	if err := p.queueReplace(c); err != nil {
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
	c, err := b.conn(0)
	if err != nil {
		return nil, err
	}
	defer c.CloseLasting()
	return p.drift(c)
}

// Remove deletes the table inet relayfw, and nothing else.
func (b *Backend) Remove(context.Context) (bool, error) {
	c, err := b.conn(0)
	if err != nil {
		return false, err
	}
	defer c.CloseLasting()
	t, err := ownTable(c)
	if err != nil || t == nil {
		return false, err
	}
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return false, classify(fmt.Errorf("deleting table inet %s: %w", TableName, err))
	}
	return true, nil
}

// Refresh replaces the contents of the point sets (relay links) in one
// transaction: flush and refill each set, leaving the chain alone.
func (b *Backend) Refresh(_ context.Context, rs rules.Ruleset) (added, removed int, err error) {
	p, err := newPlan(rs)
	if err != nil {
		return 0, 0, err
	}
	c, err := b.conn(p.batchSize())
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
	changed := false
	for _, want := range p.sets {
		if want.interval {
			continue
		}
		s, ok := have[want.name]
		if !ok || s.Interval {
			return 0, 0, fmt.Errorf("set %s is missing or of another type: run relayfw apply", want.name)
		}
		elems, err := c.GetSetElements(s)
		if err != nil {
			return 0, 0, classify(err)
		}
		var got []rules.Region
		for _, e := range elems {
			if a, port, ok := decodeElementKey(e.Key, want.v6); ok {
				got = append(got, rules.Region{AddrFirst: a, AddrLast: a, Ports: rules.PortRange{First: port, Last: port}})
			}
		}
		missing, extra := regionDiff(sortedRegions(want.elements), sortedRegions(got))
		if len(missing) == 0 && len(extra) == 0 {
			continue
		}
		added += len(missing)
		removed += len(extra)
		changed = true
		c.FlushSet(s)
		elements := want.setElements()
		for len(elements) > 0 {
			n := min(len(elements), elementsPerMessage)
			if err := c.SetAddElements(s, elements[:n]); err != nil {
				return 0, 0, err
			}
			elements = elements[n:]
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

// Counters sums the counters of the table's rules by rule name.
func (b *Backend) Counters(context.Context) (map[string]firewall.Counter, error) {
	out := map[string]firewall.Counter{}
	c, err := b.conn(0)
	if err != nil {
		return nil, err
	}
	defer c.CloseLasting()
	t, err := ownTable(c)
	if err != nil || t == nil {
		return out, err
	}
	chains, err := ownChains(c)
	if err != nil {
		return nil, err
	}
	for _, ch := range chains {
		if ch.Name != ChainName {
			continue
		}
		rs, err := c.GetRules(t, ch)
		if err != nil {
			return nil, classify(err)
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
	return out, nil
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
func (p plan) drift(c *nftables.Conn) ([]string, error) {
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
	var out *nftables.Chain
	for _, ch := range chains {
		if ch.Name != ChainName {
			drift = append(drift, fmt.Sprintf("unexpected chain %s", ch.Name))
			continue
		}
		out = ch
	}
	if out == nil {
		return append(drift, fmt.Sprintf("chain %s is missing", ChainName)), nil
	}
	if out.Type != nftables.ChainTypeFilter || out.Hooknum == nil || *out.Hooknum != *nftables.ChainHookOutput ||
		out.Priority == nil || *out.Priority != *nftables.ChainPriorityFilter ||
		out.Policy == nil || *out.Policy != nftables.ChainPolicyAccept {
		drift = append(drift, fmt.Sprintf("chain %s is not \"type filter hook output priority filter; policy accept\"", ChainName))
	}

	setDrift, err := p.setDrift(c, t)
	if err != nil {
		return nil, err
	}
	drift = append(drift, setDrift...)

	installed, err := c.GetRules(t, out)
	if err != nil {
		return nil, classify(err)
	}
	ruleDrift, err := p.ruleDrift(installed)
	if err != nil {
		return nil, err
	}
	return append(drift, ruleDrift...), nil
}

func (p plan) setDrift(c *nftables.Conn, t *nftables.Table) ([]string, error) {
	var drift []string
	sets, err := c.GetSets(t)
	if err != nil {
		return nil, classify(err)
	}
	have := map[string]*nftables.Set{}
	for _, s := range sets {
		if s.Anonymous {
			drift = append(drift, fmt.Sprintf("unexpected anonymous set %s", s.Name))
			continue
		}
		have[s.Name] = s
	}
	for _, want := range p.sets {
		s, ok := have[want.name]
		if !ok {
			drift = append(drift, fmt.Sprintf("set %s is missing", want.name))
			continue
		}
		delete(have, want.name)
		obj, err := want.object(t)
		if err != nil {
			return nil, err
		}
		if s.KeyType.Bytes != obj.KeyType.Bytes || s.Interval != want.interval || s.Concatenation != obj.Concatenation || s.IsMap {
			drift = append(drift, fmt.Sprintf("set %s has the wrong type or flags", want.name))
			continue
		}
		elems, err := c.GetSetElements(s)
		if err != nil {
			return nil, classify(err)
		}
		var got []rules.Region
		for _, e := range elems {
			if e.IntervalEnd {
				continue
			}
			first, pf, ok1 := decodeElementKey(e.Key, want.v6)
			last, pl := first, pf
			ok2 := true
			if len(e.KeyEnd) > 0 {
				last, pl, ok2 = decodeElementKey(e.KeyEnd, want.v6)
			}
			if !ok1 || !ok2 {
				drift = append(drift, fmt.Sprintf("set %s holds an element relayfw cannot read", want.name))
				continue
			}
			got = append(got, rules.Region{AddrFirst: first, AddrLast: last, Ports: rules.PortRange{First: pf, Last: pl}})
		}
		missing, extra := regionDiff(sortedRegions(want.elements), sortedRegions(got))
		if len(missing) > 0 {
			drift = append(drift, fmt.Sprintf("set %s: %d elements missing, e.g. %s", want.name, len(missing), elementText(missing[0])))
		}
		if len(extra) > 0 {
			drift = append(drift, fmt.Sprintf("set %s: %d unexpected elements, e.g. %s", want.name, len(extra), elementText(extra[0])))
		}
	}
	names := make([]string, 0, len(have))
	for n := range have {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		drift = append(drift, fmt.Sprintf("unexpected set %s", n))
	}
	return drift, nil
}

// regionDiff returns the elements only in want and only in got (both
// sorted).
func regionDiff(want, got []rules.Region) (missing, extra []rules.Region) {
	i, j := 0, 0
	for i < len(want) || j < len(got) {
		switch {
		case j == len(got):
			missing = append(missing, want[i])
			i++
		case i == len(want):
			extra = append(extra, got[j])
			j++
		case want[i] == got[j]:
			i++
			j++
		case compareRegions(want[i], got[j]) < 0:
			missing = append(missing, want[i])
			i++
		default:
			extra = append(extra, got[j])
			j++
		}
	}
	return missing, extra
}

// ruleDrift compares installed rules with the plan's, as an edit script
// (longest common subsequence) so one inserted rule is one line.
func (p plan) ruleDrift(installed []*nftables.Rule) ([]string, error) {
	sets := map[string]*nftables.Set{}
	for _, s := range p.sets {
		sets[s.name] = &nftables.Set{Name: s.name}
	}
	want := make([]string, len(p.rules))
	for i, r := range p.rules {
		b, err := normalizedExprs(r.exprs(sets))
		if err != nil {
			return nil, err
		}
		want[i] = string(r.userData()) + "\x00" + string(b)
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
	for _, e := range firewall.Diff(want, have) {
		if e.Reordered {
			drift = append(drift, fmt.Sprintf("rules from %d on are in another order", e.Want+1))
			continue
		}
		if e.Missing {
			drift = append(drift, fmt.Sprintf("missing rule %d: %s", e.Want+1, p.rules[e.Want].text()))
		} else {
			drift = append(drift, fmt.Sprintf("unexpected rule (handle %d): %s", installed[e.Have].Handle, describe(installed[e.Have])))
		}
	}
	return drift, nil
}

// describe names an installed rule by its comment.
func describe(r *nftables.Rule) string {
	if i := strings.Index(string(r.UserData), CommentPrefix); i >= 0 {
		return fmt.Sprintf("comment %q (changed or out of place)", strings.TrimRight(string(r.UserData[i:]), "\x00"))
	}
	return "not generated by relayfw"
}
