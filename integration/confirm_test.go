package integration

import (
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestConfirmOrRollback: apply --confirm rolls back to the previous
// firewall at the deadline, even when the session that ran it is killed,
// unless relayfw confirm comes first.
func TestConfirmOrRollback(t *testing.T) {
	requireRoot(t)
	ns := newIsolatedNS(t, "rfwconf")
	// --wait: a rollback in progress holds the lock for a moment.
	flagsA := append(relayInputs(t, "nftables", "../examples/torrc"), "--wait", "10s")
	flagsB := append(relayInputs(t, "nftables", bigPolicyTorrc(50)), "--wait", "10s")
	inSync := func(flags []string) bool {
		code, _, _ := relayfwIn(t, ns, append(flags, "check")...)
		return code == 0
	}
	waitFor := func(what string, cond func() bool, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not happen within %v", what, within)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// First ever apply --confirm: rolling back removes the firewall.
	code, out, errOut := relayfwIn(t, ns, append(flagsB, "apply", "--confirm", "1s")...)
	if code != 0 || !strings.Contains(out, "waiting for `relayfw confirm`") {
		t.Fatalf("apply --confirm: %d %q %q", code, out, errOut)
	}
	waitFor("rollback to no firewall", func() bool {
		_, out, _ := relayfwIn(t, ns, append(flagsB, "check")...)
		return strings.Contains(out, "not installed")
	}, 10*time.Second)

	// A, then B with --confirm from a session that dies at once.
	if code, _, _ := relayfwIn(t, ns, append(flagsA, "apply")...); code != 0 {
		t.Fatal("apply A")
	}
	session := exec.Command("ip", append([]string{"netns", "exec", ns, relayfwBin}, append(flagsB, "apply", "--confirm", "2s")...)...)
	session.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if out, err := session.CombinedOutput(); err != nil {
		t.Fatalf("apply --confirm: %v %s", err, out)
	}
	_ = syscall.Kill(-session.Process.Pid, syscall.SIGKILL) // the SSH session's process group
	if !inSync(flagsB) {
		t.Fatal("B is not installed after apply --confirm")
	}
	waitFor("rollback to A", func() bool { return inSync(flagsA) }, 10*time.Second)

	// B with --confirm, confirmed in time: it stays.
	if code, out, errOut := relayfwIn(t, ns, append(flagsB, "apply", "--confirm", "2s")...); code != 0 {
		t.Fatalf("apply --confirm: %d %q %q", code, out, errOut)
	}
	if code, out, errOut := relayfwIn(t, ns, append(flagsB, "confirm")...); code != 0 || !strings.Contains(out, "confirmed") {
		t.Fatalf("confirm: %d %q %q", code, out, errOut)
	}
	time.Sleep(3 * time.Second)
	if !inSync(flagsB) {
		t.Fatal("a confirmed firewall was rolled back")
	}
	if code, _, errOut := relayfwIn(t, ns, append(flagsB, "confirm")...); code != 1 || !strings.Contains(errOut, "no apply is waiting") {
		t.Fatalf("confirm with nothing pending: %d %q", code, errOut)
	}
}

// TestConfirmOnTerminal: on a terminal, Enter keeps the new firewall and
// silence rolls it back.
func TestConfirmOnTerminal(t *testing.T) {
	requireRoot(t)
	requireCommand(t, "script") // gives relayfw a pseudo-terminal
	ns := newIsolatedNS(t, "rfwtty")
	flagsA := append(relayInputs(t, "nftables", "../examples/torrc"), "--wait", "10s")
	flagsB := append(relayInputs(t, "nftables", bigPolicyTorrc(30)), "--wait", "10s")
	if code, _, _ := relayfwIn(t, ns, append(flagsA, "apply")...); code != 0 {
		t.Fatal("apply A")
	}
	onTerminal := func(input string, delay time.Duration) (int, string) {
		line := relayfwBin + " " + strings.Join(append(flagsB, "apply", "--confirm", "3s"), " ")
		cmd := exec.Command("ip", "netns", "exec", ns, "script", "-qec", line, "/dev/null")
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			time.Sleep(delay)
			_, _ = stdin.Write([]byte(input))
		}()
		code, out, errOut := runCmd(t, cmd)
		return code, out + errOut
	}
	inSync := func(flags []string) bool {
		code, _, _ := relayfwIn(t, ns, append(flags, "check")...)
		return code == 0
	}
	if code, out := onTerminal("\n", time.Second); code != 0 || !strings.Contains(out, "confirmed: the new firewall stays") {
		t.Fatalf("Enter: exit %d\n%s", code, out)
	}
	time.Sleep(4 * time.Second)
	if !inSync(flagsB) {
		t.Fatal("confirmed with Enter, yet rolled back")
	}
	if code, _, _ := relayfwIn(t, ns, append(flagsA, "apply")...); code != 0 {
		t.Fatal("apply A")
	}
	if code, out := onTerminal("", 0); code != 0 || !strings.Contains(out, "Press Enter") {
		t.Fatalf("no Enter: exit %d\n%s", code, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !inSync(flagsA) {
		if time.Now().After(deadline) {
			t.Fatal("no Enter, yet no rollback")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
