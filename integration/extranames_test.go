package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestExtraHostNames: allow.extra's host names are resolved by apply and
// again by refresh. An apply before the network is up leaves the
// allowance out; refresh installs it once the name resolves, replaces the
// rules when the answer changes, and keeps them when the name stops
// resolving. Names resolve from a hosts file bound over /etc/hosts in a
// mount namespace of relayfw's own; DNS goes to 127.0.0.1, where nothing
// answers.
func TestExtraHostNames(t *testing.T) {
	requireRoot(t)
	requireCommand(t, "setpriv")
	requireCommand(t, "unshare")
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { testExtraHostNames(t, b) })
	}
}

func testExtraHostNames(t *testing.T, b backend) {
	tn := newTestNet(t)
	env := b.env(t)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := writeTestConfig(t, dir, testConsensus, `
[[allow.extra]]
name = "smarthost"
to = ["smarthost.relayfw.test"]
ports = ["587"]
user = "65534"
`)
	hosts, resolvConf := filepath.Join(dir, "hosts"), filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolvConf, []byte("nameserver 127.0.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The example torrc with a User: without one, every command warns
	// that root gets the relay links, and the steps want a quiet stderr.
	flags := []string{"--backend", b.flag, "--torrc", exampleTorrcAs(t, dir, "daemon"), "--config", cfg}
	// run runs relayfw with the name resolving to answer ("": not at all).
	run := func(answer string, args ...string) (int, string, string) {
		t.Helper()
		text := "127.0.0.1 localhost\n"
		if answer != "" {
			text += answer + " smarthost.relayfw.test\n"
		}
		if err := os.WriteFile(hosts, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		script := fmt.Sprintf("mount --bind %s /etc/hosts && mount --bind %s /etc/resolv.conf && exec %s %s",
			hosts, resolvConf, relayfwBin, strings.Join(append(flags, args...), " "))
		cmd := exec.Command("ip", "netns", "exec", tn.relay, "unshare", "-m", "--propagation", "private", "sh", "-c", script)
		cmd.Env = env
		return runCmd(t, cmd)
	}
	reaches := func(addr string) bool {
		script := fmt.Sprintf("exec 3<>/dev/tcp/%s/587", addr)
		return exec.Command("ip", "netns", "exec", tn.relay, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", "-c", script).Run() == nil
	}
	for _, step := range []struct {
		name, answer, cmd string
		stdout, stderr    string // what the output says
		reach             string // the address nobody reaches on 587 ("": none)
	}{
		{"apply before the network is up", "", "apply", "applied", "does not resolve", ""},
		{"refresh once the name resolves", "203.0.113.25", "refresh", "rules replaced", "", "203.0.113.25"},
		{"check", "203.0.113.25", "check", "in sync", "", "203.0.113.25"},
		{"refresh, same answer", "203.0.113.25", "refresh", "refreshed relay links", "", "203.0.113.25"},
		{"refresh, new answer", "203.0.113.26", "refresh", "rules replaced", "", "203.0.113.26"},
		{"refresh, no answer", "", "refresh", "refreshed relay links", "did not resolve; the installed allowances stay", "203.0.113.26"},
	} {
		code, stdout, stderr := run(step.answer, step.cmd)
		if code != 0 || !strings.Contains(stdout, step.stdout) || !strings.Contains(stderr, step.stderr) || (step.stderr == "" && stderr != "") {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want 0, %q, %q", step.name, code, stdout, stderr, step.stdout, step.stderr)
		}
		for _, addr := range []string{"203.0.113.25", "203.0.113.26"} {
			if got := reaches(addr); got != (addr == step.reach) {
				t.Errorf("%s: nobody to %s:587: connected=%v, want %v", step.name, addr, got, addr == step.reach)
			}
		}
	}
}
