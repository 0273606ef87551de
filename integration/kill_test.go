package integration

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKillDuringApply kills relayfw at random moments of an apply that
// replaces ruleset A with a larger ruleset B: once the next relayfw has
// run (check, which undoes an apply that died midway), the kernel holds A
// or B — in both families alike, for iptables — never a mix, and check
// says which. On every backend, in parallel.
func TestKillDuringApply(t *testing.T) {
	requireRoot(t)
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ns := newIsolatedNS(t, "rfwkill")
			env := b.env(t)
			flagsA := relayInputs(t, b.flag, "../examples/torrc")
			flagsB := relayInputs(t, b.flag, bigPolicyTorrc(1500))
			outcome := func(trial int) string {
				t.Helper()
				// The first check recovers; then both must agree.
				codeA, outA, errA := relayfwEnv(t, ns, env, append(flagsA, "check")...)
				codeB, outB, errB := relayfwEnv(t, ns, env, append(flagsB, "check")...)
				switch {
				case codeA == 0 && codeB == 1:
					return "old"
				case codeB == 0 && codeA == 1:
					return "new"
				}
				t.Fatalf("trial %d: neither A nor B in every family: check A %d\n%s%s\ncheck B %d\n%s%s", trial, codeA, outA, errA, codeB, outB, errB)
				return ""
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
			trials := killTrials(t, 20)
			for trial := 0; trial < trials; trial++ {
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
				outcomes[outcome(trial)]++
			}
			t.Logf("%d kills within %v: %v", trials, span, outcomes)
		})
	}
}

// TestKillBetweenFamilies: with iptables, an apply killed after the IPv4
// commit and before the IPv6 one (an ip6tables-restore that is slow to
// start, first on PATH) leaves both families old once the next relayfw
// has run.
func TestKillBetweenFamilies(t *testing.T) {
	requireRoot(t)
	for _, b := range backends {
		if b.mode == "" {
			continue
		}
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ns := newIsolatedNS(t, "rfwkill6")
			dir := t.TempDir()
			started := filepath.Join(dir, "started")
			// The wrapper says it started, waits, and goes on only while
			// relayfw lives: killed meanwhile, IPv6 never commits.
			script := fmt.Sprintf("#!/bin/sh\ntouch %s\nsleep 1\nkill -0 $PPID 2>/dev/null || exit 1\nexec %s \"$@\"\n",
				started, requireCommand(t, "ip6tables-"+b.mode+"-restore"))
			if err := os.WriteFile(filepath.Join(dir, "ip6tables-restore"), []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			env := append(os.Environ(), "PATH="+dir+":"+iptablesPath(t, b.mode))
			flagsA := relayInputs(t, b.flag, "../examples/torrc")
			flagsB := relayInputs(t, b.flag, bigPolicyTorrc(300))
			for trial := 0; trial < 5; trial++ {
				if code, out, errOut := relayfwEnv(t, ns, env, append(flagsA, "apply")...); code != 0 {
					t.Fatalf("apply A: %d %s %s", code, out, errOut)
				}
				_ = os.Remove(started)
				v4, v6 := familyRules(t, ns, env, "iptables-save"), familyRules(t, ns, env, "ip6tables-save")
				cmd := exec.Command("ip", append([]string{"netns", "exec", ns, relayfwBin}, append(flagsB, "apply")...)...)
				cmd.Env = env
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				pollFor(t, "the IPv6 restore", func() bool { _, err := os.Stat(started); return err == nil }, 30*time.Second)
				_ = cmd.Process.Signal(syscall.SIGKILL)
				_ = cmd.Wait()
				if familyRules(t, ns, env, "iptables-save") == v4 || familyRules(t, ns, env, "ip6tables-save") != v6 {
					t.Fatalf("trial %d: the kill did not land between the families (IPv4 new, IPv6 old)", trial)
				}
				code, out, errOut := relayfwEnv(t, ns, env, append(flagsA, "check")...)
				if code != 0 || !strings.Contains(errOut, "an apply was interrupted") {
					t.Fatalf("trial %d: check after a kill between the families: %d (want both families old)\n%s%s", trial, code, out, errOut)
				}
				if code, out, _ := relayfwEnv(t, ns, env, append(flagsB, "check")...); code != 1 || !strings.Contains(out, "  iptables:") || !strings.Contains(out, "  ip6tables:") {
					t.Fatalf("trial %d: B in one family:\n%s", trial, out)
				}
			}
		})
	}
}

// familyRules is one family's rules as its save tool lists them, without
// counters and comments.
func familyRules(t *testing.T, ns string, env []string, tool string) string {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, tool)
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	var b strings.Builder
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(l, "#") {
			b.WriteString(countersRE.ReplaceAllString(l, "[0:0]") + "\n")
		}
	}
	return b.String()
}
