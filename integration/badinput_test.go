package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// kernelSnapshot is everything any backend could have changed in ns.
func kernelSnapshot(t *testing.T, ns string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(listRuleset(t, ns))
	for _, tool := range []string{"iptables-legacy-save", "ip6tables-legacy-save"} {
		out, err := exec.Command("ip", "netns", "exec", ns, tool).Output()
		if err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if !strings.HasPrefix(l, "#") {
				b.WriteString(countersRE.ReplaceAllString(l, "[0:0]") + "\n")
			}
		}
	}
	out, err := exec.Command("ip", "netns", "exec", ns, "ipset", "save").Output()
	if err != nil {
		t.Fatalf("ipset save: %v", err)
	}
	b.Write(out)
	return b.String()
}

// torVersion is the installed tor's version, as tor names itself in its
// log ("0.4.9.11").
func torVersion(t *testing.T) string {
	t.Helper()
	out, err := exec.Command(requireCommand(t, "tor"), "--version").Output()
	if err != nil {
		t.Fatalf("tor --version: %v", err)
	}
	f := strings.Fields(string(out)) // "Tor version 0.4.9.11."
	if len(f) < 3 || f[0] != "Tor" || f[1] != "version" {
		t.Fatalf("tor --version: %q", out)
	}
	return strings.TrimSuffix(f[2], ".")
}

