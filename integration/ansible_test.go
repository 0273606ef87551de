package integration

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// debOnce is the .deb of this test run, built once by packaging/build-deb
// for the tests that install it.
var debOnce struct {
	sync.Once
	path string
	err  error
}

// debPackage builds relayfw's .deb (once a run) and returns its path.
func debPackage(t *testing.T) string {
	t.Helper()
	debOnce.Do(func() {
		out := filepath.Join(filepath.Dir(relayfwBin), "deb")
		build := exec.Command("bash", "../packaging/build-deb")
		build.Env = append(os.Environ(), "OUT="+out, "VERSION=0.1.0~test")
		if text, err := build.CombinedOutput(); err != nil {
			debOnce.err = fmt.Errorf("build-deb: %v\n%s", err, text)
			return
		}
		debs, _ := filepath.Glob(filepath.Join(out, "relayfw_0.1.0~test_*.deb"))
		if len(debs) != 1 {
			debOnce.err = fmt.Errorf("packages: %v", debs)
			return
		}
		debOnce.path = debs[0]
	})
	if debOnce.err != nil {
		t.Fatal(debOnce.err)
	}
	return debOnce.path
}

// hostNS is a mount namespace, inside a test network namespace, that
// looks like a fresh host to what runs in it: /usr, /etc and /var are
// overlays whose changes (dpkg's database, the installed package, users)
// stay in memory; /etc/relayfw, /etc/tor, tor's and relayfw's state
// directories and /run are empty tmpfs. A process holds it; commands
// enter it with nsenter.
type hostNS struct {
	pid string
}

func newHostNS(t *testing.T, netns string) *hostNS {
	t.Helper()
	requireCommand(t, "unshare")
	requireCommand(t, "nsenter")
	scratch := t.TempDir()
	script := `set -e
mount -t tmpfs relayfw-test "$1"
for d in usr etc var; do
	mkdir "$1/$d" "$1/$d.work"
	mount -t overlay relayfw-test -o "lowerdir=/$d,upperdir=$1/$d,workdir=$1/$d.work" "/$d"
done
for d in /etc/relayfw /etc/tor /var/lib/tor /var/lib/tor-instances /var/lib/relayfw /run; do
	mkdir -p "$d"
	mount -t tmpfs -o mode=0755 relayfw-test "$d"
done
echo ready
exec sleep infinity
`
	holder := exec.Command("ip", "netns", "exec", netns, "unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", scratch)
	stdout, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	holder.Stderr = &stderr
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	h := &hostNS{pid: strconv.Itoa(holder.Process.Pid)}
	t.Cleanup(func() {
		// An apply --confirm the test did not confirm leaves a watcher
		// in the namespace: roll back now, so that it ends.
		_ = h.command("relayfw", "rollback").Run()
		_ = holder.Process.Kill()
		_ = holder.Wait()
	})
	if line, err := readLineTimeout(bufio.NewReader(stdout), 30*time.Second); err != nil || line != "ready" {
		t.Fatalf("the host's mount namespace: %q %v %s", line, err, stderr.String())
	}
	return h
}

// command runs in the namespace (mount and network).
func (h *hostNS) command(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--target", h.pid, "--mount", "--net", "--", name}, args...)...)
}

// run runs a command in the namespace; it must succeed.
func (h *hostNS) run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := h.command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// probeAs connects from the namespace as a user (the dialer helper) and
// says whether the firewall let it.
func (h *hostNS) probeAs(t *testing.T, user string, to netip.AddrPort) outcome {
	t.Helper()
	cmd := h.command("setpriv", "--reuid", user, "--regid", "nogroup", "--clear-groups", "--", dialerBin, to.String())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	line, err := readLineTimeout(bufio.NewReader(stdout), 15*time.Second)
	switch {
	case line == "connected":
		return connected
	case strings.Contains(line, "connection refused"):
		return refused
	case err != nil || strings.Contains(line, "timeout"):
		return timedOut
	}
	t.Fatalf("dialer as %s to %s: %q", user, to, line)
	return ""
}

var recapLine = regexp.MustCompile(`(?m)^localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)`)

