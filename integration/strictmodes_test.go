package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestStrictModes: a torrc its group can write is refused (exit 65, one
// line with the file, owner, mode and fix) by policy, print and apply on
// every backend, and the kernel is left as it was; with strict_modes =
// false in relayfw.toml it is used, with a warning. relayfw.toml its group
// can write is refused even when it says strict_modes = false.
func TestStrictModes(t *testing.T) {
	requireRoot(t)
	ns := newIsolatedNS(t, "rfwstrict")
	dir := reachableTempDir(t, "relayfw-strict-")
	cfg := writeTestConfig(t, dir, testConsensus)
	lax := filepath.Join(dir, "lax.toml")
	data, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lax, append([]byte("strict_modes = false\n"), data...), 0o644); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.torrc")
	torrc := filepath.Join(dir, "torrc")
	for _, p := range []string{good, torrc} {
		if err := os.WriteFile(p, []byte("ORPort 9001\nExitRelay 1\nExitPolicy accept *:80,accept *:443,reject *:*\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(torrc, 0o664); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := relayfwIn(t, ns, "--backend", "nftables", "--torrc", good, "--config", cfg, "apply"); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	before := kernelSnapshot(t, ns)
	want := "relayfw: torrc " + torrc + ": it is writable by its group (owner root, mode 0664), so a user other than root could change the firewall; fix: chmod go-w " + torrc + "\n"
	for _, b := range backends {
		env := b.env(t)
		for _, cmd := range []string{"policy", "print", "apply"} {
			code, stdout, stderr := relayfwEnv(t, ns, env, "--backend", b.flag, "--torrc", torrc, "--config", cfg, cmd)
			if code != 65 || stdout != "" || stderr != want {
				t.Errorf("%s %s: exit %d, stdout %q, stderr %q; want 65 and %q", b.name, cmd, code, stdout, stderr, want)
			}
			if after := kernelSnapshot(t, ns); after != before {
				t.Fatalf("%s %s: the kernel changed:\n%s", b.name, cmd, cmp.Diff(before, after))
			}
		}
	}
	// strict_modes = false: used, with a warning.
	for _, cmd := range []string{"policy", "print", "apply"} {
		code, stdout, stderr := relayfwIn(t, ns, "--backend", "nftables", "--torrc", torrc, "--config", lax, cmd)
		if code != 0 || stdout == "" || !strings.Contains(stderr, "level=WARN") || !strings.Contains(stderr, "used anyway (strict_modes = false)") {
			t.Errorf("strict_modes = false, %s: exit %d, stderr %q", cmd, code, stderr)
		}
	}
	// relayfw.toml is always checked.
	if err := os.Chmod(lax, 0o664); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := relayfwIn(t, ns, "--backend", "nftables", "--torrc", good, "--config", lax, "apply"); code != 65 || !strings.Contains(stderr, "config "+lax+": it is writable by its group") {
		t.Errorf("group-writable relayfw.toml with strict_modes = false: exit %d, stderr %q", code, stderr)
	}
	// A torrc of another user, and a directory above that others can write.
	if err := os.Chmod(torrc, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("chown", "nobody", torrc).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v %s", err, out)
	}
	if code, _, stderr := relayfwIn(t, ns, "--torrc", torrc, "--config", cfg, "policy"); code != 65 || !strings.Contains(stderr, "it is owned by another user (owner nobody, mode 0644)") || !strings.Contains(stderr, "fix: chown root:root "+torrc+" && chmod go-w "+torrc) {
		t.Errorf("nobody's torrc: exit %d, stderr %q", code, stderr)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := relayfwIn(t, ns, "--torrc", good, "--config", cfg, "policy"); code != 65 || !strings.Contains(stderr, "its directory "+dir+" is writable by others (owner root, mode 0777)") {
		t.Errorf("a directory others can write: exit %d, stderr %q", code, stderr)
	}
}
