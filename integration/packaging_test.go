package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSystemdUnits: systemd-analyze verify accepts the units (with the
// binary they start at this run's path).
func TestSystemdUnits(t *testing.T) {
	requireRoot(t)
	analyze := requireCommand(t, "systemd-analyze")
	dir := t.TempDir()
	units, err := filepath.Glob("../contrib/systemd/relayfw*")
	if err != nil || len(units) < 5 {
		t.Fatalf("units: %v %v", units, err)
	}
	var paths []string
	for _, u := range units {
		data, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(data), "/usr/local/sbin/relayfw", relayfwBin)
		p := filepath.Join(dir, filepath.Base(u))
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	out, err := exec.Command(analyze, append([]string{"verify"}, paths...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestVagrantfile: the Vagrantfile is valid Ruby, and what it copies exists.
func TestVagrantfile(t *testing.T) {
	requireRoot(t)
	ruby := requireCommand(t, "ruby")
	out, err := exec.Command(ruby, "-c", "../Vagrantfile").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Syntax OK") {
		t.Fatalf("ruby -c Vagrantfile: %v\n%s", err, out)
	}
	for _, f := range []string{"../examples/torrc", "../examples/relayfw.toml", "../contrib/systemd/relayfw.service"} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("the Vagrantfile copies %s: %v", f, err)
		}
	}
}
