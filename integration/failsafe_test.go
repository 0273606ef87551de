package integration

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/relayfw/relayfw/internal/netnstest"
	"github.com/vishvananda/netns"
)

// TestFailsafe: a confirm window always ends as it should, whatever dies
// or waits — on every backend, in parallel. Each case starts from A (the
// example torrc) applied without a window; B is a larger policy.
func TestFailsafe(t *testing.T) {
	requireRoot(t)
	// Mostly waiting for deadlines: it runs beside TestPrivateTorNetwork.
	t.Parallel()
	requireCommand(t, "flock")
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			testFailsafe(t, b)
		})
	}
}

type failsafeEnv struct {
	t              *testing.T
	b              backend
	ns             string
	env            []string
	flagsA, flagsB []string
	before         string // the kernel with A
}

func (f *failsafeEnv) run(args ...string) (int, string, string) {
	f.t.Helper()
	return relayfwEnv(f.t, f.ns, f.env, args...)
}

func (f *failsafeEnv) inSync(flags []string) bool {
	f.t.Helper()
	code, _, _ := f.run(append(flags, "check")...)
	return code == 0
}

// confirmB applies B with a confirm window and returns its deadline, as
// relayfw recorded it (status --format json): the apply sets it after it
// read its inputs and the kernel, which takes a while on a loaded host.
func (f *failsafeEnv) confirmB(window time.Duration) time.Time {
	f.t.Helper()
	code, out, errOut := f.run(append(f.flagsB, "apply", "--confirm", window.String())...)
	if code != 0 || !strings.Contains(out, "applied:") {
		f.t.Fatalf("apply --confirm: %d %q %q", code, out, errOut)
	}
	code, out, errOut = f.run(append(f.flagsB, "status", "--format", "json")...)
	var st struct {
		Pending *struct {
			Deadline time.Time `json:"deadline"`
		} `json:"pending"`
	}
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || st.Pending == nil {
		f.t.Fatalf("status after apply --confirm: %d %v %q %q", code, err, out, errOut)
	}
	return st.Pending.Deadline
}

