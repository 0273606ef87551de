package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRunningTor: a real tor in a namespace with only lo, asked over its
// control socket with the cookie, as Debian configures it. The firewall
// matches the running tor: check 0, relayfw_tor_policy_matches 1. The
// torrc edited and applied, tor not reloaded: check 4 with the entries and
// "reload tor", status says it differs, the metric is 0. After SIGHUP, tor
// matches again. The metrics unit's sandbox (its capabilities without
// CAP_DAC_OVERRIDE, its SupplementaryGroups) reaches the socket, and
// without the group it cannot.
func TestRunningTor(t *testing.T) {
	requireRoot(t)
	torV := torVersion(t)
	t.Parallel() // it mostly waits for tor
	ns := newIsolatedNS(t, "rfwrun")
	addrsOnLo(t, ns, "203.0.113.5/32")

	group, err := user.LookupGroup("debian-tor")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no group debian-tor (scripts/setup installs Debian's tor package, which creates it): %v", err)
		}
		t.Skipf("SKIPPED: no group debian-tor (Debian's tor package): %v", err)
	}
	gid, _ := strconv.Atoi(group.Gid)
	u, err := user.Lookup("debian-tor")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)

	dir := reachableTempDir(t, "relayfw-runningtor-")
	data := torDataDir(t, "debian-tor", "")
	// As Debian's /run/tor: tor's user's, its group may enter.
	run := filepath.Join(reachableTempDir(t, "relayfw-torrun-"), "run")
	if err := os.Mkdir(run, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(run, uid, gid); err != nil {
		t.Fatal(err)
	}
	torrc := filepath.Join(dir, "torrc")
	writeTorrc := func(policy string) {
		t.Helper()
		text := strings.Join([]string{
			"User debian-tor",
			"DataDirectory " + data,
			"ORPort 203.0.113.5:9001",
			"Address 203.0.113.5",
			"AssumeReachable 1",
			"PublishServerDescriptor 0",
			"SocksPort 0",
			"ExitRelay 1",
			"ExitPolicy " + policy,
			// Debian's defaults file, with this test's directory.
			"ControlSocket " + run + "/control GroupWritable RelaxDirModeCheck",
			"CookieAuthentication 1",
			"CookieAuthFileGroupReadable 1",
			"CookieAuthFile " + run + "/control.authcookie",
			"Log notice stderr",
		}, "\n") + "\n"
		if err := os.WriteFile(torrc, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeTorrc("accept *:80,accept *:443,reject *:*")
	cfg := filepath.Join(dir, "relayfw.toml")
	if err := os.WriteFile(cfg, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--backend", "nftables", "--torrc", torrc, "--config", cfg}
	relayfw := func(args ...string) (int, string, string) {
		t.Helper()
		return relayfwIn(t, ns, append(flags, args...)...)
	}
	instance := filepath.Base(dir) // relayfw names a --torrc DIR/torrc's instance DIR

	ctx, cancel := context.WithCancel(context.Background())
	logFile, err := os.Create(filepath.Join(dir, "tor.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	tor := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "tor", "-f", torrc)
	tor.Stdout, tor.Stderr = logFile, logFile
	if err := tor.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- tor.Wait() }()
	t.Cleanup(func() { cancel(); <-exited })
	torLog := func() string { b, _ := os.ReadFile(logFile.Name()); return string(b) }

	// until polls f (every 200 ms) until it is true, for at most 60 s.
	until := func(what string, f func() bool) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); !f(); time.Sleep(200 * time.Millisecond) {
			select {
			case err := <-exited:
				t.Fatalf("tor exited (%v) while waiting for %s:\n%s", err, what, torLog())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; tor's log:\n%s", what, torLog())
			}
		}
	}
	start := time.Now()
	until("tor to answer exit-policy/full", func() bool {
		code, _, _ := relayfw("policy", "--from-tor")
		return code == 0
	})
	t.Logf("tor answered exit-policy/full after %s", time.Since(start).Round(100*time.Millisecond))

	_, ours, _ := relayfw("policy")
	if code, theirs, errOut := relayfw("policy", "--from-tor"); code != 0 || theirs != ours {
		t.Fatalf("policy --from-tor: exit %d %s\n%s\nwant relayfw's policy:\n%s", code, errOut, theirs, ours)
	}
	if code, out, errOut := relayfw("apply"); code != 0 {
		t.Fatalf("apply: exit %d %s%s", code, out, errOut)
	}
	matching := func(when string) {
		t.Helper()
		code, out, errOut := relayfw("check")
		if want := "running tor " + instance + ": matches (tor " + torV + " at " + run + "/control)"; code != 0 || !strings.Contains(out, want) {
			t.Errorf("%s: check: exit %d\n%s%s\nwant 0 and %q", when, code, out, errOut, want)
		}
		code, out, errOut = relayfw("metrics")
		if want := "\nrelayfw_tor_policy_matches{instance=\"" + instance + "\"} 1\n"; code != 0 || !strings.Contains(out, want) {
			t.Errorf("%s: metrics: exit %d %s, no %q:\n%s", when, code, errOut, want, out)
		}
		code, out, errOut = relayfw("status")
		if want := "\nrunning tor: " + instance + ": matches"; code != 0 || !strings.Contains(out, want) {
			t.Errorf("%s: status: exit %d %s, no %q:\n%s", when, code, errOut, want, out)
		}
	}
	matching("tor as started")

	// The torrc edited and applied; tor not reloaded.
	writeTorrc("accept *:80,accept *:8080,reject *:*")
	if code, out, errOut := relayfw("apply"); code != 0 {
		t.Fatalf("apply of the edited torrc: exit %d %s%s", code, out, errOut)
	}
	code, out, errOut := relayfw("check")
	for _, want := range []string{
		"in sync (nftables)\n",
		"running tor " + instance + ": enforces another exit policy than relayfw's: 1 entry only tor has, 1 only relayfw has; reload tor (SIGHUP)\n",
		"  only tor has:     accept *:443\n",
		"  only relayfw has: accept *:8080\n",
	} {
		if code != 4 || !strings.Contains(out, want) {
			t.Errorf("check with tor not reloaded: exit %d, lacks %q:\n%s%s", code, want, out, errOut)
		}
	}
	code, out, errOut = relayfw("status")
	if want := "\nrunning tor: " + instance + ": differs: 1 entry only tor has, 1 only relayfw has; reload tor (SIGHUP)"; code != 0 || !strings.Contains(out, want) {
		t.Errorf("status with tor not reloaded: exit %d %s, no %q:\n%s", code, errOut, want, out)
	}
	code, out, errOut = relayfw("status", "--format", "json")
	var st struct {
		RunningTor []struct {
			Instance       string
			Asked, Matches bool
			OnlyTor        []string `json:"only_tor"`
			OnlyRelayfw    []string `json:"only_relayfw"`
			TorVersion     string   `json:"tor_version"`
			Advice         string
		} `json:"running_tor"`
	}
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || len(st.RunningTor) != 1 {
		t.Fatalf("status --format json: exit %d %v %s\n%s", code, err, errOut, out)
	}
	if r := st.RunningTor[0]; r.Instance != instance || !r.Asked || r.Matches || strings.Join(r.OnlyTor, ",") != "accept *:443" ||
		strings.Join(r.OnlyRelayfw, ",") != "accept *:8080" || r.TorVersion != torV || r.Advice != "reload tor (SIGHUP)" {
		t.Errorf("status --format json: running_tor %+v", r)
	}
	code, out, errOut = relayfw("metrics")
	if want := "\nrelayfw_tor_policy_matches{instance=\"" + instance + "\"} 0\n"; code != 0 || !strings.Contains(out, want) {
		t.Errorf("metrics with tor not reloaded: exit %d %s, no %q:\n%s", code, errOut, want, out)
	}

	// tor reloads its torrc.
	if err := tor.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	until("tor to enforce the edited torrc", func() bool {
		code, _, _ := relayfw("check")
		return code == 0
	})
	t.Logf("tor matched again %s after SIGHUP", time.Since(start).Round(100*time.Millisecond))
	matching("after SIGHUP")

	// The metrics unit's sandbox: without CAP_DAC_OVERRIDE, root opens the
	// socket (srw-rw---- debian-tor:debian-tor) through the group only.
	unit, err := os.ReadFile("../contrib/systemd/relayfw-metrics.service")
	if err != nil {
		t.Fatal(err)
	}
	var caps []string
	groups := ""
	for _, l := range strings.Split(string(unit), "\n") {
		if v, ok := strings.CutPrefix(l, "CapabilityBoundingSet="); ok {
			for _, c := range strings.Fields(v) {
				caps = append(caps, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
			}
		}
		if v, ok := strings.CutPrefix(l, "SupplementaryGroups="); ok {
			groups = v
		}
	}
	if len(caps) == 0 || slicesContainsFold(caps, "+dac_override") || groups != "debian-tor" {
		t.Fatalf("relayfw-metrics.service: capabilities %v, SupplementaryGroups %q", caps, groups)
	}
	asUnit := func(groupFlag string) (int, string, string) {
		cmd := exec.Command("ip", "netns", "exec", ns, "setpriv", "--bounding-set=-all,"+strings.Join(caps, ","),
			"--inh-caps=-all", "--no-new-privs", groupFlag, relayfwBin)
		cmd.Args = append(cmd.Args, append(flags, "policy", "--from-tor")...)
		return runCmd(t, cmd)
	}
	if code, out, errOut := asUnit("--groups=" + group.Gid); code != 0 || out != strings.Replace(ours, "accept *:443", "accept *:8080", 1) {
		t.Errorf("policy --from-tor as the metrics unit runs it: exit %d %s\n%s", code, errOut, out)
	}
	if code, _, errOut := asUnit("--clear-groups"); code != 1 || !strings.Contains(errOut, "permission denied") {
		t.Errorf("policy --from-tor without the group: exit %d %s; want 1, permission denied", code, errOut)
	}
}

func slicesContainsFold(s []string, v string) bool {
	for _, x := range s {
		if strings.EqualFold(x, v) {
			return true
		}
	}
	return false
}
