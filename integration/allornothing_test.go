package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestIptablesAllOrNothing: an apply whose ip6tables-restore is refused
// after iptables-restore has committed (a wrapper first on PATH refuses
// when told to) exits 1, says what it restored, and leaves both families
// and the ipsets exactly as they were: over a policy (with hand-made
// lines, blocked sources and another tool's rules), on a fresh host (then
// nothing of relayfw's is left) and under --confirm. The same when the
// last step, the destroy of the old policy's sets, is refused half done. nftables needs no
// such test: its apply is one transaction of the one table inet relayfw,
// both families at once.
func TestIptablesAllOrNothing(t *testing.T) {
	requireRoot(t)
	requireCommand(t, "ipset")
	// A: a policy with class sets in both families, inbound protection.
	torrcA := largePolicyTorrc(300, 12)
	configA := "[inbound]\nenabled = true\n"
	// B: another policy, other relay links, inbound blocks of 12h (its
	// block sets are swapped for sets with another timeout) and other
	// trusted sources; or no inbound protection (its chains deleted).
	torrcB := bigPolicyTorrc(40)
	consensusB := inboundConsensus + "r another CCCCCCCCCCCCCCCCCCCCCCCCCCC 2026-11-25 11:00:00 198.51.100.77 9001 0\ns Fast Running Valid\n"
	configB := "[inbound]\nenabled = true\nblock = \"12h\"\ntrusted = [\"192.0.2.99\"]\n"
	ipv6Refused := []string{"ip6tables-restore: refused by the test", "; restored the IPv4 rules and the ipsets as they were before this apply"}
	for _, b := range backends {
		if b.mode == "" {
			continue
		}
		t.Run(b.name, func(t *testing.T) {
			t.Run("OverAPolicy", func(t *testing.T) {
				testStepRefused(t, b, refuseIPv6, ipv6Refused, torrcA, configA, torrcB, consensusB, configB)
			})
			t.Run("OverAPolicyNewOneWithoutInbound", func(t *testing.T) {
				testStepRefused(t, b, refuseIPv6, ipv6Refused, torrcA, configA, torrcB, consensusB, "")
			})
			t.Run("FreshHost", func(t *testing.T) {
				testStepRefused(t, b, refuseIPv6, ipv6Refused, "", "", torrcB, consensusB, configB)
			})
			t.Run("UnderConfirm", func(t *testing.T) {
				testStepRefused(t, b, refuseIPv6, ipv6Refused, torrcA, configA, torrcB, consensusB, configB, "--confirm", "30s")
			})
			// Both families committed, one old class set destroyed: the
			// rules and that set come back.
			t.Run("OldSetsDestroyRefused", func(t *testing.T) {
				testStepRefused(t, b, refuseDestroy, []string{"destroying the ipsets the new rules do not use: ", "refused by the test",
					"; restored the IPv4 and IPv6 rules and the ipsets as they were before this apply"},
					torrcA, configA, torrcB, consensusB, configB)
			})
			t.Run("RemoveRefused", func(t *testing.T) { testRemoveRefused(t, b, torrcA, configA) })
		})
	}
}

// Steps of an iptables apply the wrappers of refusingTools refuse.
const (
	refuseIPv6    = "ip6tables-restore" // IPv6's transaction, after IPv4's
	refuseDestroy = "ipset-destroy"     // the destroy of the old sets, after both families
)

