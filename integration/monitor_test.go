package integration

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestMonitoringNeverBlind: with a torrc, an %include or relayfw.toml that
// cannot be read, status and metrics still report the kernel — installed,
// the counters, the backend — say what is wrong in one line (status), in
// JSON and as relayfw_config_valid 0 with relayfw_in_sync 0, and exit 0;
// metrics --output rewrites the textfile, so an old relayfw_in_sync 1 does
// not linger. Once the input is fixed, both say valid and in sync again.
// The last change (applied, and when) is in all three.
func TestMonitoringNeverBlind(t *testing.T) {
	requireRoot(t)
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { testMonitoringNeverBlind(t, b) })
	}
}

// monitorStatus is what the test reads of status --format json.
type monitorStatus struct {
	Backend   string
	Installed bool
	InSync    bool `json:"in_sync"`
	Config    *struct {
		Valid bool
		Error string
	}
	LastChange *struct {
		Change string
		At     time.Time
	} `json:"last_change"`
	Classes map[string]struct{ Packets, Bytes uint64 }
}

func testMonitoringNeverBlind(t *testing.T, b backend) {
	tn := newTestNet(t)
	run := b.runner(t, tn)
	lastChange, _ := persistentFiles(t, tn.relay) // removed at the end
	example, err := os.ReadFile("../examples/torrc")
	if err != nil {
		t.Fatal(err)
	}
	flags := relayInputs(t, b.flag, string(example))
	torrc, cfg := flags[3], flags[5]
	// plain leaves the backend to relayfw: with invalid inputs, the one of
	// the last apply.
	plain := flags[2:]
	goodConfig, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Second)
	mustApply(t, run, flags)
	for _, dst := range []string{"203.0.113.5:80", "203.0.113.5:25"} {
		ap := netip.MustParseAddrPort(dst)
		tn.probe(t, ap.Addr(), ap.Port())
	}
	prom := filepath.Join(t.TempDir(), "relayfw.prom")

	status := func(flags []string) monitorStatus {
		t.Helper()
		code, out, errOut := run(append(flags, "status", "--format", "json")...)
		var st monitorStatus
		if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
			t.Fatalf("status --format json: exit %d %s %s", code, out, errOut)
		}
		return st
	}
	metricsFile := func(flags []string) string {
		t.Helper()
		if code, out, errOut := run(append(flags, "metrics", "--output", prom)...); code != 0 {
			t.Fatalf("metrics --output: exit %d %s %s", code, out, errOut)
		}
		text, err := os.ReadFile(prom)
		if err != nil {
			t.Fatal(err)
		}
		if entries, _ := os.ReadDir(filepath.Dir(prom)); len(entries) != 1 {
			t.Errorf("metrics --output left temporary files: %v", entries)
		}
		return string(text)
	}
	exitCounted := regexp.MustCompile(`(?m)^relayfw_packets_total\{class="exit",rule="exit4"\} [1-9]`)
	// valid checks the reports of a valid config, the last change included.
	valid := func(when string) {
		t.Helper()
		st := status(flags)
		if !st.Installed || !st.InSync || st.Config == nil || !st.Config.Valid || st.Config.Error != "" {
			t.Errorf("%s: status %+v config %+v", when, st, st.Config)
		}
		if c := st.LastChange; c == nil || c.Change != "applied" || c.At.Before(before) || time.Since(c.At) > 5*time.Minute {
			t.Errorf("%s: last change %+v, want applied after %s", when, c, before.Format(time.RFC3339))
		}
		code, out, errOut := run(append(flags, "status")...)
		if code != 0 || !strings.Contains(out, "\nconfig:     valid (accepted by tor ") || !strings.Contains(out, "\nlast change: applied at ") {
			t.Errorf("%s: status: exit %d\n%s%s", when, code, out, errOut)
		}
		text := metricsFile(flags)
		for _, want := range []string{"\nrelayfw_config_valid 1\n", "\nrelayfw_in_sync 1\n", "\nrelayfw_last_change_timestamp_seconds{change=\"applied\"} "} {
			if !strings.Contains(text, want) {
				t.Errorf("%s: metrics lack %q:\n%s", when, want, text)
			}
		}
		if !exitCounted.MatchString(text) {
			t.Errorf("%s: metrics lack the exit counter:\n%s", when, text)
		}
	}
	valid("after apply")

	dir := filepath.Dir(torrc)
	for _, tc := range []struct {
		name   string
		breaks func()
		// want is the error's file:line (a regexp), as apply says it.
		want string
		// applyCode is what apply exits with for this input.
		applyCode int
	}{
		{"torrc typo", func() {
			appendTo(t, torrc, "ExitPolcy accept *:80\n")
		}, regexp.QuoteMeta(fmt.Sprintf("torrc %s:%d: ", torrc, strings.Count(string(example), "\n")+1)), 65},
		{"tor refuses", func() { // a value relayfw does not read; tor --verify-config refuses it
			appendTo(t, torrc, "NumCPUs two\n")
		}, regexp.QuoteMeta(fmt.Sprintf("torrc %s:%d: tor ", torrc, strings.Count(string(example), "\n")+1)) + `[0-9.]+ refuses this configuration \(tor --verify-config\): Could not parse NumCPUs`, 65},
		{"missing include", func() {
			appendTo(t, torrc, "%include "+filepath.Join(dir, "missing.conf")+"\n")
		}, regexp.QuoteMeta(filepath.Join(dir, "missing.conf")), 66},
		{"invalid relayfw.toml", func() {
			writeFile(t, cfg, "[allow\n")
		}, regexp.QuoteMeta(cfg + ":1: "), 65},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.breaks()
			code, _, errOut := run(append(flags, "apply", "--dry-run")...)
			if code != tc.applyCode || !regexp.MustCompile(tc.want).MatchString(errOut) {
				t.Fatalf("apply --dry-run: exit %d %q; want %d and %s", code, errOut, tc.applyCode, tc.want)
			}
			errLine := strings.TrimSuffix(strings.TrimPrefix(errOut, "relayfw: "), "\n")

			// status: the kernel, and the one line apply printed.
			code, out, errOut := run(append(plain, "status")...)
			if code != 0 {
				t.Fatalf("status: exit %d %s%s", code, out, errOut)
			}
			for _, want := range []string{"installed:  true\n", "\nconfig:     invalid: " + errLine + "\n", "\nin sync:    no, the config is invalid",
				"\nlast change: applied at "} {
				if !strings.Contains(out, want) {
					t.Errorf("status lacks %q:\n%s", want, out)
				}
			}
			if !regexp.MustCompile(`\n  exit accepted +[1-9]\d* packets`).MatchString(out) {
				t.Errorf("status lacks the exit counter:\n%s", out)
			}
			if !strings.Contains(out, "backend:    "+b.flag) {
				t.Errorf("status reads another backend than the one of the last apply (%s):\n%s", b.flag, out)
			}

			// JSON: the kernel's facts and the error.
			st := status(plain)
			if !st.Installed || st.InSync || st.Config == nil || st.Config.Valid || st.Config.Error != errLine ||
				st.Classes["exit"].Packets == 0 || !strings.HasPrefix(st.Backend, b.flag) || st.LastChange == nil {
				t.Errorf("status json: %+v config %+v", st, st.Config)
			}

			// metrics, to stdout and into the textfile that said in sync.
			code, out, errOut = run(append(plain, "metrics")...)
			if code != 0 || !strings.Contains(out, "\nrelayfw_config_valid 0\n") || !strings.Contains(out, "\nrelayfw_in_sync 0\n") ||
				!strings.Contains(out, "\nrelayfw_installed 1\n") || !exitCounted.MatchString(out) {
				t.Errorf("metrics: exit %d\n%s%s", code, out, errOut)
			}
			if !regexp.MustCompile(tc.want).MatchString(errOut) {
				t.Errorf("metrics does not warn on stderr: %q", errOut)
			}
			text := metricsFile(plain)
			if strings.Contains(text, "relayfw_in_sync 1") || !strings.Contains(text, "\nrelayfw_in_sync 0\n") ||
				!strings.Contains(text, "\nrelayfw_config_valid 0\n") || !exitCounted.MatchString(text) {
				t.Errorf("metrics --output:\n%s", text)
			}

			// Fixed: valid and in sync again.
			writeFile(t, torrc, string(example))
			writeFile(t, cfg, string(goodConfig))
			valid("fixed")
		})
	}

	// Without the record of the last apply (/run lost it) and without
	// --backend, an invalid input still leads status to the backend that
	// holds relayfw's firewall.
	appendTo(t, torrc, "ExitPolcy accept *:80\n")
	if err := os.Remove(strings.Replace(lastChange, "/var/lib/relayfw/last-change-", "/run/relayfw/state-", 1)); err != nil {
		t.Fatalf("the record of the last apply: %v", err)
	}
	code, out, errOut := run(append(plain, "status")...)
	if code != 0 || !strings.Contains(out, "backend:    "+b.flag) || !strings.Contains(out, "installed:  true\n") ||
		!regexp.MustCompile(`\n  exit accepted +[1-9]\d* packets`).MatchString(out) {
		t.Errorf("status without the record of the last apply: exit %d\n%s%s", code, out, errOut)
	}

	// Reports that cannot be made still fail: without CAP_NET_ADMIN, 77,
	// invalid inputs or not.
	requireCommand(t, "setpriv")
	for _, op := range []string{"status", "metrics"} {
		args := append([]string{"netns", "exec", tn.relay, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
			"--inh-caps=-all", "--bounding-set=-all", relayfwBin}, append(flags, op)...)
		cmd := exec.Command("ip", args...)
		cmd.Env = b.env(t)
		if code, out, errOut := runCmd(t, cmd); code != 77 || out != "" {
			t.Errorf("%s without CAP_NET_ADMIN: exit %d %q %q; want 77 and nothing on stdout", op, code, out, errOut)
		}
	}
}

