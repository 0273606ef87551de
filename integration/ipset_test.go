package integration

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestIpsets: the iptables backend's ipsets on the hosts' troubles.
func TestIpsets(t *testing.T) {
	requireRoot(t)
	requireCommand(t, "ipset")
	for _, b := range backends {
		if b.mode == "" {
			continue // nftables has no ipsets
		}
		t.Run(b.name, func(t *testing.T) {
			t.Run("Busy", func(t *testing.T) { testIpsetBusy(t, b) })
			t.Run("LeftoverTemporarySet", func(t *testing.T) { testIpsetLeftover(t, b) })
		})
	}
}

// testIpsetBusy: while another process dumps one of relayfw's ipsets (an
// ipset save whose reader stalls, as relayfw status or a metrics scrape
// does for a moment), the kernel refuses to destroy or swap that set.
// An apply that drops the set (a new policy) and a remove wait for the
// dump to end and succeed, instead of failing half done: a rollback
// watcher failing this way leaves the new firewall in place.
func testIpsetBusy(t *testing.T, b backend) {
	ns := newIsolatedNS(t, "rfwbusy")
	env := b.env(t)
	relayfwIn := b.runnerIn(env)
	// largest is the relayfw ipset with the most entries, and their number.
	largest := func() (string, int) {
		count := map[string]int{}
		for _, l := range strings.Split(ipsetIn(t, ns, "save"), "\n") {
			if f := strings.Fields(l); len(f) > 2 && f[0] == "add" && strings.HasPrefix(f[1], "relayfw-") {
				count[f[1]]++
			}
		}
		name, n := "", 0
		for s, c := range count {
			if c > n {
				name, n = s, c
			}
		}
		return name, n
	}
	// stall dumps the set into a pipe nobody reads for a while: ipset
	// blocks mid-dump, and the kernel holds the set busy until it ends.
	// It returns a channel closed when the dump has ended.
	stall := func(set string) <-chan struct{} {
		t.Helper()
		reader := exec.Command("ip", "netns", "exec", ns, "sh", "-c", "ipset save "+set+" | { sleep 2; cat >/dev/null; }")
		if err := reader.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = reader.Wait(); close(done) }()
		t.Cleanup(func() { <-done })
		time.Sleep(500 * time.Millisecond) // ipset has filled the pipe
		return done
	}
	stillRunning := func(done <-chan struct{}) bool {
		select {
		case <-done:
			return false
		default:
			return true
		}
	}

	// 8,000 rejected hosts: a class set whose dump is far larger than a
	// pipe holds (64 KiB).
	flagsA := relayInputs(t, b.flag, bigPolicyTorrc(8000))
	flagsB := relayInputs(t, b.flag, bigPolicyTorrc(8001))
	if code, out, errOut := relayfwIn(t, ns, append(flagsA, "apply")...); code != 0 {
		t.Fatalf("apply A: exit %d: %s%s", code, out, errOut)
	}
	setA, n := largest()
	if n < 4000 {
		t.Fatalf("the largest relayfw ipset, %s, has %d entries; want a dump larger than a pipe", setA, n)
	}

	// B's class set has another name: the apply destroys A's.
	reader := stall(setA)
	if !stillRunning(reader) {
		t.Fatal("the stalled ipset save ended before the apply")
	}
	if code, out, errOut := relayfwIn(t, ns, append(flagsB, "apply")...); code != 0 {
		t.Fatalf("apply B while %s is being dumped: exit %d: %s%s", setA, code, out, errOut)
	}
	if code, out, errOut := relayfwIn(t, ns, append(flagsB, "check")...); code != 0 {
		t.Fatalf("check after apply B: exit %d: %s%s", code, out, errOut)
	}
	if strings.Contains(ipsetIn(t, ns, "list", "-n"), setA) {
		t.Errorf("A's set %s is still there after apply B", setA)
	}

	setB, _ := largest()
	reader = stall(setB)
	if !stillRunning(reader) {
		t.Fatal("the stalled ipset save ended before the remove")
	}
	if code, out, errOut := relayfwIn(t, ns, append(flagsB, "remove")...); code != 0 {
		t.Fatalf("remove while %s is being dumped: exit %d: %s%s", setB, code, out, errOut)
	}
	if left := strings.TrimSpace(ipsetIn(t, ns, "list", "-n")); strings.Contains(left, "relayfw-") {
		t.Errorf("ipsets left after remove:\n%s", left)
	}
}

// testIpsetLeftover: an apply that replaces a set fills a temporary
// "-new" set and swaps it in. One left by an interrupted apply, with other
// parameters than the set needs now, is replaced, not a reason for every
// later apply to fail.
func testIpsetLeftover(t *testing.T, b backend) {
	ns := newIsolatedNS(t, "rfwtmp")
	relayfwIn := b.runnerIn(b.env(t))
	flags := relayInputs(t, b.flag, "../examples/torrc")
	if code, out, errOut := relayfwIn(t, ns, append(flags, "apply")...); code != 0 {
		t.Fatalf("apply: exit %d: %s%s", code, out, errOut)
	}
	// The relay-link set is replaced when the consensus changes;
	// its leftover temporary set is of another type.
	ipsetIn(t, ns, "create", "relayfw-relays4-new", "hash:net", "family", "inet", "maxelem", "16")
	grown := testConsensus + "r another AAAAAAAAAAAAAAAAAAAAAAAAAAB 2026-11-25 11:00:00 198.51.100.77 9001 0\ns Fast Running Valid\n"
	flags[len(flags)-1] = writeTestConfig(t, t.TempDir(), grown)
	if code, out, errOut := relayfwIn(t, ns, append(flags, "apply")...); code != 0 {
		t.Fatalf("apply with a leftover relayfw-relays4-new: exit %d: %s%s", code, out, errOut)
	}
	if code, out, errOut := relayfwIn(t, ns, append(flags, "check")...); code != 0 {
		t.Fatalf("check: exit %d: %s%s", code, out, errOut)
	}
	if !strings.Contains(ipsetIn(t, ns, "save", "relayfw-relays4"), "198.51.100.77,tcp:9001") {
		t.Error("the relay-link set lacks the new relay")
	}
	if names := ipsetIn(t, ns, "list", "-n"); strings.Contains(names, "-new") {
		t.Errorf("a temporary set is left:\n%s", names)
	}
}

// ipsetIn runs ipset in the namespace and returns what it printed.
func ipsetIn(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns, "ipset"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ipset %v: %v\n%s", args, err, out)
	}
	return string(out)
}
