package host

import "testing"

func TestInboundRuleCause(t *testing.T) {
	for name, want := range map[string]string{
		"inbound": "", "inbound-trusted4": "", "inbound-limited6": "",
		"inbound-blocked4": "blocked", "inbound-minute6": "minute", "inbound-hour4": "hour", "inbound-conns6": "conns",
	} {
		got, ok := inboundRuleCause(name)
		if !ok || got != want {
			t.Errorf("%s: %q %v, want %q", name, got, ok, want)
		}
	}
	for _, name := range []string{"exit4", "extra-inbound4", "relay-links6", "reject"} {
		if _, ok := inboundRuleCause(name); ok {
			t.Errorf("%s taken for an inbound rule", name)
		}
	}
}
