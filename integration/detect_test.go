package integration

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/relayfw/relayfw/firewall/ipt"
)

// TestDetectIptables: ipt.Detect, which runs no command, against what the
// iptables commands see, in a fresh namespace per case, in either
// iptables mode; it creates no legacy table. Then an nftables apply,
// which looks for an iptables firewall only when Detect cannot rule one
// out, removes every relayfw iptables object (chains or a leftover
// ipset), keeps others' rules, and, like the status before it, creates
// no legacy table either.
func TestDetectIptables(t *testing.T) {
	requireRoot(t)
	requireCommand(t, "ipset")
	applyIptables := func(t *testing.T, run runFunc) {
		mustApply(t, run, relayInputs(t, "iptables", "../examples/torrc"))
	}
	tests := []struct {
		name  string
		mode  string // of the iptables commands: "legacy" or "nft"
		setup func(t *testing.T, ns string, env []string, run runFunc)
		want  ipt.Presence
	}{
		{"Nothing/legacy", "legacy", nil, ipt.Absent},
		{"Nothing/nft", "nft", nil, ipt.Absent},
		{"RelayfwFirewall/legacy", "legacy", func(t *testing.T, _ string, _ []string, run runFunc) { applyIptables(t, run) }, ipt.Present},
		{"RelayfwFirewall/nft", "nft", func(t *testing.T, _ string, _ []string, run runFunc) { applyIptables(t, run) }, ipt.Present},
		{"LeftoverIpset", "legacy", func(t *testing.T, ns string, _ []string, _ runFunc) {
			ipsetIn(t, ns, "create", "relayfw-policy4-0123abcd", "hash:net")
		}, ipt.Present},
		{"UnrelatedRules/legacy", "legacy", unrelatedRules, ipt.Absent},
		{"UnrelatedRules/nft", "nft", unrelatedRules, ipt.Absent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := newIsolatedNS(t, "rfwdetect")
			env := backend{mode: tt.mode}.env(t)
			run := backend{}.runnerIn(env)
			runNS := func(args ...string) (int, string, string) { t.Helper(); return run(t, ns, args...) }
			if tt.setup != nil {
				tt.setup(t, ns, env, runNS)
			}
			hadLegacy := legacyFilterTables(t, ns)
			truth := iptablesObjects(t, ns, env, tt.mode == "legacy" && hadLegacy == "")
			if truth != (tt.want == ipt.Present) {
				t.Fatalf("the iptables commands see relayfw's objects: %v; the case expects %v", truth, tt.want)
			}
			var got ipt.Presence
			err := inNS(ns, func() (err error) { got, err = ipt.Detect(context.Background()); return err })
			if got != tt.want || err != nil {
				t.Errorf("Detect = %v, %v; want %v", got, err, tt.want)
			}
			if now := legacyFilterTables(t, ns); now != hadLegacy {
				t.Errorf("legacy filter tables: %q before Detect, %q after", hadLegacy, now)
			}

			flags := relayInputs(t, "nftables", "../examples/torrc")
			_, out, _ := runNS(append(flags, "status")...)
			if also := strings.Contains(out, "relayfw objects in iptables too"); also != truth {
				t.Errorf("status with nftables: says iptables holds relayfw objects %v, want %v\n%s", also, truth, out)
			}
			mustApply(t, runNS, flags)
			// With nothing of relayfw's, no iptables command ran: not even
			// iptables-legacy-save, which would create the tables it reads.
			if now := legacyFilterTables(t, ns); tt.want == ipt.Absent && now != hadLegacy {
				t.Errorf("legacy filter tables: %q before status and apply, %q after", hadLegacy, now)
			}
			if n, i := installedIn(t, ns, env); !n || i {
				t.Errorf("after the nftables apply: nftables %v, iptables %v; want only nftables", n, i)
			}
			if strings.HasPrefix(tt.name, "UnrelatedRules") {
				for _, tool := range []string{"iptables", "ip6tables"} {
					if out := toolOutput(t, ns, env, tool+"-save", "-t", "filter"); !strings.Contains(out, "unrelated") {
						t.Errorf("after the nftables apply, %s lost the unrelated rule:\n%s", tool, out)
					}
				}
			}
		})
	}
}

// unrelatedRules are an admin's: a rule in each family's filter table,
// one with a comment naming relayfw's chain, and a user chain.
func unrelatedRules(t *testing.T, ns string, env []string, _ runFunc) {
	t.Helper()
	for _, tool := range []string{"iptables", "ip6tables"} {
		shell(t, ns, env, "", tool, "-A", "OUTPUT", "-p", "tcp", "--dport", "25", "-m", "comment", "--comment", "unrelated "+ipt.Chain, "-j", "ACCEPT")
		shell(t, ns, env, "", tool, "-N", "ADMIN-CHAIN")
	}
}

// iptablesObjects is installedIn's iptables answer; noLegacyTables
// (legacy commands, and the kernel lists no legacy filter table) leaves
// the chains out: a legacy command would create the table it reads.
func iptablesObjects(t *testing.T, ns string, env []string, noLegacyTables bool) bool {
	t.Helper()
	if !noLegacyTables {
		_, i := installedIn(t, ns, env)
		return i
	}
	return strings.Contains(ipsetIn(t, ns, "list", "-n"), "relayfw-")
}

// legacyFilterTables names the kernel's lists of legacy tables in ns
// that have a filter table ("" for none).
func legacyFilterTables(t *testing.T, ns string) string {
	t.Helper()
	var have string
	for _, file := range []string{"/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"} {
		out, err := exec.Command("ip", "netns", "exec", ns, "cat", file).Output()
		if err != nil {
			t.Fatalf("%s in %s: %v", file, ns, err)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if l == "filter" {
				have += file + " "
			}
		}
	}
	return have
}

// toolOutput runs a tool in ns with env and returns its stdout.
func toolOutput(t *testing.T, ns string, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v in %s: %v", args, ns, err)
	}
	return string(out)
}
