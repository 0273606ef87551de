package integration

import (
	"encoding/json"
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
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel() // mostly waiting for confirm windows
			testConfirmOrRollback(t, b)
		})
	}
}

func testConfirmOrRollback(t *testing.T, b backend) {
	ns := newIsolatedNS(t, "rfwconf")
	env := b.env(t)
	relayfwIn := b.runnerIn(env)
	// --wait: a rollback in progress holds the lock for a moment.
	flagsA := append(relayInputs(t, b.flag, "../examples/torrc"), "--wait", "10s")
	flagsB := append(relayInputs(t, b.flag, bigPolicyTorrc(50)), "--wait", "10s")
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
	if code != 0 || !strings.Contains(out, "waiting for relayfw confirm until") {
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
	session.Env = env
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
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel() // mostly waiting for confirm windows
			testConfirmOnTerminal(t, b)
		})
	}
}

func testConfirmOnTerminal(t *testing.T, b backend) {
	ns := newIsolatedNS(t, "rfwtty")
	env := b.env(t)
	relayfwIn := b.runnerIn(env)
	flagsA := append(relayInputs(t, b.flag, "../examples/torrc"), "--wait", "10s")
	flagsB := append(relayInputs(t, b.flag, bigPolicyTorrc(30)), "--wait", "10s")
	if code, _, _ := relayfwIn(t, ns, append(flagsA, "apply")...); code != 0 {
		t.Fatal("apply A")
	}
	onTerminal := func(input string, delay time.Duration) (int, string) {
		line := relayfwBin + " " + strings.Join(append(flagsB, "apply", "--confirm", "3s"), " ")
		cmd := exec.Command("ip", "netns", "exec", ns, "script", "-qec", line, "/dev/null")
		cmd.Env = env
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
	// Silence: the summary, then the prompt; at the deadline it says what it
	// rolled back to and exits 1.
	code, out := onTerminal("", 0)
	applied, prompt, rolled := strings.Index(out, "applied:"), strings.Index(out, "Press Enter"), strings.Index(out, "rolled back to the firewall applied at")
	if code != 1 || applied < 0 || prompt < applied || rolled < prompt {
		t.Fatalf("no Enter: exit %d (want 1), want the summary, the prompt, then the rollback:\n%s", code, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !inSync(flagsA) {
		if time.Now().After(deadline) {
			t.Fatal("no Enter, yet no rollback")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestConfirmWindow: while an apply --confirm waits, every other change is
// refused with exit 75 naming the deadline and the ways out; status shows
// the window; relayfw rollback restores the previous firewall at once;
// --wait waits for the window to end. On every backend.
func TestConfirmWindow(t *testing.T) {
	requireRoot(t)
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel() // mostly waiting for confirm windows
			tn := newTestNet(t)
			run := b.runner(t, tn)
			flagsA := relayInputs(t, b.flag, "../examples/torrc")
			flagsB := relayInputs(t, b.flag, bigPolicyTorrc(20))
			inSync := func(flags []string) bool {
				code, _, _ := run(append(flags, "check")...)
				return code == 0
			}
			mustApply(t, run, flagsA)
			if code, out, errOut := run(append(flagsB, "apply", "--confirm", "60s")...); code != 0 || !strings.Contains(out, "applied:") {
				t.Fatalf("apply --confirm: %d %q %q", code, out, errOut)
			}
			for _, op := range [][]string{
				append(append([]string{}, flagsA...), "apply"),
				append(append([]string{}, flagsA...), "refresh"),
				append(append([]string{}, flagsA...), "remove"),
			} {
				code, out, errOut := run(op...)
				if code != 75 || !strings.Contains(errOut, "pending until "+time.Now().UTC().Format("2006-")) ||
					!strings.Contains(errOut, "relayfw confirm") || !strings.Contains(errOut, "relayfw rollback") {
					t.Errorf("%s inside the window: exit %d (want 75) %q %q", op[len(op)-1], code, out, errOut)
				}
			}
			if !inSync(flagsB) {
				t.Fatal("a refused change changed the firewall")
			}
			code, out, _ := run(append(flagsB, "status")...)
			if code != 0 || !strings.Contains(out, "pending:    apply --confirm until") || !strings.Contains(out, "rolls back to the firewall applied at") {
				t.Errorf("status inside the window: %d\n%s", code, out)
			}
			var st struct {
				Pending *struct {
					Deadline time.Time `json:"deadline"`
					Restores string    `json:"restores"`
				} `json:"pending"`
			}
			if _, out, _ := run(append(flagsB, "status", "--format", "json")...); json.Unmarshal([]byte(out), &st) != nil || st.Pending == nil || time.Until(st.Pending.Deadline) < 30*time.Second {
				t.Errorf("status --format json inside the window: %s", out)
			}
			if code, out, errOut := run(append(flagsA, "rollback")...); code != 0 || !strings.HasPrefix(out, "rolled back to the firewall applied at") {
				t.Fatalf("rollback: %d %q %q", code, out, errOut)
			}
			if !inSync(flagsA) {
				t.Fatal("rollback did not restore A")
			}
			if code, _, errOut := run(append(flagsA, "rollback")...); code != 1 || !strings.Contains(errOut, "no apply is waiting") {
				t.Errorf("rollback with nothing pending: %d %q", code, errOut)
			}
			// --wait waits the window out; the watcher rolls B back, so the
			// waiting apply installs nothing and exits 5.
			if code, _, errOut := run(append(flagsB, "apply", "--confirm", "2s")...); code != 0 {
				t.Fatalf("apply --confirm: %d %q", code, errOut)
			}
			start := time.Now()
			if code, out, errOut := run(append(flagsB, "apply", "--wait", "20s")...); code != 5 || !strings.Contains(errOut, "was rolled back at") || errorLines(errOut) != 1 {
				t.Fatalf("apply --wait during a window that rolls back: exit %d (want 5 and one line) %q %q", code, out, errOut)
			}
			if waited := time.Since(start); waited < time.Second {
				t.Errorf("apply --wait did not wait for the window (%v)", waited)
			}
			if !inSync(flagsA) {
				t.Error("the waiting apply installed the rolled-back firewall")
			}
			// A window that is confirmed: the waiting apply goes ahead.
			if code, _, errOut := run(append(flagsB, "apply", "--confirm", "20s")...); code != 0 {
				t.Fatalf("apply --confirm: %d %q", code, errOut)
			}
			confirmed := make(chan struct{})
			confirmEnv := b.env(t)
			go func() {
				defer close(confirmed)
				time.Sleep(time.Second)
				c := exec.Command("ip", append([]string{"netns", "exec", tn.relay, relayfwBin}, append(flagsB, "confirm")...)...)
				c.Env = confirmEnv
				_ = c.Run()
			}()
			defer func() { <-confirmed }()
			start = time.Now()
			if code, out, errOut := run(append(flagsA, "apply", "--wait", "20s")...); code != 0 {
				t.Fatalf("apply --wait during a window that is confirmed: %d %q %q", code, out, errOut)
			}
			if waited := time.Since(start); waited < 500*time.Millisecond {
				t.Errorf("apply --wait did not wait for the window (%v)", waited)
			}
			if !inSync(flagsA) {
				t.Error("A is not installed after apply --wait")
			}
		})
	}
}