// killWatcher kills the namespace's one rollback watcher (kill -9).
func (f *failsafeEnv) killWatcher() int {
	f.t.Helper()
	pids := watcherPids(f.t, f.ns)
	if len(pids) != 1 {
		f.t.Fatalf("rollback watchers in %s: %v, want one", f.ns, pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		f.t.Fatal(err)
	}
	pollFor(f.t, "the watcher's death", func() bool { return len(watcherPids(f.t, f.ns)) == 0 }, 5*time.Second)
	return pids[0]
}

// isBefore says whether the kernel holds exactly what it held with A.
func (f *failsafeEnv) isBefore() bool { return stableSnapshot(f.t, f.ns) == f.before }

// notBefore fails the test, showing how the kernel differs from A's.
func (f *failsafeEnv) notBefore(what string) {
	f.t.Helper()
	f.t.Fatalf("%s: the kernel is not what it was before the apply:\n%s", what, cmp.Diff(f.before, stableSnapshot(f.t, f.ns)))
}

func testFailsafe(t *testing.T, b backend) {
	// --wait: a watcher's rollback holds the lock for a moment after the
	// kernel shows it.
	f := &failsafeEnv{t: t, b: b, ns: newIsolatedNS(t, "rfwsafe"), env: b.env(t),
		flagsA: append(relayInputs(t, b.flag, "../examples/torrc"), "--wait", "10s"),
		flagsB: append(relayInputs(t, b.flag, bigPolicyTorrc(50)), "--wait", "10s")}
	if code, out, errOut := f.run(append(f.flagsA, "apply")...); code != 0 {
		t.Fatalf("apply A: %d %q %q", code, out, errOut)
	}
	f.before = stableSnapshot(t, f.ns)
	cookie := netnsCookie(t, f.ns)

	t.Run("watcher killed, then the deadline: status rolls back", func(t *testing.T) {
		f.t = t
		deadline := f.confirmB(2 * time.Second)
		if f.isBefore() {
			t.Fatal("B is not installed")
		}
		f.killWatcher()
		time.Sleep(time.Until(deadline) + 300*time.Millisecond)
		if f.isBefore() {
			t.Fatal("rolled back with the watcher dead and no command run: the test proves nothing")
		}
		code, out, errOut := f.run(append(f.flagsA, "status")...)
		if code != 0 || !strings.Contains(errOut, "not confirmed by its deadline") || strings.Contains(out, "pending:") {
			t.Fatalf("status: %d\n%s\n%s", code, out, errOut)
		}
		if !f.isBefore() {
			f.notBefore("after status")
		}
	})

	t.Run("after the rollback the automatic applies keep the last good firewall", func(t *testing.T) {
		f.t = t
		code, out, errOut := f.run(append(f.flagsB, "check")...)
		if code != 1 || !strings.Contains(out, "rolled back at") {
			t.Errorf("check with the rolled-back torrc: %d %q %q", code, out, errOut)
		}
		code, out, errOut = f.run(append(f.flagsB, "apply", "--automatic")...)
		if code != 0 || !strings.Contains(out, "the last good firewall") || !strings.Contains(out, "relayfw apply --confirm 2m") || !f.isBefore() {
			t.Fatalf("apply --automatic after the rollback: %d %q %q; A kept: %v", code, out, errOut, f.isBefore())
		}
		// refresh (run whenever tor's user touches the consensus) keeps it
		// too: a relay that joined B's consensus is not installed.
		consensus := filepath.Join(filepath.Dir(f.flagsB[5]), "tordata", "cached-microdesc-consensus")
		if err := os.WriteFile(consensus, []byte(consensusWith("198.51.100.77:9001")), 0o644); err != nil {
			t.Fatal(err)
		}
		code, out, errOut = f.run(append(f.flagsB, "refresh")...)
		if code != 0 || !strings.Contains(out, "nothing changed") || !f.isBefore() {
			t.Fatalf("refresh after the rollback: %d %q %q; A kept: %v", code, out, errOut, f.isBefore())
		}
		// An operator's apply installs the torrc's; the automatic ones follow it again.
		if code, out, errOut := f.run(append(f.flagsB, "apply")...); code != 0 || !f.inSync(f.flagsB) {
			t.Fatalf("manual apply: %d %q %q", code, out, errOut)
		}
		if code, out, errOut := f.run(append(f.flagsB, "apply", "--automatic")...); code != 0 || strings.Contains(out, "last good") || !f.inSync(f.flagsB) {
			t.Fatalf("apply --automatic after the manual apply: %d %q %q", code, out, errOut)
		}
		if code, out, errOut := f.run(append(f.flagsA, "apply")...); code != 0 || !f.isBefore() {
			t.Fatalf("apply A: %d %q %q", code, out, errOut)
		}
	})

	t.Run("watcher killed before the deadline: restarted, rolls back at the deadline", func(t *testing.T) {
		f.t = t
		deadline := f.confirmB(4 * time.Second)
		old := f.killWatcher()
		code, out, errOut := f.run(append(f.flagsA, "status")...)
		if code != 0 || !strings.Contains(errOut, "restarted the rollback watcher") || !strings.Contains(out, "pending:") {
			t.Fatalf("status: %d\n%s\n%s", code, out, errOut)
		}
		if pids := watcherPids(t, f.ns); len(pids) != 1 || pids[0] == old {
			t.Fatalf("watchers after status: %v (the killed one was %d)", pids, old)
		}
		// No relayfw command from here on: the new watcher alone rolls back.
		pollFor(t, "the rollback", f.isBefore, time.Until(deadline)+5*time.Second)
		if early := time.Until(deadline); early > 0 {
			t.Fatalf("rolled back %v before the deadline", early)
		}
	})

	t.Run("a reader holding the lock past the deadline: rolled back once it lets go", func(t *testing.T) {
		f.t = t
		deadline := f.confirmB(2 * time.Second)
		hold := 2*time.Second + 3*time.Second
		reader := exec.Command("ip", "netns", "exec", f.ns, "flock", "--shared", fmt.Sprintf("/run/relayfw/lock-netns%d", cookie), "sleep", strconv.Itoa(int(hold.Seconds())))
		if err := reader.Start(); err != nil {
			t.Fatal(err)
		}
		released := time.Now().Add(hold)
		time.Sleep(time.Until(deadline) + time.Second)
		if f.isBefore() {
			t.Fatal("rolled back while a reader held the lock")
		}
		if err := reader.Wait(); err != nil {
			t.Fatalf("the reader: %v", err)
		}
		pollFor(t, "the rollback once the reader let go", f.isBefore, 5*time.Second)
		if time.Now().Before(released) {
			t.Fatal("rolled back before the reader let go")
		}
		log, _ := os.ReadFile(fmt.Sprintf("/run/relayfw/state-netns%d.rollback.log", cookie))
		if !strings.Contains(string(log), "waiting for the lock") || strings.Contains(string(log), "rollback failed") {
			t.Errorf("the watcher's log:\n%s", log)
		}
	})

	t.Run("confirm after the deadline is refused", func(t *testing.T) {
		f.t = t
		deadline := f.confirmB(2 * time.Second)
		f.killWatcher()
		time.Sleep(time.Until(deadline) + 300*time.Millisecond)
		code, out, errOut := f.run(append(f.flagsB, "confirm")...)
		if code != 1 || out != "" || !strings.Contains(errOut, "too late") || strings.Count(errOut, "\n") != 1 {
			t.Fatalf("confirm after the deadline: exit %d (want 1 and one line) %q %q", code, out, errOut)
		}
		if !f.isBefore() {
			t.Fatal("not rolled back")
		}
	})

	t.Run("apply --confirm with nothing to change opens no window", func(t *testing.T) {
		f.t = t
		code, out, errOut := f.run(append(f.flagsA, "apply", "--confirm", "30s")...)
		if code != 0 || !strings.Contains(out, "no confirm window opened") {
			t.Fatalf("apply --confirm in sync: %d %q %q", code, out, errOut)
		}
		if pids := watcherPids(t, f.ns); len(pids) != 0 {
			t.Fatalf("a watcher runs: %v", pids)
		}
		if code, out, errOut := f.run(append(f.flagsB, "apply")...); code != 0 {
			t.Fatalf("apply after it: %d %q %q", code, out, errOut)
		}
		if code, out, errOut := f.run(append(f.flagsA, "apply")...); code != 0 || !f.isBefore() {
			t.Fatalf("apply A: %d %q %q", code, out, errOut)
		}
	})

	t.Run("an apply reads its inputs under the lock", func(t *testing.T) {
		f.t = t
		// The apply waits for the lock while its torrc changes from B to
		// A: it installs A, what the torrc says when it got the lock.
		torrc := filepath.Join(t.TempDir(), "torrc")
		if err := os.WriteFile(torrc, []byte(bigPolicyTorrc(50)), 0o644); err != nil {
			t.Fatal(err)
		}
		holder := exec.Command("ip", "netns", "exec", f.ns, "flock", fmt.Sprintf("/run/relayfw/lock-netns%d", cookie), "sleep", "2")
		if err := holder.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond) // flock has it
		apply := exec.Command("ip", append([]string{"netns", "exec", f.ns, relayfwBin}, append(relayInputs(t, b.flag, torrc), "apply", "--wait", "20s")...)...)
		apply.Env = f.env
		var out strings.Builder
		apply.Stdout, apply.Stderr = &out, &out
		if err := apply.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond) // the apply waits for the lock
		example, err := os.ReadFile("../examples/torrc")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(torrc, example, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := holder.Wait(); err != nil {
			t.Fatal(err)
		}
		if err := apply.Wait(); err != nil {
			t.Fatalf("apply: %v\n%s", err, out.String())
		}
		if !f.inSync(f.flagsA) {
			t.Fatalf("the apply installed the torrc it read before the lock:\n%s", out.String())
		}
		if !f.isBefore() {
			f.notBefore("after the apply that waited")
		}
	})

	t.Run("kills at random moments of apply --confirm: the old rules after the deadline", func(t *testing.T) {
		f.t = t
		flagsL := append(relayInputs(t, b.flag, largePolicyTorrc(2000, 20)), "--wait", "10s")
		start := time.Now()
		if code, out, errOut := f.run(append(flagsL, "apply", "--confirm", "60s")...); code != 0 {
			t.Fatalf("apply --confirm: %d %q %q", code, out, errOut)
		}
		span := time.Since(start) * 6 / 5
		if code, out, errOut := f.run(append(flagsL, "rollback")...); code != 0 || !f.isBefore() {
			t.Fatalf("rollback: %d %q %q", code, out, errOut)
		}
		// Shorter than an apply on a loaded host at times: then the
		// deadline passes while the apply holds the lock.
		const window = time.Second
		r := rand.New(rand.NewPCG(testSeed(t, "RELAYFW_CONFIRM_KILL_SEED", 11), 11))
		outcomes := map[string]int{}
		trials := killTrials(t, 8)
		for trial := 0; trial < trials; trial++ {
			cmd := exec.Command("ip", append([]string{"netns", "exec", f.ns, relayfwBin}, append(flagsL, "apply", "--confirm", window.String())...)...)
			cmd.Env = f.env
			begun := time.Now()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Duration(r.Int64N(int64(span))))
			_ = cmd.Process.Signal(syscall.SIGKILL) // ip netns exec is relayfw by now
			killed := time.Now()
			_ = cmd.Wait()
			// Any window opened before the kill: its deadline is past.
			time.Sleep(time.Until(killed.Add(window + 200*time.Millisecond)))
			code, out, errOut := f.run(append(f.flagsA, "check")...)
			if code != 0 || !f.isBefore() {
				t.Fatalf("trial %d (killed after %v): not the old rules after the deadline: check %d\n%s%s\n%s", trial, killed.Sub(begun), code, out, errOut, cmp.Diff(f.before, stableSnapshot(t, f.ns)))
			}
			switch {
			case strings.Contains(errOut, "not confirmed"):
				outcomes["rolled back by check"]++
			default:
				outcomes["old already"]++
			}
		}
		t.Logf("%d kills within %v: %v", trials, span, outcomes)
	})
}

