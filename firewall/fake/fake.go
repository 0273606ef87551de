// Package fake is an in-memory firewall.Backend for tests: its "kernel"
// is the ruleset last applied, with its sets' contents, rule counters and
// blocked sources, and it reports drift between that and any ruleset as a
// kernel backend would. Faults make chosen operations fail, once or every
// time, before or after they take effect.
package fake

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/ruleset"
)

// Op names an operation of the Backend interface.
type Op string

// The operations a Fault can make fail.
const (
	OpAvailable  Op = "Available"
	OpApply      Op = "Apply"
	OpCheck      Op = "Check"
	OpRemove     Op = "Remove"
	OpRefresh    Op = "Refresh"
	OpInstalled  Op = "Installed"
	OpRelayLinks Op = "RelayLinks"
	OpBlocked    Op = "Blocked"
	OpUnblock    Op = "Unblock"
	OpCounters   Op = "Counters"
)

// Fault makes calls of Op fail with Err.
type Fault struct {
	Op  Op
	Err error
	// Times is how many calls fail; 0: every call, until another Fault
	// for Op replaces it (one with a nil Err clears it).
	Times int
	// Halfway: the operation takes effect, then fails (a change the
	// kernel took part of, which the backend could not undo).
	Halfway bool
}

// Backend is the in-memory backend. Its zero value is not usable: New
// makes one.
type Backend struct {
	kind string

	mu        sync.Mutex
	installed *ruleset.Ruleset // nil: nothing installed
	foreign   []string         // rules added by hand to relayfw's chain
	counters  map[string]firewall.Counter
	blocked   []firewall.Block
	faults    map[Op]*Fault
	calls     map[Op]int
	// gen is the "kernel's" ruleset generation: every change but the
	// packet path's (counters, blocks) adds one, as nftables' does.
	gen uint32
}

var _ firewall.Backend = (*Backend)(nil)

// New is an empty backend of a kind, "nftables" or "iptables" (what
// relayfw's state and --backend call it).
func New(kind string) *Backend {
	return &Backend{kind: kind, counters: map[string]firewall.Counter{}, faults: map[Op]*Fault{}, calls: map[Op]int{}}
}

// Name is the kind, marked as a fake.
func (b *Backend) Name() string { return b.kind + " (fake)" }

// Inject sets the fault of f.Op (a nil Err clears it).
func (b *Backend) Inject(f Fault) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if f.Err == nil {
		delete(b.faults, f.Op)
		return
	}
	b.faults[f.Op] = &f
}

// Calls is how many times op was called, failed calls included.
func (b *Backend) Calls(op Op) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls[op]
}

// Ruleset is a copy of the installed ruleset, with its sets as the kernel
// holds them; nil when nothing is installed.
func (b *Backend) Ruleset() *ruleset.Ruleset {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.installed == nil {
		return nil
	}
	rs := clone(*b.installed)
	return &rs
}

// Install puts rs in the kernel as another process would (not an Apply:
// no call is counted, no fault applies).
func (b *Backend) Install(rs ruleset.Ruleset) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.install(rs)
}

func (b *Backend) install(rs ruleset.Ruleset) {
	c := clone(rs)
	b.installed, b.foreign = &c, nil
	b.gen++
}

// SetElements replaces the contents of an installed set that follows the
// consensus (a relay-link set or a family's trusted sources), as an older
// consensus, another relayfw or a hand edit would have left them.
func (b *Backend) SetElements(name string, regions []ruleset.Region) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.installed == nil {
		return errors.New("fake: nothing installed")
	}
	for _, ls := range b.installed.LinkSets() {
		if ls.Name == name {
			setLinks(b.installed, ls, regions)
			b.gen++
			return nil
		}
	}
	return fmt.Errorf("fake: no set %s installed", name)
}

// AddForeignRule adds a rule relayfw did not generate to the end of its
// chain, as an administrator's hand edit would; Check reports it, Apply
// removes it.
func (b *Backend) AddForeignRule(text string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.installed == nil {
		return errors.New("fake: nothing installed")
	}
	b.foreign = append(b.foreign, text)
	b.gen++
	return nil
}

