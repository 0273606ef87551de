package nft

import (
	"context"
	"fmt"

	"github.com/google/nftables"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/ruleset"
)

// Refresh brings the sets that follow the consensus up to date in one
// transaction: the relay links (it deletes the elements that left and
// adds the new ones) and the inbound protection's trusted sources,
// leaving the chains alone.
func (b *Backend) Refresh(ctx context.Context, rs ruleset.Ruleset) (added, removed int, err error) {
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
		if !p.links[want.name] {
			continue
		}
		jobs = append(jobs, job{want.name, false, want.rawElements(), func(s *nftables.Set, missing, extra []string) error {
			if err := delElements(c, s, keysAsElements(extra)); err != nil {
				return err
			}
			return addElements(c, s, keysAsElements(missing))
		}})
	}
	for _, want := range p.inboundSets() {
		if !p.links[want.name] {
			continue
		}
		jobs = append(jobs, job{want.name, true, want.rawElements(), func(s *nftables.Set, _, _ []string) error {
			c.FlushSet(s)
			return addElements(c, s, want.setElements())
		}})
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

// keysAsElements turns raw point-set keys back into elements.
func keysAsElements(keys []string) []nftables.SetElement {
	out := make([]nftables.SetElement, len(keys))
	for i, k := range keys {
		out[i] = nftables.SetElement{Key: []byte(k)}
	}
	return out
}