// TestBadInput: every bad input gets its documented exit code and one
// clear line naming the file:line or the fix, prints nothing on stdout,
// and leaves the kernel exactly as it was.
func TestBadInput(t *testing.T) {
	requireRoot(t)
	requireCommand(t, "setpriv")
	ns := newIsolatedNS(t, "rfwbad")
	dir := reachableTempDir(t, "relayfw-bad-")
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("torrc", "ExitRelay 1\nORPort 443\nAddress 203.0.113.10\nExitPolicy accept *:80,accept *:443,reject *:*\n")
	cfg := writeTestConfig(t, dir, testConsensus)
	// A firewall is installed: bad input must leave it alone.
	if code, out, errOut := relayfwIn(t, ns, "--backend", "nftables", "--torrc", good, "--config", cfg, "apply"); code != 0 {
		t.Fatalf("apply: %d %s %s", code, out, errOut)
	}
	torrc := func(name, body string) []string {
		return []string{"--torrc", write(name, "ExitRelay 1\nORPort 443\n"+body), "--config", cfg}
	}
	conf := func(name, body string) []string {
		return []string{"--torrc", good, "--config", write(name, body)}
	}
	base := []string{"--torrc", good, "--config", cfg}
	// A file in an %included directory whose name holds a newline (the
	// unit that watches the inputs could not name it) is refused.
	badNames := filepath.Join(dir, "badnames.d")
	if err := os.Mkdir(badNames, 0o755); err != nil {
		t.Fatal(err)
	}
	write("badnames.d/10-y\n[Unit]\nWants=poweroff.target", "ExitPolicy accept *:25\n")
	with := func(a []string, more ...string) []string { return append(append([]string{}, a...), more...) }
	torV := torVersion(t)
	nobody := []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"}

	cases := []struct {
		name   string
		prefix []string // command before relayfw (setpriv)
		env    []string
		args   []string
		code   int
		msg    string
	}{
		{"port 0", nil, nil, with(torrc("t1", "ExitPolicy accept *:0-80\n"), "apply"), 65, "t1:3: malformed exit policy entry"},
		{"reversed range", nil, nil, with(torrc("t2", "\nExitPolicy accept *:443-80\n"), "apply"), 65, "t2:4:"},
		{"mask /33", nil, nil, with(torrc("t3", "ExitPolicy reject 1.2.3.4/33:80\n"), "policy"), 65, "t3:3:"},
		{"keyword case", nil, nil, with(torrc("t4", "ExitPolicy ACCEPT *:80\n"), "check"), 65, "t4:3:"},
		{"empty entry", nil, nil, with(torrc("t5", "ExitPolicy accept\n"), "print"), 65, "t5:3:"},
		{"bad bool", nil, nil, with(torrc("t6", "IPv6Exit yes\n"), "apply"), 65, "t6:3: IPv6Exit"},
		{"bad autobool", nil, nil, with(torrc("t7", "ExitRelay maybe\n"), "apply"), 65, "t7:3: ExitRelay"},
		{"unterminated quote", nil, nil, with(torrc("t8", "ExitPolicy \"accept *:80\n"), "apply"), 65, "t8:3:"},
		{"data after quote", nil, nil, with(torrc("t9", "Nickname \"a\" b\n"), "apply"), 65, "t9:3:"},
		{"bad escape", nil, nil, with(torrc("t10", "Nickname \"\\q\"\n"), "apply"), 65, "t10:3:"},
		{"include loop", nil, nil, with(torrc("t11", "%include "+filepath.Join(dir, "t11")+"\n"), "apply"), 65, "nested %includes"},
		{"two exit binds", nil, nil, with(torrc("t12", "OutboundBindAddressExit 198.51.100.1\nOutboundBindAddressExit 198.51.100.2\n"), "apply"), 65, "t12:4:"},
		{"bind not an address", nil, nil, with(torrc("t13", "OutboundBindAddress relay.example\n"), "apply"), 65, "t13:3:"},
		{"tor aborts", nil, nil, with(torrc("t14", "IPv6Exit 1\nExitPolicyRejectPrivate 0\n"), "apply"), 65, "t14:3: IPv6Exit 1 with ExitPolicyRejectPrivate 0"},
		{"broken IPv6", nil, nil, with(torrc("t15", "ExitPolicy accept [::1:80\n"), "apply"), 65, "t15:3:"},
		{"octal IPv4", nil, nil, with(torrc("t16", "ExitPolicy accept 01.2.3.4:80\n"), "apply"), 65, "t16:3:"},
		{"mask on wildcard", nil, nil, with(torrc("t17", "ExitPolicy accept */8:80\n"), "apply"), 65, "t17:3:"},
		{"port too big", nil, nil, with(torrc("t18", "ExitPolicy accept *:65536\n"), "refresh"), 65, "t18:3:"},
		{"newline in an included file name", nil, nil, with(torrc("t20", "%include "+badNames+"\n"), "apply"), 65, `badnames.d/10-y\n[Unit]\nWants=poweroff.target": a control character`},
		{"newline in an included file name: print", nil, nil, with(torrc("t21", "%include "+badNames+"\n"), "print"), 65, "rename it"},
		// Values of options relayfw does not read: tor (tor --verify-config,
		// as Debian's units run it) refuses them, so relayfw does.
		{"tor: nickname", nil, nil, with(torrc("v1", "Nickname bad-name!\n"), "apply"), 65, "v1:3: tor " + torV + " refuses this configuration (tor --verify-config): Nickname 'bad-name!', nicknames must be"},
		{"tor: bandwidth", nil, nil, with(torrc("v2", "RelayBandwidthRate lots\n"), "print"), 65, "v2:3: tor " + torV + " refuses this configuration (tor --verify-config): Could not parse RelayBandwidthRate"},
		{"tor: log", nil, nil, with(torrc("v3", "Log notice stdeer\n"), "policy"), 65, "v3:3: tor " + torV + " refuses this configuration (tor --verify-config): Failed to validate Log options: Couldn't parse log levels in Log option 'Log notice stdeer'"},
		{"tor: cpus", nil, nil, with(torrc("v4", "NumCPUs two\n"), "apply"), 65, "v4:3: tor " + torV + " refuses this configuration (tor --verify-config): Could not parse NumCPUs"},
		{"tor: memory", nil, nil, with(torrc("v5", "MaxMemInQueues 10 parsecs\n"), "check"), 65, "v5:3: tor " + torV + " refuses this configuration (tor --verify-config): Could not parse MaxMemInQueues"},
		{"tor: accounting", nil, nil, with(torrc("v6", "AccountingStart month 40 25:00\n"), "apply"), 65, "v6:3: tor " + torV + " refuses this configuration (tor --verify-config): Failed to parse accounting options: Monthly accounting must begin on a day between 1 and 28"},
		{"tor: family", nil, nil, with(torrc("v7", "MyFamily $NOTAFINGERPRINT\n"), "refresh"), 65, "v7:3: tor " + torV + " refuses this configuration (tor --verify-config): Invalid nickname '$NOTAFINGERPRINT' in MyFamily line"},
		{"tor: too slow", nil, nil, with(conf("c7", "[tor]\nverify_timeout = \"1ns\"\n"), "apply"), 1, "tor --verify-config did not finish within 1ns"},
		{"missing torrc", nil, nil, []string{"--torrc", filepath.Join(dir, "nope"), "--config", cfg, "apply"}, 66, "nope: no such file"},
		{"torrc is a directory", nil, nil, []string{"--torrc", dir, "--config", cfg, "apply"}, 66, dir},
		{"missing include", nil, nil, with(torrc("t19", "%include "+filepath.Join(dir, "absent.d")+"\n"), "apply"), 66, "absent.d"},
		{"--policy port", nil, nil, with(base, "--policy", "accept *:65536", "apply"), 65, "--policy: malformed"},
		{"--policy mask", nil, nil, with(base, "--policy", "reject 1.2.3.4/33", "apply"), 65, "--policy:"},
		{"--policy keyword", nil, nil, with(base, "--policy", "allow *:80", "apply"), 65, "--policy:"},
		{"config unknown key", nil, nil, with(conf("c1", "[allow]\nfirewall = false\n"), "apply"), 65, "c1:2: unknown key"},
		{"config bad resolver", nil, nil, with(conf("c2", "[allow]\nresolvers = [\"dns.example\"]\n"), "apply"), 65, "c2:2:"},
		{"config syntax", nil, nil, with(conf("c3", "[allow\n"), "apply"), 65, "c3:1:"},
		{"config wrong type", nil, nil, with(conf("c4", "[allow]\ndns = \"yes\"\n"), "apply"), 65, "c4:2:"},
		{"config extra port", nil, nil, with(conf("c5", "[[allow.extra]]\nname = \"x\"\nports = [\"0\"]\n"), "apply"), 65, "c5:3:"},
		{"config extra proto", nil, nil, with(conf("c6", "[[allow.extra]]\nname = \"x\"\nproto = \"gre\"\n"), "apply"), 65, "c6:3:"},
		{"missing config", nil, nil, []string{"--torrc", good, "--config", filepath.Join(dir, "none.toml"), "apply"}, 66, "none.toml"},
		{"unknown flag", nil, nil, with(base, "--frobnicate", "apply"), 64, "unknown flag"},
		{"unknown command", nil, nil, with(base, "enforce"), 64, "unknown command"},
		{"bad backend", nil, nil, with(base, "--backend", "pf", "apply"), 64, "--backend"},
		{"bad print format", nil, nil, with(base, "print", "--format", "yaml"), 64, "--format"},
		{"explain no target", nil, nil, with(base, "explain"), 64, "requires at least 1 arg"},
		{"explain bad target", nil, nil, with(base, "explain", "example.org:80"), 64, "target"},
		{"explain port 0", nil, nil, with(base, "explain", "203.0.113.5:0"), 64, "port from 1 to 65535"},
		{"explain bad proto", nil, nil, with(base, "explain", "--proto", "sctp", "203.0.113.5:80"), 64, "--proto"},
		{"apply takes no args", nil, nil, with(base, "apply", "now"), 64, "unknown command"},
		{"bad --wait", nil, nil, with(base, "--wait", "soon", "apply"), 64, "--wait"},
		{"not root: apply", nobody, nil, with(base, "--backend", "nftables", "apply"), 77, "CAP_NET_ADMIN"},
		{"not root: check", nobody, nil, with(base, "--backend", "nftables", "check"), 77, "CAP_NET_ADMIN"},
		{"not root: iptables", nobody, nil, with(base, "--backend", "iptables", "apply"), 77, "CAP_NET_ADMIN"},
		{"no iptables", nil, []string{"PATH=" + dir}, with(base, "--backend", "iptables", "apply"), 69, "iptables"},
	}
	if len(cases) < 40 {
		t.Fatalf("only %d cases", len(cases))
	}
	before := kernelSnapshot(t, ns)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string{"netns", "exec", ns}, tc.prefix...), relayfwBin)
			cmd := exec.Command("ip", append(args, tc.args...)...)
			if tc.env != nil {
				cmd.Env = append(os.Environ(), tc.env...)
			}
			code, stdout, stderr := runCmd(t, cmd)
			// Warnings may precede; the error is one "relayfw:" line.
			var errLines []string
			for _, l := range strings.Split(strings.TrimSuffix(stderr, "\n"), "\n") {
				if strings.HasPrefix(l, "relayfw: ") {
					errLines = append(errLines, l)
				} else if !strings.HasPrefix(l, "level=WARN") {
					t.Errorf("stderr line that is neither a warning nor the error: %q", l)
				}
			}
			if code != tc.code || len(errLines) != 1 || !strings.Contains(errLines[0], tc.msg) || stdout != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d and one line containing %q",
					code, stdout, stderr, tc.code, tc.msg)
			}
			if after := kernelSnapshot(t, ns); after != before {
				t.Fatalf("the kernel changed:\n%s", cmp.Diff(before, after))
			}
		})
	}
}