func appendTo(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// persistentFiles names the files relayfw keeps in /var/lib/relayfw for
// the network namespace ns (named by its cookie, as relayfw names them),
// and removes them when the test ends.
func persistentFiles(t *testing.T, ns string) (lastChange, rolledBack string) {
	t.Helper()
	cookie := netnsCookie(t, ns)
	name := func(kind string) string { return fmt.Sprintf("/var/lib/relayfw/%s-netns%d.json", kind, cookie) }
	t.Cleanup(func() {
		for _, kind := range []string{"last-change", "rolled-back", "last-good"} {
			_ = os.Remove(name(kind))
		}
	})
	return name("last-change"), name("rolled-back")
}

// TestLastChangeShown: status (text and JSON) and metrics show the last
// change relayfw recorded — an apply, then a rollback at the deadline with
// what it restored — the last rollback's time, and an unconfirmed
// rollback's record: the automatic applies keep the last good firewall.
// The rollback's records are written here as relayfw's rollback writes
// them (host.Change, host.RolledBack).
func TestLastChangeShown(t *testing.T) {
	requireRoot(t)
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { testLastChangeShown(t, b) })
	}
}

func testLastChangeShown(t *testing.T, b backend) {
	ns := newIsolatedNS(t, "rfwlast")
	run := b.runnerIn(b.env(t))
	lastChange, rolledBack := persistentFiles(t, ns)
	flags := relayInputs(t, b.flag, "../examples/torrc")

	code, out, errOut := run(t, ns, append(flags, "status", "--format", "json")...)
	if code != 0 || !strings.Contains(out, "\"last_change\": null") || !strings.Contains(out, "\"rolled_back\": null") {
		t.Fatalf("status before any change: exit %d %s %s", code, out, errOut)
	}
	before := time.Now().Add(-time.Second).Truncate(time.Second)
	if code, out, errOut := run(t, ns, append(flags, "apply")...); code != 0 {
		t.Fatalf("apply: exit %d %s %s", code, out, errOut)
	}
	data, err := os.ReadFile(lastChange)
	if err != nil {
		t.Fatalf("apply recorded no last change: %v", err)
	}
	var applied struct {
		Change string
		At     time.Time
	}
	if err := json.Unmarshal(data, &applied); err != nil || applied.Change != "applied" || applied.At.Before(before) {
		t.Fatalf("last change after apply: %s", data)
	}
	code, out, _ = run(t, ns, append(flags, "status")...)
	if want := "\nlast change: applied at " + applied.At.Format(time.RFC3339) + "\n"; code != 0 || !strings.Contains(out, want) || strings.Contains(out, "rolled back") {
		t.Errorf("status after apply: want %q\n%s", want, out)
	}
	code, out, _ = run(t, ns, append(flags, "metrics")...)
	if want := fmt.Sprintf("\nrelayfw_last_change_timestamp_seconds{change=\"applied\"} %d\n", applied.At.Unix()); code != 0 || !strings.Contains(out, want) ||
		strings.Contains(out, "relayfw_last_rollback_timestamp_seconds") {
		t.Errorf("metrics after apply: want %q and no last rollback\n%s", want, out)
	}

	// A confirm window rolled back at its deadline.
	at := time.Now().UTC().Truncate(time.Second)
	rollback := fmt.Sprintf(`{"change":"rolled back","why":"deadline","at":%q,"window":%q,"detail":"rolled back to the firewall applied at %s","last_rollback":%q}`,
		at.Format(time.RFC3339), at.Add(-time.Second).Format(time.RFC3339), applied.At.Format(time.RFC3339), at.Format(time.RFC3339))
	writeFile(t, lastChange, rollback)
	writeFile(t, rolledBack, fmt.Sprintf(`{"at":%q,"why":"deadline","window":%q}`, at.Format(time.RFC3339), at.Add(-time.Second).Format(time.RFC3339)))
	code, out, _ = run(t, ns, append(flags, "status")...)
	for _, want := range []string{
		"\nlast change: rolled back at " + at.Format(time.RFC3339) + " (not confirmed by the deadline): rolled back to the firewall applied at ",
		"\nrolled back: at " + at.Format(time.RFC3339) + " (not confirmed by the deadline); the torrc still holds that change: since then the automatic applies",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("status after a rollback lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = run(t, ns, append(flags, "status", "--format", "json")...)
	var st struct {
		LastChange *struct{ Change, Why string } `json:"last_change"`
		RolledBack *struct {
			At  time.Time
			Why string
		} `json:"rolled_back"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.LastChange == nil || st.LastChange.Change != "rolled back" || st.LastChange.Why != "deadline" ||
		st.RolledBack == nil || !st.RolledBack.At.Equal(at) {
		t.Errorf("status --format json after a rollback: exit %d\n%s", code, out)
	}
	code, out, _ = run(t, ns, append(flags, "metrics")...)
	for _, want := range []string{
		fmt.Sprintf("\nrelayfw_last_change_timestamp_seconds{change=\"rolled back\",why=\"deadline\"} %d\n", at.Unix()),
		fmt.Sprintf("\nrelayfw_last_rollback_timestamp_seconds %d\n", at.Unix()),
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("metrics after a rollback lack %q:\n%s", want, out)
		}
	}

	// An operator applies by hand (the rollback's record goes with it
	// when relayfw's apply forgets it): the last rollback's time stays.
	if err := os.Remove(rolledBack); err != nil {
		t.Fatal(err)
	}
	// A change, not a no-op apply (which changes nothing to record).
	if code, out, errOut := run(t, ns, append(flags, "remove")...); code != 0 {
		t.Fatalf("remove: exit %d %s %s", code, out, errOut)
	}
	if code, out, errOut := run(t, ns, append(flags, "apply")...); code != 0 {
		t.Fatalf("apply: exit %d %s %s", code, out, errOut)
	}
	code, out, _ = run(t, ns, append(flags, "metrics")...)
	for _, want := range []string{"\nrelayfw_last_change_timestamp_seconds{change=\"applied\"} ", fmt.Sprintf("\nrelayfw_last_rollback_timestamp_seconds %d\n", at.Unix())} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("metrics after the next apply lack %q:\n%s", want, out)
		}
	}
	code, out, _ = run(t, ns, append(flags, "status")...)
	if want := "\nlast rollback: " + at.Format(time.RFC3339) + "\n"; code != 0 || !strings.Contains(out, want) || strings.Contains(out, "\nrolled back: ") {
		t.Errorf("status after the next apply: want %q and no rolled back line\n%s", want, out)
	}
}