// Count adds traffic to an installed rule's counter (by its name).
func (b *Backend) Count(rule string, packets, bytes uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	firewall.Count(b.counters, ruleset.CommentPrefix+rule, packets, bytes)
}

// Block adds a blocked source, as the inbound protection's packet path
// would.
func (b *Backend) Block(block firewall.Block) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.blocked = append(b.blocked, block)
}

// call counts a call of op and returns its fault, if any: before is the
// error to return at once, after the error to return once the operation
// took effect.
func (b *Backend) call(ctx context.Context, op Op) (before, after error) {
	b.calls[op]++
	if err := ctx.Err(); err != nil {
		return err, nil
	}
	f := b.faults[op]
	if f == nil {
		return nil, nil
	}
	if f.Times > 0 {
		if f.Times--; f.Times == 0 {
			delete(b.faults, op)
		}
	}
	if f.Halfway {
		return nil, f.Err
	}
	return f.Err, nil
}

// Available fails only by a fault.
func (b *Backend) Available(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	before, after := b.call(ctx, OpAvailable)
	return errors.Join(before, after)
}

// Render is the ruleset as JSON (format "json").
func (b *Backend) Render(rs ruleset.Ruleset) ([]firewall.Listing, error) {
	if err := rs.Validate(); err != nil {
		return nil, err
	}
	text, err := json.MarshalIndent(rs, "", "  ")
	if err != nil {
		return nil, err
	}
	return []firewall.Listing{{Format: "json", Text: string(text) + "\n"}}, nil
}

// Apply installs rs unless the kernel holds exactly rs already.
func (b *Backend) Apply(ctx context.Context, rs ruleset.Ruleset) (firewall.Result, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	before, after := b.call(ctx, OpApply)
	if before != nil {
		return firewall.Result{}, before
	}
	if err := rs.Validate(); err != nil {
		return firewall.Result{}, err
	}
	res := counts(rs)
	if res.Drift = b.drift(rs); len(res.Drift) > 0 {
		b.install(rs)
		res.Changed = true
	}
	return res, after
}

// Check is the drift of the kernel from rs.
func (b *Backend) Check(ctx context.Context, rs ruleset.Ruleset) ([]firewall.Drift, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if before, _ := b.call(ctx, OpCheck); before != nil {
		return nil, before
	}
	if err := rs.Validate(); err != nil {
		return nil, err
	}
	return b.drift(rs), nil
}

// Remove deletes everything installed, blocks and counters included.
func (b *Backend) Remove(ctx context.Context) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	before, after := b.call(ctx, OpRemove)
	if before != nil {
		return false, before
	}
	had := b.installed != nil
	if had {
		b.gen++
	}
	b.installed, b.foreign, b.blocked = nil, nil, nil
	clear(b.counters)
	return had, after
}

// Refresh brings the installed sets that follow the consensus to rs's
// contents.
func (b *Backend) Refresh(ctx context.Context, rs ruleset.Ruleset) (added, removed int, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	before, after := b.call(ctx, OpRefresh)
	if before != nil {
		return 0, 0, before
	}
	if b.installed == nil {
		return 0, 0, errors.New("fake: nothing installed: run relayfw apply first")
	}
	have := b.links(rs)
	for _, ls := range rs.LinkSets() {
		if _, ok := have[ls.Name]; !ok {
			return 0, 0, fmt.Errorf("set %s is missing or of another type: run relayfw apply", ls.Name)
		}
	}
	for _, ls := range rs.LinkSets() {
		m, e := ruleset.DiffRegions(ls.Want, have[ls.Name])
		added, removed = added+m, removed+e
		setLinks(b.installed, ls, ls.Want)
	}
	if added+removed > 0 {
		b.gen++
	}
	return added, removed, after
}

// Installed reports whether a ruleset is installed.
func (b *Backend) Installed(ctx context.Context) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if before, _ := b.call(ctx, OpInstalled); before != nil {
		return false, before
	}
	return b.installed != nil, nil
}

// RelayLinks reads the installed contents of rs's sets that follow the
// consensus.
func (b *Backend) RelayLinks(ctx context.Context, rs ruleset.Ruleset) (map[string][]ruleset.Region, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if before, _ := b.call(ctx, OpRelayLinks); before != nil {
		return nil, before
	}
	return b.links(rs), nil
}

