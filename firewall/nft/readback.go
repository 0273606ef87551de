package nft

import (
	"context"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/rules"
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
