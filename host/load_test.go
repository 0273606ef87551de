package host

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/relayfw/relayfw/config"
)

// TestRulesetReadsNothing: Load reads the host once (a resolv.conf, the
// cached consensus, /proc/meminfo, allow.extra's host names); Ruleset and
// Host compute from what it read: when the host changes afterwards, they
// give the same answer, and no name is looked up again.
func TestRulesetReadsNothing(t *testing.T) {
	sys := testSystem(t)
	dns := &fakeDNS{answers: map[string][]netip.Addr{"smtp.example.test": {netip.MustParseAddr("192.0.2.25")}}}
	dns.install(sys)
	dir := t.TempDir()
	sys.ProcRoot = filepath.Join(dir, "proc")
	write := func(path, text string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	meminfo, resolv := filepath.Join(sys.ProcRoot, "meminfo"), filepath.Join(dir, "resolv.conf")
	data := filepath.Join(dir, "tor")
	write(meminfo, "MemTotal:       20000000 kB\n")
	write(resolv, "nameserver 192.0.2.53\n")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	writeConsensus(goodConsensus)(data)
	torrc := writeTorrc(t, "ORPort 9001\nExitRelay 1\nUser 101\nServerDNSResolvConfFile "+resolv+"\nExitPolicy accept *:80,reject *:*\n")
	off := false
	cfg := config.Config{DataDirectory: data, Inbound: config.Inbound{Enabled: true},
		Allow: config.Allow{Updates: &off, Extra: []config.Extra{{Name: "smarthost", To: []string{"smtp.example.test"}, Ports: []string{"587"}}}}}
	in, err := Load(context.Background(), Options{Torrcs: []string{torrc}, Config: cfg, System: sys})
	if err != nil {
		t.Fatal(err)
	}
	rs1, h1 := in.Ruleset()
	if !slices.Contains(h1.Resolvers, netip.MustParseAddr("192.0.2.53")) || !slices.Contains(h1.RelayLinks, netip.MustParseAddrPort("203.0.113.11:9001")) ||
		h1.Inbound == nil || h1.Inbound.SetSize != 1<<20 || len(h1.Extra) != 1 || len(h1.Extra[0].Dst) != 1 {
		t.Fatalf("what Load read: resolvers %v, links %v, inbound %+v, extra %+v", h1.Resolvers, h1.RelayLinks, h1.Inbound, h1.Extra)
	}
	lookups := len(dns.names)

	// The host changes under the inputs.
	write(meminfo, "MemTotal:       1000 kB\n")
	write(resolv, "nameserver 198.51.100.53\n")
	if err := os.RemoveAll(data); err != nil {
		t.Fatal(err)
	}
	dns.answers["smtp.example.test"] = []netip.Addr{netip.MustParseAddr("192.0.2.26")}

	rs2, h2 := in.Ruleset()
	same := cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}, netip.AddrPort{})
	if diff := cmp.Diff(rs1, rs2, same); diff != "" {
		t.Errorf("the second Ruleset read the host again (-first +second):\n%s", diff)
	}
	if diff := cmp.Diff(h1, h2, same); diff != "" {
		t.Errorf("the second Host read the host again (-first +second):\n%s", diff)
	}
	if len(dns.names) != lookups {
		t.Errorf("looked up again: %q", dns.names[lookups:])
	}
	if got := in.Consensus(); len(got) != 1 || got[0].State != ConsensusRead {
		t.Errorf("consensus %+v, want the one Load read", got)
	}
}
