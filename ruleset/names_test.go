package ruleset

import (
	"slices"
	"testing"

	"github.com/relayfw/relayfw/exitpolicy"
)

func TestLinkSets(t *testing.T) {
	p := exitpolicy.ExitPolicy{}
	h := DefaultHost()
	for _, tc := range []struct {
		inbound bool
		want    []string
	}{
		{false, []string{"relays4", "relays6"}},
		{true, []string{"relays4", "relays6", "inbound_trust4", "inbound_trust6"}},
	} {
		h.Inbound = nil
		if tc.inbound {
			in := DefaultInbound()
			h.Inbound = &in
		}
		rs := Compile(p, h)
		var got []string
		for _, s := range rs.LinkSets() {
			got = append(got, s.Name)
			if !rs.IsLinkSet(s.Name) || s.Trusted != (s.Name[0] == 'i') {
				t.Errorf("set %s: IsLinkSet %v, Trusted %v", s.Name, rs.IsLinkSet(s.Name), s.Trusted)
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("inbound %v: %q, want %q", tc.inbound, got, tc.want)
		}
		for _, fam := range []Family{IPv4, IPv6} {
			if _, ok := rs.Set(RelayLinkSetName(fam)); !ok {
				t.Errorf("no set %s", RelayLinkSetName(fam))
			}
		}
	}
}
