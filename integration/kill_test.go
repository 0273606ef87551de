package integration

import (
	"math/rand/v2"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKillDuringApply kills relayfw at random moments of an apply that
// replaces ruleset A with a larger ruleset B: afterwards the kernel holds
// A or B — for iptables, A or B in each family, the unit iptables-restore
// commits — never a mix, and check says which.
func TestKillDuringApply(t *testing.T) {
	requireRoot(t)
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ns := newIsolatedNS(t, "rfwkill")
			env := b.env(t)
			flagsA := relayInputs(t, b.flag, "../examples/torrc")
			flagsB := relayInputs(t, b.flag, bigPolicyTorrc(1500))
			families := []string{""}
			if b.mode != "" {
				families = []string{"iptables:", "ip6tables:"}
			}
			// inSync reports, per family, whether check with these flags
			// finds no difference there.
			inSync := func(flags []string) []bool {
				code, out, errOut := relayfwEnv(t, ns, env, append(flags, "check")...)
				if code != 0 && code != 1 {
					t.Fatalf("check: exit %d %s %s", code, out, errOut)
				}
				res := make([]bool, len(families))
				for i, fam := range families {
					res[i] = code == 0 || (fam != "" && !strings.Contains(out, "  "+fam))
				}
				return res
			}
			// Kill anywhere in an apply's lifetime: measure one first.
			if code, _, _ := relayfwEnv(t, ns, env, append(flagsA, "apply")...); code != 0 {
				t.Fatal("apply A failed")
			}
			start := time.Now()
			if code, _, _ := relayfwEnv(t, ns, env, append(flagsB, "apply")...); code != 0 {
				t.Fatal("apply B failed")
			}
			span := time.Since(start) * 6 / 5
			r := rand.New(rand.NewPCG(testSeed(t, "RELAYFW_KILL_SEED", 7), 7))
			outcomes := map[string]int{}
			for trial := 0; trial < 100; trial++ {
				if code, out, errOut := relayfwEnv(t, ns, env, append(flagsA, "apply")...); code != 0 {
					t.Fatalf("apply A: %d %s %s", code, out, errOut)
				}
				cmd := exec.Command("ip", append([]string{"netns", "exec", ns, relayfwBin}, append(flagsB, "apply")...)...)
				cmd.Env = env
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				time.Sleep(time.Duration(r.Int64N(int64(span))))
				// ip netns exec replaces itself with relayfw: the pid is relayfw's.
				_ = cmd.Process.Signal(syscall.SIGKILL)
				_ = cmd.Wait()
				a, bb := inSync(flagsA), inSync(flagsB)
				for i := range families {
					switch {
					case a[i] && !bb[i]:
						outcomes["old"]++
					case bb[i] && !a[i]:
						outcomes["new"]++
					default:
						_, out, _ := relayfwEnv(t, ns, env, append(flagsA, "check")...)
						t.Fatalf("trial %d%s: neither A nor B (A in sync %v, B in sync %v):\n%s", trial, families[i], a[i], bb[i], out)
					}
				}
			}
			t.Logf("100 kills within %v: %v", span, outcomes)
		})
	}
}