// TestUnwritableState: with /run/relayfw read-only or full, apply (and
// apply --confirm, which must keep the old ruleset first) exits 73 with
// one line and leaves the kernel as it was.
func TestUnwritableState(t *testing.T) {
	requireRoot(t)
	requireCommand(t, "unshare")
	ns := newIsolatedNS(t, "rfwstate")
	flags := relayInputs(t, "nftables", "../examples/torrc")
	if code, _, errOut := relayfwIn(t, ns, append(flags, "apply")...); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	before := kernelSnapshot(t, ns)
	other := relayInputs(t, "nftables", bigPolicyTorrc(20))
	quoted := func(args []string) string {
		var q []string
		for _, a := range args {
			q = append(q, "'"+strings.ReplaceAll(a, "'", `'\''`)+"'")
		}
		return strings.Join(q, " ")
	}
	for _, tc := range []struct{ name, mount string }{
		{"read-only", "mount -t tmpfs -o ro,size=64k relayfwtest /run/relayfw"},
		// Full: the lock file fits, the kept ruleset does not.
		{"full", "mount -t tmpfs -o size=4k relayfwtest /run/relayfw && head -c 4096 /dev/zero > /run/relayfw/filler 2>/dev/null; true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			script := "mkdir -p /run/relayfw && " + tc.mount + " && exec " + quoted(append([]string{relayfwBin}, append(other, "apply", "--confirm", "30s")...))
			cmd := exec.Command("ip", "netns", "exec", ns, "unshare", "-m", "--propagation", "private", "sh", "-c", script)
			code, stdout, stderr := runCmd(t, cmd)
			if code != 73 || stdout != "" || strings.Count(stderr, "relayfw: ") != 1 {
				t.Errorf("exit %d, stdout %q, stderr %q; want 73 and one line", code, stdout, stderr)
			}
			if after := kernelSnapshot(t, ns); after != before {
				t.Fatalf("the kernel changed:\n%s", cmp.Diff(before, after))
			}
		})
	}
}
