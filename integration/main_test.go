// Package integration holds tests that need root: network namespaces, a
// real tor, real packets. They never touch the root namespace's firewall
// and send traffic only inside namespaces they create.
package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// relayfwBin is the relayfw binary built for this test run; dialerBin the
// helper that opens a connection as another user (internal/netnstest/dialer).
var relayfwBin, dialerBin string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "\n*** integration: NOT ROOT — every namespace test in this package is SKIPPED. Run as root (CI does). ***")
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "relayfw-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Other users run the dialer from here.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	relayfwBin, dialerBin = filepath.Join(dir, "relayfw"), filepath.Join(dir, "dialer")
	for bin, pkg := range map[string]string{relayfwBin: "../cmd/relayfw", dialerBin: "../internal/netnstest/dialer"} {
		build := exec.Command("go", "build", "-o", bin, pkg)
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", pkg, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	removeNamespaceState()
	os.Exit(code)
}

// removeNamespaceState deletes the files relayfw kept for the tests'
// network namespaces (named by namespace cookie, "-netns<N>"): the
// namespaces are gone. Only this process's namespaces count: the host's
// own files (plain names) and those of a test process running beside this
// one are left alone.
func removeNamespaceState() {
	ownCookies.Range(func(k, _ any) bool {
		removeNetnsFiles(k.(uint64))
		return true
	})
}

// requireRoot skips, loudly, when not root: namespace tests cannot run.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root for network namespaces (CI runs these as root)")
	}
}

// runCmd runs a command to its end and returns its exit code and output;
// a command that cannot run at all fails the test.
func runCmd(t *testing.T, cmd *exec.Cmd) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String(), errOut.String()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, out.String(), errOut.String()
}

// requireCommand fails (not skips) when a tool the suite needs is missing:
// as root these tests must run, and .ci/setup installs the tools.
func requireCommand(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: run `bash scripts/setup` (apt-get install %s) first", name, name)
	}
	return p
}

// testSeed is the seed of a test's random input. CI and a plain run use
// fixed, so the same commit gives the same answer twice; the environment
// variable env replays a given seed; RELAYFW_EXPLORE=1 draws a new one
// from the clock to look for new failures. The seed is logged either way,
// with the variable that replays it.
func testSeed(t *testing.T, env string, fixed uint64) uint64 {
	t.Helper()
	seed, how := fixed, "fixed"
	if v, err := strconv.ParseUint(os.Getenv(env), 10, 64); err == nil {
		seed, how = v, "from "+env
	} else if os.Getenv("RELAYFW_EXPLORE") == "1" {
		seed, how = uint64(time.Now().UnixNano()), "new (RELAYFW_EXPLORE=1)"
	}
	t.Logf("random input: %s=%d (%s)", env, seed, how)
	return seed
}

// reachableTempDir is a temporary directory other users can reach and
// read (mode 0755, not below a test's own 0700 directory), removed when
// the test ends: for inputs read by relayfw or tor running as another
// user.
func reachableTempDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// killTrials is how many times a kill test kills relayfw at a random
// moment: fixed in CI and a plain run (enough to cross every phase of the
// operation, with the fixed seed), RELAYFW_KILL_TRIALS=N for more (each
// trial costs about a second per backend). The number is logged.
func killTrials(t *testing.T, fixed int) int {
	t.Helper()
	n := fixed
	if v, err := strconv.Atoi(os.Getenv("RELAYFW_KILL_TRIALS")); err == nil && v > 0 {
		n = v
	}
	t.Logf("kill trials: %d (RELAYFW_KILL_TRIALS=N for more)", n)
	return n
}

// errorLines counts the error lines ("relayfw: …") of a command's stderr;
// warnings ("level=WARN …") are not errors.
func errorLines(stderr string) int {
	n := 0
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "relayfw: ") {
			n++
		}
	}
	return n
}
