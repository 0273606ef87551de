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

// TestSystemdEnable: systemctl enable relayfw.service (offline, into a
// root of its own) makes tor's units require it — tor.service, and through
// tor@.service.requires/ Debian's tor@default.service and every
// tor@NAME.service — and nothing else: no drop-in of relayfw's adds
// Requires= to tor's units. The ordering drop-in relayfw ships for
// tor@.service passes systemd-analyze verify with the instances, and the
// instances see the requirement: with relayfw.service gone, verify says
// they need it.
func TestSystemdEnable(t *testing.T) {
	requireRoot(t)
	analyze := requireCommand(t, "systemd-analyze")
	systemctl := requireCommand(t, "systemctl")
	root := t.TempDir()
	lib := filepath.Join(root, "lib", "systemd", "system")
	etc := filepath.Join(root, "etc", "systemd", "system")
	for _, d := range []string{lib, etc} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	units, err := filepath.Glob("../contrib/systemd/relayfw*")
	if err != nil || len(units) == 0 {
		t.Fatalf("units: %v %v", units, err)
	}
	for _, u := range units {
		data, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(lib, filepath.Base(u)), strings.ReplaceAll(string(data), "/usr/local/sbin/relayfw", relayfwBin))
	}
	dropIn, err := os.ReadFile("../contrib/systemd/tor@.service.d/50-relayfw.conf")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(dropIn), "Requires=") || !strings.Contains(string(dropIn), "\nAfter=relayfw.service\n") {
		t.Fatalf("the tor@.service drop-in must order, not require:\n%s", dropIn)
	}
	if err := os.MkdirAll(filepath.Join(lib, "tor@.service.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(lib, "tor@.service.d", "50-relayfw.conf"), string(dropIn))
	// tor's units as Debian ships them, reduced to what matters here
	// (without default dependencies: the root has no sysinit.target).
	writeFile(t, filepath.Join(lib, "tor.service"), "[Unit]\nDescription=tor master\nDefaultDependencies=no\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n")
	writeFile(t, filepath.Join(lib, "tor@.service"), "[Unit]\nDescription=tor instance %i\nDefaultDependencies=no\nPartOf=tor.service\n[Service]\nExecStart=/bin/true\n")
	writeFile(t, filepath.Join(lib, "tor@default.service"), "[Unit]\nDescription=tor default\nDefaultDependencies=no\nPartOf=tor.service\n[Service]\nExecStart=/bin/true\n")

	if out, err := exec.Command(systemctl, "--root="+root, "enable", "relayfw.service").CombinedOutput(); err != nil {
		t.Fatalf("systemctl enable: %v\n%s", err, out)
	}
	for _, link := range []string{"multi-user.target.wants", "tor.service.requires", "tor@.service.requires"} {
		target, err := os.Readlink(filepath.Join(etc, link, "relayfw.service"))
		if err != nil || filepath.Base(target) != "relayfw.service" {
			t.Errorf("%s/relayfw.service: %q %v", link, target, err)
		}
	}
	verify := func(units ...string) (string, error) {
		var paths []string
		for _, u := range units {
			paths = append(paths, filepath.Join(lib, u))
		}
		cmd := exec.Command(analyze, append([]string{"verify"}, paths...)...)
		// The root's directories only (a trailing ":" would add the host's).
		cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+etc+":"+lib)
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	instances := []string{"tor.service", "tor@default.service", "tor@example.service"}
	if out, err := verify(instances...); err != nil || out != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	if err := os.Remove(filepath.Join(lib, "relayfw.service")); err != nil {
		t.Fatal(err)
	}
	for _, u := range instances {
		out, err := verify(u)
		if err == nil || !strings.Contains(out, "relayfw.service") {
			t.Errorf("%s does not require relayfw.service once enabled: %v\n%s", u, err, out)
		}
	}
}

// TestPrermKeepsFirewall: the package's prerm, on removal, leaves the
// firewall in the kernel, says so (the backend, installed) and names the
// command that removes it; it disables relayfw.service (tor's units require
// it while enabled) but never stops it (that would stop tor), and it
// exits 0 even when relayfw cannot say anything. On an upgrade it does
// nothing. postinst links an enabled relayfw.service again on an upgrade
// (an older one was not required by tor's units). systemctl is a fake that
// records its arguments: the host's units are not touched.
func TestPrermKeepsFirewall(t *testing.T) {
	requireRoot(t)
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			tn := newTestNet(t)
			run := b.runner(t, tn)
			persistentFiles(t, tn.relay)
			flags := relayInputs(t, b.flag, "ORPort 9001\nExitRelay 1\nExitPolicy accept *:80\nExitPolicy reject *:*\n")
			mustApply(t, run, flags)
			bin := t.TempDir()
			calls := filepath.Join(bin, "calls")
			writeFile(t, filepath.Join(bin, "systemctl"), "#!/bin/sh\necho \"$*\" >>"+calls+"\n")
			if err := os.Chmod(filepath.Join(bin, "systemctl"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(relayfwBin, filepath.Join(bin, "relayfw")); err != nil {
				t.Fatal(err)
			}
			path := os.Getenv("PATH")
			for _, kv := range b.env(t) {
				if p, ok := strings.CutPrefix(kv, "PATH="); ok {
					path = p // the iptables mode's tools first
				}
			}
			prerm := func(arg string) (int, string, string) {
				t.Helper()
				_ = os.Remove(calls)
				cmd := exec.Command("ip", "netns", "exec", tn.relay, "sh", "../packaging/prerm", arg)
				cmd.Env = append(os.Environ(), "PATH="+bin+":"+path)
				return runCmd(t, cmd)
			}
			code, out, errOut := prerm("remove")
			for _, want := range []string{
				"relayfw: the firewall stays in the kernel when the package is removed (tor may still be running):\n",
				"\nrelayfw:   backend:    " + b.flag,
				"\nrelayfw:   installed:  true\n",
				"\nrelayfw:   last change: applied at ",
				"\"relayfw remove\" removes it",
			} {
				if code != 0 || !strings.Contains(out, want) {
					t.Errorf("prerm remove: exit %d, lacks %q:\n%s%s", code, want, out, errOut)
				}
			}
			log, _ := os.ReadFile(calls)
			if !strings.Contains(string(log), "disable relayfw.service\n") || strings.Contains(string(log), "stop relayfw.service") ||
				strings.Contains(string(log), "--now relayfw.service") || !strings.Contains(string(log), "disable --now relayfw-refresh.timer\n") ||
				!strings.Contains(string(log), "disable --now relayfw-metrics.timer\n") {
				t.Errorf("prerm remove's systemctl calls:\n%s", log)
			}
			tn.wantProbe(t, "after prerm", exitPort, connected)
			tn.wantProbe(t, "after prerm", otherPort, refused)
			if code, out, errOut := run(append(flags, "check")...); code != 0 {
				t.Errorf("check after prerm: exit %d %s %s", code, out, errOut)
			}

			if code, out, errOut := prerm("upgrade"); code != 0 || out != "" || errOut != "" {
				t.Errorf("prerm upgrade: exit %d %q %q", code, out, errOut)
			}
			if log, err := os.ReadFile(calls); err == nil {
				t.Errorf("prerm upgrade called systemctl:\n%s", log)
			}

			// postinst: an upgrade links relayfw.service again as its
			// [Install] says; a first install enables nothing.
			for _, tc := range []struct {
				args []string
				want bool
			}{{[]string{"configure", "0.1.0"}, true}, {[]string{"configure"}, false}} {
				_ = os.Remove(calls)
				cmd := exec.Command("sh", append([]string{"../packaging/postinst"}, tc.args...)...)
				cmd.Env = append(os.Environ(), "PATH="+bin+":"+path)
				if code, out, errOut := runCmd(t, cmd); code != 0 {
					t.Errorf("postinst %v: exit %d %s %s", tc.args, code, out, errOut)
				}
				log, _ := os.ReadFile(calls)
				if got := strings.Contains(string(log), "reenable relayfw.service\n"); got != tc.want || strings.Contains(string(log), "start") {
					t.Errorf("postinst %v's systemctl calls:\n%s", tc.args, log)
				}
			}

			// A relayfw that cannot say anything does not block the removal.
			if err := os.Remove(filepath.Join(bin, "relayfw")); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(bin, "relayfw"), "#!/bin/sh\nexit 69\n")
			if err := os.Chmod(filepath.Join(bin, "relayfw"), 0o755); err != nil {
				t.Fatal(err)
			}
			if code, out, errOut := prerm("remove"); code != 0 || !strings.Contains(out, "could not read the firewall (exit 69)") {
				t.Errorf("prerm remove with a failing relayfw: exit %d %s %s", code, out, errOut)
			}
		})
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

// TestDebianPackage builds the .deb with nfpm (debPackage, once a run),
// inspects it, installs it,
// runs the installed relayfw and purges it.
func TestDebianPackage(t *testing.T) {
	requireRoot(t)
	requireCommand(t, "dpkg-deb")
	deb := debPackage(t)
	info, err := exec.Command("dpkg-deb", "--info", deb).CombinedOutput()
	if err != nil || !strings.Contains(string(info), "Package: relayfw") || !strings.Contains(string(info), "conffiles") {
		t.Fatalf("dpkg-deb --info: %v\n%s", err, info)
	}
	contents, err := exec.Command("dpkg-deb", "--contents", deb).CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"./usr/sbin/relayfw", "./etc/relayfw/relayfw.toml", "./lib/systemd/system/relayfw.service",
		"./lib/systemd/system/relayfw-refresh.timer", "./lib/systemd/system/relayfw-metrics.timer", "./usr/share/man/man8/relayfw-apply.8.gz",
		"./usr/share/man/man8/relayfw.8.gz", "./usr/share/man/man5/relayfw.toml.5.gz",
		"./usr/share/bash-completion/completions/relayfw", "./usr/share/zsh/vendor-completions/_relayfw",
		"./lib/systemd/system/tor@.service.d/50-relayfw.conf"} {
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
	if err != nil || !strings.Contains(string(unit), "ExecStart=/usr/sbin/relayfw boot") {
		t.Fatalf("installed unit: %v\n%s", err, unit)
	}
}

// TestExamplesParse: the Ansible play and the cloud-init file are valid
// YAML of the expected shape: the play runs relayor, then relayfw's role,
// with no per-instance setting for relayfw (TestAnsibleRole runs the role
// for real, after a fixture of relayor's layout).
func TestExamplesParse(t *testing.T) {
	var play []struct {
		Roles []struct {
			Role string `yaml:"role"`
		} `yaml:"roles"`
		Vars map[string]any `yaml:"vars"`
	}
	data, err := os.ReadFile("../examples/ansible/fleet.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &play); err != nil || len(play) != 1 || len(play[0].Roles) != 2 ||
		play[0].Roles[0].Role != "nusenu.relayor" || play[0].Roles[1].Role != "relayfw.relayfw.relayfw" {
		t.Fatalf("playbook: %v %+v", err, play)
	}
	if _, perInstance := play[0].Vars["relayfw_instance"]; perInstance {
		t.Error("the example sets relayfw_instance: relayfw finds relayor's instances itself")
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
