package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestSystemdUnits: systemd-analyze verify accepts the units (with the
// binary they start at this run's path).
func TestSystemdUnits(t *testing.T) {
	requireRoot(t)
	analyze := requireCommand(t, "systemd-analyze")
	dir := t.TempDir()
	units, err := filepath.Glob("../contrib/systemd/relayfw*")
	if err != nil || len(units) < 7 {
		t.Fatalf("units: %v %v", units, err)
	}
	var paths []string
	for _, u := range units {
		data, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(data), "/usr/local/sbin/relayfw", relayfwBin)
		name := filepath.Base(u)
		name = strings.Replace(name, "@.", "@example.", 1) // a template: verify an instance of it
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	// The drop-in relayfw writes for the path unit is verified with it,
	// for a torrc that includes files whose names hold a space, a
	// backslash and specifiers ("%n" would be the unit's name, "%z" is
	// none: systemd-analyze says so unless "%" is written "%%").
	cfg := filepath.Join(dir, "relayfw.toml")
	if err := os.WriteFile(cfg, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	inc := filepath.Join(dir, "torrc.d")
	if err := os.Mkdir(inc, 0o755); err != nil {
		t.Fatal(err)
	}
	names := []string{"10 exit ports", `20-back\slash`, "30-100%", "40-%n%z"}
	for _, name := range names {
		if err := os.WriteFile(filepath.Join(inc, name), []byte("ExitPolicy accept *:443\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	torrc := filepath.Join(dir, "torrc")
	if err := os.WriteFile(torrc, []byte("ORPort 9001\nExitRelay 1\n%include "+inc+"\nExitPolicy reject *:*\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runCmd(t, exec.Command(relayfwBin, "--torrc", torrc, "--config", cfg,
		"paths", "--update-path-unit", "--unit-dir", dir)); code != 0 {
		t.Fatalf("paths --update-path-unit: exit %d: %s", code, errOut)
	}
	dropIn, err := os.ReadFile(filepath.Join(dir, "relayfw-reapply.path.d", "50-inputs.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		want := "\nPathChanged=" + strings.ReplaceAll(filepath.Join(inc, name), "%", "%%") + "\n"
		if !strings.Contains(string(dropIn), want) {
			t.Errorf("the drop-in lacks %q:\n%s", want, dropIn)
		}
	}
	out, err := exec.Command(analyze, append([]string{"verify"}, paths...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s\n%s", err, out, dropIn)
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

// TestDebianPackage builds the .deb with nfpm, inspects it, installs it,
// runs the installed relayfw and purges it.
func TestDebianPackage(t *testing.T) {
	requireRoot(t)
	requireCommand(t, "dpkg-deb")
	out := t.TempDir()
	build := exec.Command("bash", "../packaging/build-deb")
	build.Env = append(os.Environ(), "OUT="+out, "VERSION=0.1.0~test")
	if text, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build-deb: %v\n%s", err, text)
	}
	debs, _ := filepath.Glob(filepath.Join(out, "relayfw_0.1.0~test_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("packages: %v", debs)
	}
	deb := debs[0]
	info, err := exec.Command("dpkg-deb", "--info", deb).CombinedOutput()
	if err != nil || !strings.Contains(string(info), "Package: relayfw") || !strings.Contains(string(info), "conffiles") {
		t.Fatalf("dpkg-deb --info: %v\n%s", err, info)
	}
	contents, err := exec.Command("dpkg-deb", "--contents", deb).CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"./usr/sbin/relayfw", "./etc/relayfw/relayfw.toml", "./lib/systemd/system/relayfw.service",
		"./lib/systemd/system/relayfw-refresh.timer", "./usr/share/man/man8/relayfw-apply.8.gz",
		"./usr/share/bash-completion/completions/relayfw", "./usr/share/zsh/vendor-completions/_relayfw"} {
		if !strings.Contains(string(contents), want) {
			t.Errorf("the package lacks %s", want)
		}
	}
	if _, err := os.Stat("/usr/sbin/relayfw"); err == nil {
		// Only a relayfw package may be replaced, never a hand-installed binary.
		if owner, _ := exec.Command("dpkg", "-S", "/usr/sbin/relayfw").Output(); !strings.HasPrefix(string(owner), "relayfw:") {
			t.Fatal("/usr/sbin/relayfw exists and is not from the relayfw package; not overwriting it")
		}
	}
	if text, err := exec.Command("dpkg", "-i", deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, text)
	}
	defer exec.Command("dpkg", "-P", "relayfw").Run()
	version, err := exec.Command("/usr/sbin/relayfw", "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(version), "0.1.0~test") {
		t.Fatalf("relayfw --version: %v %s", err, version)
	}
	unit, err := os.ReadFile("/lib/systemd/system/relayfw.service")
	if err != nil || !strings.Contains(string(unit), "ExecStart=/usr/sbin/relayfw apply") {
		t.Fatalf("installed unit: %v\n%s", err, unit)
	}
}

// TestExamplesParse: the Ansible playbook and the cloud-init file are
// valid YAML of the expected shape.
func TestExamplesParse(t *testing.T) {
	var play []map[string]any
	data, err := os.ReadFile("../examples/ansible/relayfw.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &play); err != nil || len(play) != 1 || play[0]["tasks"] == nil {
		t.Fatalf("playbook: %v %v", err, play)
	}
	data, err = os.ReadFile("../examples/cloud-init.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), "#cloud-config\n") {
		t.Fatal("cloud-init.yaml must start with #cloud-config")
	}
	var ci map[string]any
	if err := yaml.Unmarshal(data, &ci); err != nil || ci["runcmd"] == nil || ci["write_files"] == nil {
		t.Fatalf("cloud-init: %v %v", err, ci)
	}
}