// links is RelayLinks.
func (b *Backend) links(rs ruleset.Ruleset) map[string][]ruleset.Region {
	out, _ := firewall.ReadLinks(rs, func(ls ruleset.LinkSet) ([]ruleset.Region, bool, error) {
		if b.installed == nil {
			return nil, false, nil
		}
		for _, have := range b.installed.LinkSets() {
			if have.Name == ls.Name && have.Trusted == ls.Trusted {
				return have.Want, true, nil
			}
		}
		return nil, false, nil
	})
	return out
}

// Blocked lists the blocked sources while inbound protection is
// installed.
func (b *Backend) Blocked(ctx context.Context, _ ruleset.Inbound) ([]firewall.Block, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if before, _ := b.call(ctx, OpBlocked); before != nil {
		return nil, before
	}
	if b.installed == nil || b.installed.Inbound == nil {
		return nil, nil
	}
	return slices.Clone(b.blocked), nil
}

// Unblock lifts the block of source.
func (b *Backend) Unblock(ctx context.Context, source netip.Prefix) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if before, _ := b.call(ctx, OpUnblock); before != nil {
		return false, before
	}
	n := len(b.blocked)
	b.blocked = slices.DeleteFunc(b.blocked, func(bl firewall.Block) bool { return bl.Source == source })
	return len(b.blocked) < n, nil
}

// Counters are the installed rules' counters by name (zero for a rule
// without traffic); empty when nothing is installed.
func (b *Backend) Counters(ctx context.Context) (map[string]firewall.Counter, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if before, _ := b.call(ctx, OpCounters); before != nil {
		return nil, before
	}
	out := map[string]firewall.Counter{}
	if b.installed == nil {
		return out, nil
	}
	for _, r := range b.installed.Outbound {
		out[r.Name] = b.counters[r.Name]
	}
	maps.Copy(out, b.counters) // the inbound protection's rules too
	return out, nil
}

// setLinks puts regions in rs's set ls.
func setLinks(rs *ruleset.Ruleset, ls ruleset.LinkSet, regions []ruleset.Region) {
	if !ls.Trusted {
		rs.Sets = slices.Clone(rs.Sets)
		i := slices.IndexFunc(rs.Sets, func(s ruleset.Set) bool { return s.Name == ls.Name })
		rs.Sets[i].Elements = slices.Clone(regions)
		return
	}
	ranges := make([]ruleset.AddrRange, len(regions))
	for i, r := range regions {
		ranges[i] = ruleset.AddrRange{First: r.AddrFirst, Last: r.AddrLast}
	}
	in := rs.Inbound.WithTrustedRanges(ls.Family, ranges)
	rs.Inbound = &in
}

// clone is a copy of rs that shares nothing a fake changes.
func clone(rs ruleset.Ruleset) ruleset.Ruleset {
	out := rs
	out.Sets = slices.Clone(rs.Sets)
	for i := range out.Sets {
		out.Sets[i].Elements = slices.Clone(rs.Sets[i].Elements)
	}
	if rs.Inbound != nil {
		in := *rs.Inbound
		in.Trusted = slices.Clone(in.Trusted)
		out.Inbound = &in
	}
	return out
}

// counts is what Apply's result counts for rs.
func counts(rs ruleset.Ruleset) firewall.Result {
	res := firewall.Result{Rules: len(rs.Outbound), Sets: len(rs.Sets)}
	for _, s := range rs.Sets {
		res.Elements += len(s.Elements)
	}
	return res
}

// Numbered is a Backend whose "kernel" numbers its ruleset generations
// (firewall.Generations), as nftables does.
type Numbered struct{ *Backend }

var _ firewall.Generations = Numbered{}

// Generation is the number of changes so far.
func (n Numbered) Generation(ctx context.Context) (uint32, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.gen, ctx.Err()
}

// Counts is what Apply's result counts for rs.
func (n Numbered) Counts(rs ruleset.Ruleset) (firewall.Result, error) { return counts(rs), nil }
