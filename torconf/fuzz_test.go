package torconf_test

import (
	"strings"
	"testing"

	"github.com/relayfw/relayfw/exitpolicy"
	"github.com/relayfw/relayfw/ruleset"
	"github.com/relayfw/relayfw/torconf"
)

func FuzzParseTorrc(f *testing.F) {
	for _, s := range []string{
		"ExitRelay 1\nExitPolicy accept *:80,\\\n  reject *:* # web only\n",
		"exitpolicy \"accept *:80\"\n/ExitPolicy\n+ExitPolicy reject *:*\n",
		"ORPort [2001:db8::1]:443\nAddress 203.0.113.1\nOutboundBindAddressExit 198.51.100.2\n",
		"ORPort 443\nORPort 192.0.2.1:443 NoAdvertise\nORPort [::ffff:192.0.2.2]:9001 IPv4Only\nDirPort 80 NoListen\n",
		"# comment\n\n  IPv6Exit 1\r\nExitRelay auto\n",
		"ExitPolicy \"bad\\q\"\n", "ExitRelay maybe\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		lines, err := torconf.Parse(nil, "torrc", text)
		if err != nil {
			return
		}
		nLines := strings.Count(text, "\n") + 1
		for _, l := range lines {
			if l.Line < 1 || l.Line > nLines {
				t.Fatalf("line %d out of range 1..%d", l.Line, nLines)
			}
		}
		opts, err := torconf.OptionsFromLines(lines)
		if err != nil {
			return
		}
		// Whatever the listener lines, the endpoints to protect are valid.
		if eps, _ := torconf.ListenEndpoints(opts.Ports, true); len(eps) > 0 {
			in := ruleset.DefaultInbound()
			in.Endpoints = eps
			if err := in.Validate(); err != nil {
				t.Fatalf("endpoints %v: %v", eps, err)
			}
		}
		eff, err := exitpolicy.FromOptions(opts, exitpolicy.HostFacts{})
		if err != nil {
			return
		}
		if len(eff.Policy.Lines()) == 0 {
			t.Fatal("empty policy listing")
		}
	})
}