// refusingTools puts wrappers of ip6tables-restore and ipset first on PATH
// that run the real ones unless RELAYFW_TEST_REFUSE names their step:
// then ip6tables-restore refuses (reads its input, prints a message, exits
// 1), and ipset, the first time it is given a script of destroys of class
// sets, destroys the first of them and refuses the next line, as ipset
// restore does. It returns the environment that runs the real tools and
// the one that refuses step.
func refusingTools(t *testing.T, b backend, step string) (env, refusing []string) {
	t.Helper()
	dir := t.TempDir()
	wrappers := map[string]string{
		"ip6tables-restore": fmt.Sprintf(`#!/bin/sh
if [ "$RELAYFW_TEST_REFUSE" = %s ]; then
	cat >/dev/null
	echo "ip6tables-restore: refused by the test" >&2
	exit 1
fi
exec %s "$@"
`, refuseIPv6, requireCommand(t, "ip6tables-"+b.mode+"-restore")),
		"ipset": fmt.Sprintf(`#!/bin/sh
real=%s
if [ "$RELAYFW_TEST_REFUSE" = %s ] && [ "$1" = restore ] && [ ! -e %s/refused ]; then
	script=$(cat)
	case "$script" in
	"destroy relayfw-exit"*)
		touch %s/refused
		printf '%%s\n' "$script" | head -n 1 | $real restore -exist || exit 1
		echo "ipset v7.17: Error in line 2: refused by the test" >&2
		exit 1;;
	esac
	printf '%%s\n' "$script" | exec $real "$@"
fi
exec $real "$@"
`, requireCommand(t, "ipset"), refuseDestroy, dir, dir),
	}
	for name, script := range wrappers {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	env = append(b.env(t), "PATH="+dir+":"+iptablesPath(t, b.mode))
	return env, append(slices.Clone(env), "RELAYFW_TEST_REFUSE="+step)
}

var (
	ipsetKernelParams = regexp.MustCompile(` (hashsize \d+|initval 0x[0-9a-f]+)`)
	ipsetTimeLeft     = regexp.MustCompile(` timeout (\d+)$`)
)

// firewallState is both families' filter tables (without counters) and
// relayfw's ipsets, sorted, without what the kernel chooses (hash size
// and seed); the time left of each timed entry is in left instead.
func firewallState(t *testing.T, b backend, ns string, env []string) (text string, left map[string]int) {
	t.Helper()
	left = map[string]int{}
	var sets []string
	for _, l := range strings.Split(ipsetIn(t, ns, "save"), "\n") {
		if f := strings.Fields(l); len(f) < 2 || !strings.HasPrefix(f[1], "relayfw-") {
			continue
		}
		l = ipsetKernelParams.ReplaceAllString(l, "")
		if m := ipsetTimeLeft.FindStringSubmatch(l); m != nil && strings.HasPrefix(l, "add ") {
			l = strings.TrimSuffix(l, m[0])
			left[l], _ = strconv.Atoi(m[1])
			l += " timeout T"
		}
		sets = append(sets, l)
	}
	slices.Sort(sets)
	return b.snapshot(t, ns, env) + strings.Join(sets, "\n") + "\n", left
}

// testStepRefused installs A (none when torrcA is ""), adds what an admin
// and the kernel add (a hand-made line in RELAYFW-OUTPUT, blocked
// sources), then applies B with args while step is refused: exit 1, the
// message says what failed and what was restored (want), and everything
// is as before, check with A's inputs in sync once the hand-made line is
// gone. Then B applies with the real tools: the refusal was the only
// trouble.
func testStepRefused(t *testing.T, b backend, step string, want []string, torrcA, configA, torrcB, consensusB, configB string, args ...string) {
	ns := newIsolatedNS(t, "rfwaon")
	env, refusing := refusingTools(t, b, step)
	run := b.runnerIn(env)
	b.foreignSetup(t, ns, env)
	flagsB := relayInputs(t, b.flag, torrcB)
	flagsB[len(flagsB)-1] = writeTestConfig(t, t.TempDir(), consensusB, configB)

	var flagsA []string
	const hand = "-A RELAYFW-OUTPUT -d 192.0.2.77/32 -j ACCEPT"
	if torrcA != "" {
		flagsA = relayInputs(t, b.flag, torrcA)
		flagsA[len(flagsA)-1] = writeTestConfig(t, t.TempDir(), inboundConsensus, configA)
		if code, out, errOut := run(t, ns, append(flagsA, "apply")...); code != 0 {
			t.Fatalf("apply A: exit %d: %s%s", code, out, errOut)
		}
		shell(t, ns, env, "", append([]string{"iptables"}, strings.Fields(hand)...)...)
		ipsetIn(t, ns, "add", "relayfw-inbound_block4", "203.0.113.50")
		ipsetIn(t, ns, "add", "relayfw-inbound_block6", "2001:db8:5::1")
	}
	before, leftBefore := firewallState(t, b, ns, env)

	code, out, errOut := relayfwEnv(t, ns, refusing, append(flagsB, append([]string{"apply"}, args...)...)...)
	t.Logf("apply B, %s refused: exit %d: %s%s", step, code, out, errOut)
	if code != 1 {
		t.Errorf("apply B with %s refused: exit %d, want 1", step, code)
	}
	for _, w := range want {
		if !strings.Contains(errOut, w) {
			t.Errorf("apply B's message does not say %q", w)
		}
	}
	after, leftAfter := firewallState(t, b, ns, env)
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("the firewall after the refused apply is not the one before (-before +after):\n%s", diff)
	}
	if torrcA == "" {
		if strings.Contains(after, "RELAYFW") || strings.Contains(after, "relayfw-") {
			t.Errorf("something of relayfw's is left on a host that had nothing:\n%s", after)
		}
	}
	// A blocked source stays blocked for the time it had left.
	for entry, was := range leftBefore {
		if now, ok := leftAfter[entry]; !ok || now > was || now < was-60 {
			t.Errorf("%s: %d s left after the refused apply (present: %v), had %d s", entry, now, ok, was)
		}
	}
	if torrcA != "" {
		if len(leftBefore) != 2 {
			t.Errorf("blocked sources before: %v, want the two added", leftBefore)
		}
		shell(t, ns, env, "", append([]string{"iptables", "-D"}, strings.Fields(hand)[1:]...)...)
		if code, out, errOut := run(t, ns, append(flagsA, "check")...); code != 0 {
			t.Errorf("check with A's inputs after the refused apply: exit %d: %s%s", code, out, errOut)
		}
	}

	// The wrapper passes the real tool through: B applies.
	if code, out, errOut := run(t, ns, append(flagsB, "apply")...); code != 0 {
		t.Fatalf("apply B with the real ip6tables-restore: exit %d: %s%s", code, out, errOut)
	}
	if code, out, errOut := run(t, ns, append(flagsB, "check")...); code != 0 {
		t.Errorf("check B: exit %d: %s%s", code, out, errOut)
	}
}

