package nft

import (
	"context"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/ruleset"
)

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
				comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
				for _, e := range r.Exprs {
					if ctr, ok := e.(*expr.Counter); ok {
						firewall.Count(out, comment, ctr.Packets, ctr.Bytes)
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

// RelayLinks reads the installed elements of the ruleset's sets that
// follow the consensus: the relay links' (address . port) points and the
// trusted sources' intervals.
func (b *Backend) RelayLinks(ctx context.Context, rs ruleset.Ruleset) (map[string][]ruleset.Region, error) {
	out := map[string][]ruleset.Region{}
	_, err := b.withTable(ctx, func(c *nftables.Conn, t *nftables.Table) error {
		sets, err := c.GetSets(t)
		if err != nil {
			return classify(err)
		}
		out, err = firewall.ReadLinks(rs, func(ls ruleset.LinkSet) ([]ruleset.Region, bool, error) {
			for _, s := range sets {
				if s.Name == ls.Name && s.Interval == ls.Trusted && !s.IsMap {
					regions, err := readLinkSet(c, s)
					return regions, true, err
				}
			}
			return nil, false, nil
		})
		return err
	})
	return out, err
}

// readLinkSet reads a set that follows the consensus back as regions:
// (address . port) points, or address intervals.
func readLinkSet(c *nftables.Conn, s *nftables.Set) ([]ruleset.Region, error) {
	elems, err := c.GetSetElements(s)
	if err != nil {
		return nil, classify(err)
	}
	var regions []ruleset.Region
	if !s.Interval {
		for _, e := range elems {
			if len(e.Key) != 8 && len(e.Key) != 20 {
				continue // not an (address . port) key
			}
			a, _ := netip.AddrFromSlice(e.Key[:len(e.Key)-4])
			port := uint16(e.Key[len(e.Key)-4])<<8 | uint16(e.Key[len(e.Key)-3])
			regions = append(regions, ruleset.Region{AddrFirst: a, AddrLast: a, Ports: ruleset.PortRange{First: port, Last: port}})
		}
		return regions, nil
	}
	ivs, err := intervals(s, elems)
	if err != nil {
		return nil, err
	}
	for _, iv := range ivs {
		first, ok1 := netip.AddrFromSlice(iv.first)
		last, ok2 := netip.AddrFromSlice(iv.last)
		if ok1 && ok2 {
			regions = append(regions, ruleset.Region{AddrFirst: first, AddrLast: last})
		}
	}
	return regions, nil
}