// TestAnsibleRole runs the relayfw role of the collection in
// ansible/relayfw, as operators do after nusenu.relayor, with
// ansible-playbook on the local host inside a network namespace and a
// mount namespace (hostNS): the .deb installed from a path, relayor's
// instance layout (instance names with dots, _tor-NAME users, an exit
// policy each) and nothing set per instance. The first run installs and
// applies; a second changes nothing; after a policy change, check mode
// shows the firewall's diff and leaves the kernel alone; a real run then
// changes it. The kernel's verdicts are probed as the instances' users.
// ansible-lint --offline checks the collection first.
func TestAnsibleRole(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	playbook := requireCommand(t, "ansible-playbook")
	galaxy := requireCommand(t, "ansible-galaxy")
	lint := requireCommand(t, "ansible-lint")
	requireCommand(t, "setpriv")
	start := time.Now()
	deb := debPackage(t)
	t.Logf("the .deb: %s (%v, shared with TestDebianPackage)", deb, time.Since(start).Round(100*time.Millisecond))

	home := t.TempDir()
	env := append(os.Environ(), "HOME="+home, "ANSIBLE_NOCOLOR=1", "ANSIBLE_FORCE_COLOR=0",
		"ANSIBLE_PYTHON_INTERPRETER=/usr/bin/python3", "ANSIBLE_RETRY_FILES_ENABLED=0", "ANSIBLE_LOCALHOST_WARNING=0", "ANSIBLE_PIPELINING=1")
	timed := func(what string, cmd *exec.Cmd) (int, string) {
		t.Helper()
		cmd.Env = env
		began := time.Now()
		code, out, errOut := runCmd(t, cmd)
		t.Logf("%s: exit %d in %v", what, code, time.Since(began).Round(100*time.Millisecond))
		return code, out + errOut
	}

	// The collection installs from the repository, and lints clean.
	collection, err := filepath.Abs("../ansible/relayfw")
	if err != nil {
		t.Fatal(err)
	}
	if code, out := timed("ansible-galaxy collection install", exec.Command(galaxy, "collection", "install", collection,
		"-p", filepath.Join(home, ".ansible", "collections"))); code != 0 {
		t.Fatalf("ansible-galaxy collection install: exit %d\n%s", code, out)
	}
	lintCmd := exec.Command(lint, "--offline", "--nocolor")
	lintCmd.Dir = collection
	if code, out := timed("ansible-lint --offline", lintCmd); code != 0 {
		t.Fatalf("ansible-lint --offline: exit %d\n%s", code, out)
	}

	tn := newTestNet(t)
	h := newHostNS(t, tn.relay)
	play, err := filepath.Abs("testdata/ansible/fleet.yml")
	if err != nil {
		t.Fatal(err)
	}
	ansible := func(what string, args ...string) (changed int, out string) {
		t.Helper()
		args = append([]string{"nsenter", "--target", h.pid, "--mount", "--net", "--", playbook, "-i", "localhost,",
			"-e", "relayfw_deb=" + deb, play}, args...)
		code, out := timed(what, exec.Command(args[0], args[1:]...))
		m := recapLine.FindStringSubmatch(out)
		if code != 0 || m == nil || m[3] != "0" || m[4] != "0" {
			t.Fatalf("%s: exit %d\n%s", what, code, out)
		}
		changed, _ = strconv.Atoi(m[2])
		return changed, out
	}
	const (
		user443  = "_tor-198.51.100.10_443"
		user9001 = "_tor-198.51.100.10_9001"
	)
	http := netip.MustParseAddrPort("203.0.113.5:80")
	https := netip.MustParseAddrPort("203.0.113.5:443")
	smtp := netip.MustParseAddrPort("203.0.113.5:25")
	verdicts := func(when string, want map[string]map[netip.AddrPort]outcome) {
		t.Helper()
		for user, ports := range want {
			for to, w := range ports {
				if got := h.probeAs(t, user, to); got != w {
					t.Errorf("%s: %s to %s: %s, want %s", when, user, to, got, w)
				}
			}
		}
	}

	// 1. A fresh host: the package, relayfw.toml, the firewall, confirmed.
	changed, out := ansible("first run")
	for _, want := range []string{"TASK [relayfw.relayfw.relayfw : Install the relayfw package]", "TASK [relayfw.relayfw.relayfw : Keep the new firewall]",
		"RUNNING HANDLER [relayfw.relayfw.relayfw : Re-apply relayfw]"} {
		if !strings.Contains(out, want) {
			t.Errorf("first run: no %q:\n%s", want, out)
		}
	}
	if changed == 0 {
		t.Errorf("first run: changed=0:\n%s", out)
	}
	if strings.Contains(out, "Enable and start relayfw's units") && !strings.Contains(out, "skipping") {
		t.Errorf("first run: units enabled without systemd:\n%s", out)
	}
	if v := h.run(t, "relayfw", "--version"); !strings.Contains(v, "0.1.0~test") {
		t.Errorf("relayfw --version in the namespace: %s", v)
	}
	if code, out, errOut := runCmd(t, h.command("relayfw", "check")); code != 0 {
		t.Errorf("check after the first run: exit %d %s%s", code, out, errOut)
	}
	// relayor's instance names hold dots; each is an instance of its own.
	ruleset := h.run(t, "relayfw", "print", "--format", "json")
	for _, name := range []string{"198.51.100.10_443", "198.51.100.10_9001"} {
		if !strings.Contains(ruleset, "tor instance "+name) {
			t.Errorf("the ruleset has no exit map for instance %s:\n%s", name, ruleset)
		}
	}
	verdicts("after the first run", map[string]map[netip.AddrPort]outcome{
		user443:  {http: connected, smtp: refused, https: refused},
		user9001: {https: connected, http: refused},
	})

	// 2. Idempotent.
	if changed, out := ansible("second run"); changed != 0 {
		t.Errorf("second run: changed=%d, want 0:\n%s", changed, out)
	}

	// 3. The torrc changes outside the play: check mode shows what the
	// firewall would become, and changes nothing.
	torrc := "/etc/tor/instances/198.51.100.10_443/torrc"
	before := h.run(t, "cat", torrc)
	edited := strings.Replace(before, "ExitPolicy accept *:80\n", "ExitPolicy accept *:80\nExitPolicy accept *:25\n", 1)
	if edited == before {
		t.Fatalf("the fixture's torrc has no ExitPolicy accept *:80 line:\n%s", before)
	}
	writeIn := func(path, text string) {
		t.Helper()
		cmd := h.command("sh", "-c", `cat >"$1"`, "sh", path)
		cmd.Stdin = strings.NewReader(text)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("writing %s: %v %s", path, err, out)
		}
	}
	writeIn(torrc, edited)
	kernelBefore := h.run(t, "nft", "--stateless", "list", "ruleset")
	changed, out = ansible("--check --diff", "--check", "--diff")
	kernelAfter := h.run(t, "nft", "--stateless", "list", "ruleset")
	if kernelAfter != kernelBefore {
		t.Errorf("check mode changed the kernel:\nbefore:\n%s\nafter:\n%s", kernelBefore, kernelAfter)
	}
	task := out[strings.Index(out, "TASK [relayfw.relayfw.relayfw : Apply the firewall"):]
	task = task[:max(strings.Index(task[1:], "\nTASK ")+1, 0)]
	if !strings.Contains(task, "dry run (nftables): apply would change:") || !strings.Contains(task, "TCP 25") || changed == 0 {
		t.Errorf("check mode shows no firewall diff (changed=%d):\n%s", changed, out)
	}
	t.Logf("check mode's diff:\n%s", task)
	verdicts("after check mode", map[string]map[netip.AddrPort]outcome{user443: {smtp: refused}})
	writeIn(torrc, before)

	// 4. The same change made by the play (relayor's torrc task): the
	// role applies it, and the handler relayor's task notified finds
	// nothing left to do.
	changed, out = ansible("policy change", "-e", `{"fixture_instances": [`+
		`{"ipv4": "198.51.100.10", "orport": 443, "exit_policy": ["accept *:80", "accept *:25", "reject *:*"]},`+
		`{"ipv4": "198.51.100.10", "orport": 9001, "exit_policy_line": "accept *:443,reject *:*"}]}`)
	if changed < 2 || !strings.Contains(out, "RUNNING HANDLER [relayfw.relayfw.relayfw : Re-apply relayfw]") {
		t.Errorf("policy change: changed=%d (want the torrc and the firewall), handler?\n%s", changed, out)
	}
	if got := h.run(t, "cat", torrc); got != edited {
		t.Errorf("the play wrote another torrc than the edit check mode saw:\n%s\nwant:\n%s", got, edited)
	}
	verdicts("after the policy change", map[string]map[netip.AddrPort]outcome{
		user443:  {http: connected, smtp: connected, https: refused},
		user9001: {https: connected, smtp: refused},
	})
	if code, out, errOut := runCmd(t, h.command("relayfw", "check")); code != 0 {
		t.Errorf("check after the policy change: exit %d %s%s", code, out, errOut)
	}
	t.Logf("TestAnsibleRole: %v in all", time.Since(start).Round(100*time.Millisecond))
}