// testRemoveRefused: a remove whose ip6tables-restore is refused after
// IPv4's rules were deleted puts them back: exit 1, the message says so,
// the firewall is as it was.
func testRemoveRefused(t *testing.T, b backend, torrc, config string) {
	ns := newIsolatedNS(t, "rfwaonrm")
	env, refusing := refusingTools(t, b, refuseIPv6)
	b.foreignSetup(t, ns, env)
	flags := relayInputs(t, b.flag, torrc)
	flags[len(flags)-1] = writeTestConfig(t, t.TempDir(), inboundConsensus, config)
	if code, out, errOut := relayfwEnv(t, ns, env, append(flags, "apply")...); code != 0 {
		t.Fatalf("apply: exit %d: %s%s", code, out, errOut)
	}
	before, _ := firewallState(t, b, ns, env)
	code, out, errOut := relayfwEnv(t, ns, refusing, append(flags, "remove")...)
	t.Logf("remove, ip6tables-restore refused: exit %d: %s%s", code, out, errOut)
	if code != 1 || !strings.Contains(errOut, "refused by the test; restored the IPv4 rules as they were before this remove") {
		t.Errorf("remove with ip6tables-restore refused: exit %d, want 1 and a message saying IPv4's rules were restored", code)
	}
	after, _ := firewallState(t, b, ns, env)
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("the firewall after the refused remove is not the one before (-before +after):\n%s", diff)
	}
	if code, out, errOut := relayfwEnv(t, ns, env, append(flags, "check")...); code != 0 {
		t.Errorf("check after the refused remove: exit %d: %s%s", code, out, errOut)
	}
}