// stableSnapshot is kernelSnapshot without what changes when the same
// firewall is installed again: an ipset's hash seed and the order its
// members are listed in.
func stableSnapshot(t *testing.T, ns string) string {
	t.Helper()
	var keep, members []string
	for _, l := range strings.Split(kernelSnapshot(t, ns), "\n") {
		l = initvalRE.ReplaceAllString(l, "initval")
		if strings.HasPrefix(l, "add ") {
			members = append(members, l)
		} else {
			keep = append(keep, l)
		}
	}
	slices.Sort(members)
	return strings.Join(append(keep, members...), "\n")
}

var initvalRE = regexp.MustCompile(`initval 0x[0-9a-f]+`)

// pollFor polls cond until it holds, failing the test after within.
func pollFor(t *testing.T, what string, cond func() bool, within time.Duration) {
	t.Helper()
	end := time.Now().Add(within)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("%s did not happen within %v", what, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// watcherPids are the rollback watchers running in the namespace.
func watcherPids(t *testing.T, ns string) []int {
	t.Helper()
	var want syscall.Stat_t
	if err := syscall.Stat("/run/netns/"+ns, &want); err != nil {
		t.Fatal(err)
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var pids []int
	for _, d := range dirs {
		cmdline, err := os.ReadFile(d + "/cmdline")
		if err != nil || !strings.HasPrefix(string(cmdline), relayfwBin+"\x00rollback-watcher\x00") {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(d+"/ns/net", &st) != nil || st.Ino != want.Ino || st.Dev != want.Dev {
			continue
		}
		if stat, err := os.ReadFile(d + "/stat"); err == nil {
			if i := strings.LastIndexByte(string(stat), ')'); i > 0 && strings.HasPrefix(string(stat[i+1:]), " Z") {
				continue // killed, not reaped yet
			}
		}
		pid, _ := strconv.Atoi(filepath.Base(d))
		pids = append(pids, pid)
	}
	return pids
}

// netnsCookie is the namespace's cookie, which names relayfw's state files
// for it in /run/relayfw.
func netnsCookie(t *testing.T, ns string) uint64 {
	t.Helper()
	target, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatalf("the cookie of %s: %v", ns, err)
	}
	defer target.Close()
	cookie, err := netnstest.Cookie(target)
	if err != nil {
		t.Fatalf("the cookie of %s: %v", ns, err)
	}
	return cookie
}
