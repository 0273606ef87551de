package nft

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/ruleset"
)

// drift compares the kernel's table with the plan.
func (p plan) drift(ctx context.Context, c *nftables.Conn) ([]firewall.Drift, error) {
	t, err := ownTable(c)
	if err != nil {
		return nil, err
	}
	if t == nil {
		return []firewall.Drift{{Object: "table inet " + TableName, Kind: firewall.NotInstalled}}, nil
	}
	chains, err := ownChains(c)
	if err != nil {
		return nil, err
	}
	want := p.wantedChains()
	drift, have := chainsDrift(chains, want)
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
			drift = append(drift, firewall.Drift{Object: "chain " + name, Kind: firewall.Missing})
			continue
		}
		if name != ChainName && name != InputChainName && ch.Hooknum != nil {
			drift = append(drift, firewall.Drift{Object: "chain " + name, Kind: firewall.Differs, Detail: "is a base chain"})
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

// wantedChains are the plan's rules by chain, as drift compares them.
func (p plan) wantedChains() map[string][]chainRule {
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
	return want
}

// chainsDrift finds the installed chains the plan does not have and the
// base chains of another type, hook, priority or policy; have are the
// installed chains the plan has, by name.
func chainsDrift(chains []*nftables.Chain, want map[string][]chainRule) (drift []firewall.Drift, have map[string]*nftables.Chain) {
	have = map[string]*nftables.Chain{}
	for _, ch := range chains {
		if _, ok := want[ch.Name]; !ok {
			drift = append(drift, firewall.Drift{Object: "chain " + ch.Name, Kind: firewall.Unexpected})
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
			drift = append(drift, firewall.Drift{Object: "chain " + base.name, Kind: firewall.Differs,
				Detail: fmt.Sprintf("is not \"type filter hook %s priority filter; policy accept\"", base.text)})
		}
	}
	return drift, have
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

// setDrift compares the table's sets and maps with the plan's.
func (p plan) setDrift(c *nftables.Conn, t *nftables.Table) ([]firewall.Drift, error) {
	var drift []firewall.Drift
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
			drift = append(drift, firewall.Drift{Object: "anonymous set " + s.Name, Kind: firewall.Unexpected})
			continue
		}
		have[s.Name] = s
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		s, ok := have[name]
		delete(have, name)
		d, err := p.oneSetDrift(c, name, want[name], s, ok)
		if err != nil {
			return nil, err
		}
		drift = append(drift, d...)
	}
	for _, n := range slices.Sorted(maps.Keys(have)) {
		drift = append(drift, firewall.Drift{Object: "set " + n, Kind: firewall.Unexpected})
	}
	return drift, nil
}

// oneSetDrift compares an installed set or map (s; ok false when there is
// none) with the plan's.
func (p plan) oneSetDrift(c *nftables.Conn, name string, w wantedSet, s *nftables.Set, ok bool) ([]firewall.Drift, error) {
	object := "set " + name
	if w.obj.IsMap {
		object = "map " + name
	}
	differs := func(how string) []firewall.Drift {
		return []firewall.Drift{{Object: object, Kind: firewall.Differs, Detail: how}}
	}
	switch {
	case !ok:
		return []firewall.Drift{{Object: object, Kind: firewall.Missing}}, nil
	// google/nftables reads a map's key and data types back garbled;
	// its elements, compared below, show the key all the same.
	case (!s.IsMap && s.KeyType.Bytes != w.obj.KeyType.Bytes) || s.Interval != w.obj.Interval || s.Concatenation != w.obj.Concatenation ||
		s.IsMap != w.obj.IsMap:
		return differs("has the wrong type or flags"), nil
	case s.Dynamic != w.obj.Dynamic || s.HasTimeout != w.obj.HasTimeout || s.Timeout != w.obj.Timeout || s.Size != w.obj.Size:
		return differs("has another size, timeout or dynamic flag"), nil
	case w.dynamic:
		return nil, nil // blocked sources and meters: the kernel's own
	}
	elems, err := c.GetSetElements(s)
	if err != nil {
		return nil, classify(err)
	}
	got, err := rawElements(w.obj, elems)
	if err != nil {
		return []firewall.Drift{{Object: object, Kind: firewall.Unreadable, Detail: err.Error()}}, nil
	}
	var drift []firewall.Drift
	missing, extra := firewall.SortedDiff(w.elements, got)
	if len(missing) > 0 {
		drift = append(drift, firewall.Drift{Object: object, Kind: firewall.ElementsMissing, N: len(missing),
			Detail: rawText(w.obj, missing[0]), Links: p.links[name]})
	}
	if len(extra) > 0 {
		drift = append(drift, firewall.Drift{Object: object, Kind: firewall.ElementsUnexpected, N: len(extra),
			Detail: rawText(w.obj, extra[0]), Links: p.links[name]})
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
// script (longest common subsequence) so one inserted rule is one drift.
func ruleDrift(ctx context.Context, chain string, wantRules []chainRule, installed []*nftables.Rule) ([]firewall.Drift, error) {
	want, err := ruleKeys(wantRules, func(r chainRule) ([]byte, []expr.Any) { return r.userData, r.exprs })
	if err != nil {
		return nil, err
	}
	have, err := ruleKeys(installed, func(r *nftables.Rule) ([]byte, []expr.Any) { return r.UserData, r.Exprs })
	if err != nil {
		return nil, err
	}
	var listed map[uint64]string // nft's own text of the chain's rules, read once
	return firewall.RuleDrift("chain "+chain, want, have, func(i int) string { return wantRules[i].text }, func(i int) firewall.Drift {
		r := installed[i]
		if listed == nil {
			listed = listChain(ctx, chain)
		}
		text, ok := listed[r.Handle]
		if !ok {
			text = exprSummary(r)
		}
		comment, mine := relayfwComment(r)
		how := "not generated by relayfw"
		if mine {
			how = fmt.Sprintf("comment %q (changed or out of place)", comment)
		}
		return firewall.Drift{Handle: r.Handle, Detail: text + " (" + how + ")", Foreign: !mine}
	}), nil
}

// ruleKeys are rules as Diff compares them: comment and normalized
// expressions.
func ruleKeys[R any](rs []R, parts func(R) (userData []byte, exprs []expr.Any)) ([]string, error) {
	out := make([]string, len(rs))
	for i, r := range rs {
		userData, exprs := parts(r)
		b, err := normalizedExprs(exprs)
		if err != nil {
			return nil, err
		}
		out[i] = string(userData) + "\x00" + string(b)
	}
	return out, nil
}

// exprSummary names a rule's expressions, when nft cannot show it.
func exprSummary(r *nftables.Rule) string {
	var kinds []string
	for _, e := range r.Exprs {
		kinds = append(kinds, strings.ToLower(strings.TrimPrefix(fmt.Sprintf("%T", e), "*expr.")))
	}
	return "expressions: " + strings.Join(kinds, ", ")
}

// relayfwComment is an installed rule's comment from relayfw's prefix on;
// false when it has none (relayfw did not generate the rule).
func relayfwComment(r *nftables.Rule) (string, bool) {
	i := strings.Index(string(r.UserData), ruleset.CommentPrefix)
	if i < 0 {
		return "", false
	}
	return strings.TrimRight(string(r.UserData[i:]), "\x00"), true
}
