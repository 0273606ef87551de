package ruleset

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/relayfw/relayfw/exitpolicy"
)

func TestChanges(t *testing.T) {
	compile := func(policy string, links ...string) Ruleset {
		entries, _, err := exitpolicy.Parse(policy)
		if err != nil {
			t.Fatal(err)
		}
		h := DefaultHost()
		for _, l := range links {
			h.RelayLinks = append(h.RelayLinks, netip.MustParseAddrPort(l))
		}
		return Compile(exitpolicy.ExitPolicy{Entries: entries}, h)
	}
	prev := compile("reject 10.0.0.0/8:*,accept *:80,accept *:443,reject *:*", "192.0.2.1:9001", "192.0.2.2:9001")
	next := compile("reject 10.0.0.0/8:*,accept *:443,accept *:8080-8081,accept 203.0.113.0/24:25,reject *:*", "192.0.2.1:9001", "192.0.2.3:443", "192.0.2.4:443")
	next.Outbound = append(next.Outbound[:3], append([]Rule{{Name: "updates", Class: ClassHostAllowance, Comment: "package updates", Proto: "tcp", Action: Accept}}, next.Outbound[3:]...)...)
	got := Changes(prev, next)
	want := []string{
		"+ exit4: TCP 8080-8081 to 0.0.0.0-9.255.255.255, 11.0.0.0-203.0.112.255, 203.0.114.0-255.255.255.255",
		"- exit4: TCP 80 to 0.0.0.0-9.255.255.255, 11.0.0.0-203.0.112.255, 203.0.113.0/24, 203.0.114.0-255.255.255.255",
		"+ exit4: TCP 25,8080-8081 to 203.0.113.0/24",
		"+ exit6: TCP 8080-8081 to ::/0",
		"- exit6: TCP 80 to ::/0",
		"+ allowance updates: package updates",
		"relay links relays4: +2 -1",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Changes (-want +got):\n%s", diff)
	}
	if c := Changes(next, next); len(c) != 0 {
		t.Errorf("no change, yet %q", c)
	}
	// From nothing (a first apply): everything opens.
	if c := Changes(Ruleset{}, prev); len(c) == 0 || c[0] != "+ exit4: TCP 80,443 to 0.0.0.0-9.255.255.255, 11.0.0.0-255.255.255.255" {
		t.Errorf("first apply: %q", c)
	}
}
