package nft

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"

	"github.com/relayfw/relayfw/firewall"
)

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
