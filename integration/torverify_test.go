package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestTorJudges: with tor installed, what tor refuses relayfw refuses —
// the values of options relayfw does not read and the torrcs tor aborts
// on — with exit 65 and tor's own reason, by policy, print and apply,
// leaving the kernel alone; [tor] verify = false leaves the judgement to
// relayfw, which then accepts the values it does not read (so the
// refusals above are tor's) but still refuses tor's abort. A torrc tor
// accepts is applied, and status says tor accepted it.
func TestTorJudges(t *testing.T) {
	requireRoot(t)
	torV := torVersion(t)
	ns := newIsolatedNS(t, "rfwjudge")
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	on := write("on.toml", "")
	off := write("off.toml", "[tor]\nverify = false\n")
	const head = "ORPort 9001\nExitRelay 1\nContactInfo ops@example.org\nExitPolicy accept *:80,accept *:443,reject *:*\n"
	cases := []struct {
		name, body string
		reason     string // tor's, after "refuses this configuration (tor --verify-config): "
		ownCheck   string // relayfw's own refusal, also with verify = false; "": relayfw alone accepts
	}{
		{"nickname", "Nickname bad-name!\n", "Nickname 'bad-name!', nicknames must be between 1 and 19 characters", ""},
		{"bandwidth", "RelayBandwidthRate lots\n", "Could not parse RelayBandwidthRate", ""},
		{"log", "Log notice stdeer\n", "Couldn't parse log levels in Log option 'Log notice stdeer'", ""},
		{"cpus", "NumCPUs two\n", "Could not parse NumCPUs", ""},
		{"memory", "MaxMemInQueues 10 parsecs\n", "Could not parse MaxMemInQueues", ""},
		{"accounting", "AccountingStart month 40 25:00\n", "Monthly accounting must begin on a day between 1 and 28", ""},
		{"family", "MyFamily $NOTAFINGERPRINT\n", "Invalid nickname '$NOTAFINGERPRINT' in MyFamily line", ""},
	}
	for i, c := range cases {
		cases[i].body = head + c.body
	}
	// tor 0.4.9.11 aborts on these in a namespace with only lo (relayfw
	// says so itself; tor's --verify-config would die on an assertion).
	aborts := []struct{ name, body string }{
		{"abort", "ORPort 9001\nExitRelay 1\nIPv6Exit 1\nExitPolicyRejectPrivate 0\n"},
		{"abort with local interfaces", "ORPort 9001\nExitRelay 1\nIPv6Exit 1\nExitPolicyRejectPrivate 0\nExitPolicyRejectLocalInterfaces 1\nOutboundBindAddress 203.0.113.9\n"},
	}
	for _, a := range aborts {
		cases = append(cases, struct{ name, body, reason, ownCheck string }{a.name, a.body, "", "IPv6Exit 1 with ExitPolicyRejectPrivate 0"})
	}
	before := kernelSnapshot(t, ns)
	for _, c := range cases {
		torrc := write(c.name, c.body)
		for _, command := range []string{"policy", "print", "apply"} {
			t.Run(c.name+"/"+command, func(t *testing.T) {
				code, stdout, stderr := relayfwIn(t, ns, "--torrc", torrc, "--config", on, command)
				want := c.ownCheck
				if want == "" {
					want = "tor " + torV + " refuses this configuration (tor --verify-config): "
				}
				if code != 65 || stdout != "" || errorLines(stderr) != 1 || !strings.Contains(stderr, torrc) ||
					!strings.Contains(stderr, want) || !strings.Contains(stderr, c.reason) {
					t.Errorf("exit %d, stdout %q, stderr %q; want 65 and one line naming %s with %q %q", code, stdout, stderr, torrc, want, c.reason)
				}
				code, _, stderr = relayfwIn(t, ns, "--torrc", torrc, "--config", off, command)
				switch {
				case c.ownCheck != "" && (code != 65 || !strings.Contains(stderr, c.ownCheck)):
					t.Errorf("verify = false: exit %d, stderr %q; relayfw itself refuses tor's abort (65)", code, stderr)
				case c.ownCheck == "" && command != "apply" && code != 0:
					t.Errorf("verify = false: exit %d, stderr %q; relayfw alone accepts what it does not read", code, stderr)
				case c.ownCheck == "" && !strings.Contains(stderr, "tor was not consulted: [tor] verify = false"):
					t.Errorf("verify = false: stderr %q does not say tor was not consulted", stderr)
				}
				if command == "apply" && code == 0 {
					if code, _, stderr := relayfwIn(t, ns, "--torrc", torrc, "--config", off, "remove"); code != 0 {
						t.Fatalf("remove: %d %s", code, stderr)
					}
				}
			})
		}
	}
	if after := kernelSnapshot(t, ns); after != before {
		t.Fatalf("the kernel changed: %s", after)
	}

	good := write("good", head)
	if code, _, stderr := relayfwIn(t, ns, "--torrc", good, "--config", on, "apply"); code != 0 {
		t.Fatalf("apply of a torrc tor accepts: %d %s", code, stderr)
	}
	code, stdout, stderr := relayfwIn(t, ns, "--torrc", good, "--config", on, "status")
	if want := "config:     valid (accepted by tor " + torV + ")"; code != 0 || !strings.Contains(stdout, want) {
		t.Errorf("status: exit %d, stdout %q %s; want %q", code, stdout, stderr, want)
	}

	// Without User, as a unit with User= runs tor (not Debian's): tor
	// judges as the owner of the DataDirectory, which it accepts; as root
	// it would refuse ("not owned by this user").
	// tor runs as daemon then, and must read the torrc, as it would there.
	noUser := filepath.Join(reachableTempDir(t, "relayfw-nouser-"), "torrc")
	if err := os.WriteFile(noUser, []byte(head+"DataDirectory "+torDataDir(t, "daemon", "")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := relayfwIn(t, ns, "--torrc", noUser, "--config", on, "policy"); code != 0 || strings.Contains(stderr, "refuses") {
		t.Errorf("no User, DataDirectory of daemon: exit %d %s", code, stderr)
	}

	// --policy alone, on a host without a torrc: tor judges the policy
	// with an empty torrc (a file of relayfw's own, as for every file it
	// makes for tor).
	script := "mount -t tmpfs relayfwtest /etc/tor && exec " + relayfwBin + " --config " + on + " --policy 'accept *:80,reject *:*' policy"
	cmd := exec.Command("ip", "netns", "exec", ns, "unshare", "-m", "--propagation", "private", "sh", "-c", script)
	if code, stdout, stderr := runCmd(t, cmd); code != 0 || !strings.Contains(stdout, "accept *:80\n") || strings.Contains(stderr, "tor was not consulted") {
		t.Errorf("--policy without a torrc: exit %d\n%s%s", code, stdout, stderr)
	}
}

// TestTorJudgesInUnits: relayfw's systemd units bound relayfw's
// capabilities, and tor --verify-config, its child, gets no more: with
// the units' CapabilityBoundingSet and NoNewPrivileges, tor must still
// judge a torrc with a User (tor tries the switch to the User, which needs
// CAP_SETUID and CAP_SETGID, as Debian's tor units grant tor) and its
// DataDirectory (CAP_DAC_READ_SEARCH) — else every reapply would refuse
// a good torrc.
func TestTorJudgesInUnits(t *testing.T) {
	requireRoot(t)
	requireCommand(t, "setpriv")
	torV := torVersion(t)
	ns := newIsolatedNS(t, "rfwunit")
	dir := t.TempDir()
	torrc := filepath.Join(dir, "torrc")
	text := "ORPort 9001\nExitRelay 1\nContactInfo ops@example.org\nExitPolicy accept *:80,reject *:*\nUser daemon\nDataDirectory " + torDataDir(t, "daemon", "") + "\n"
	if err := os.WriteFile(torrc, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "relayfw.toml")
	if err := os.WriteFile(cfg, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	units, err := filepath.Glob("../contrib/systemd/relayfw*.service")
	if err != nil || len(units) < 3 {
		t.Fatalf("units: %v %v", units, err)
	}
	for _, unit := range units {
		t.Run(filepath.Base(unit), func(t *testing.T) {
			data, err := os.ReadFile(unit)
			if err != nil {
				t.Fatal(err)
			}
			var caps []string
			for _, l := range strings.Split(string(data), "\n") {
				if v, ok := strings.CutPrefix(l, "CapabilityBoundingSet="); ok {
					for _, c := range strings.Fields(v) {
						caps = append(caps, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
					}
				}
			}
			if len(caps) == 0 || !strings.Contains(string(data), "\nNoNewPrivileges=yes\n") {
				t.Fatalf("%s: no CapabilityBoundingSet or NoNewPrivileges", unit)
			}
			if code, _, stderr := relayfwIn(t, ns, "--torrc", torrc, "--config", cfg, "policy"); code != 0 {
				t.Fatalf("as plain root: exit %d %s", code, stderr)
			}
			cmd := exec.Command("ip", "netns", "exec", ns, "setpriv", "--bounding-set=-all,"+strings.Join(caps, ","),
				"--inh-caps=-all", "--no-new-privs", relayfwBin, "--torrc", torrc, "--config", cfg, "status")
			code, stdout, stderr := runCmd(t, cmd)
			if want := "config:     valid (accepted by tor " + torV + ")"; code != 0 || !strings.Contains(stdout, want) {
				t.Errorf("with the unit's capabilities (%s): exit %d\n%s%s\nwant %q", strings.Join(caps, ","), code, stdout, stderr, want)
			}
		})
	}
}
