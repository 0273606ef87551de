package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/relayfw/relayfw/host"
	"github.com/relayfw/relayfw/ruleset"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const exampleTorrc = "../../examples/torrc"
const testConfig = "testdata/relayfw.toml"

// testUsers are the users the tests' torrcs name, with fixed uids so that
// the golden files do not depend on the machine's /etc/passwd.
var testUsers = map[string]uint32{"debian-tor": 101, "_tor-a": 201, "_tor-b": 202, "_apt": 42}

func TestMain(m *testing.M) {
	// A stand-in for tor (testSystem finds it): the unit tests run in the host's own
	// namespace, where no real tor runs (integration/ runs the real one in
	// namespaces of its own). It accepts every configuration, but for a
	// torrc line "# fake tor refuses: REASON", which it refuses as tor
	// does.
	dir, err := os.MkdirTemp("", "relayfw-faketor-")
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "tor"), []byte(fakeTor), 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fakeTorDir = dir
	testStateDir = filepath.Join(dir, "state")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// fakeTorDir holds fakeTor as "tor"; testStateDir is the tests' state
// directory (remembered tor verdicts land there, not in /run/relayfw).
var fakeTorDir, testStateDir string

// fakeTor prints what tor --verify-config prints.
const fakeTor = `#!/bin/sh
torrc=
while [ $# -gt 0 ]; do
	case "$1" in -f) torrc=$2; shift ;; esac
	shift
done
echo "Dec 02 06:45:28.233 [notice] Tor 0.4.9.11-fake running on Linux with Libevent 2.1.12-stable."
reason=$(sed -n 's/^# fake tor refuses: //p' "$torrc")
if [ -n "$reason" ]; then
	echo "Dec 02 06:45:28.236 [warn] Failed to parse/validate config: $reason"
	echo "Dec 02 06:45:28.236 [err] Reading config failed--see warnings above."
	exit 1
fi
echo "Configuration was valid"
`

// testSystem is the real host, but for its users and its tor: only
// testUsers exist for the unit tests, whatever the machine has (a numeric
// uid is taken as it is), and tor is fakeTor.
func testSystem() *host.System {
	sys := host.DefaultSystem()
	sys.TorDirs = []string{fakeTorDir}
	sys.StateDir = testStateDir
	sys.LookupUID = func(name string) (uint32, error) {
		if uid, ok := testUsers[name]; ok {
			return uid, nil
		}
		if n, err := strconv.ParseUint(name, 10, 32); err == nil {
			return uint32(n), nil
		}
		return 0, fmt.Errorf("user: unknown user %s", name)
	}
	return sys
}

// relayfw runs the command in-process, on testSystem.
func relayfw(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return relayfwOn(t, testSystem(), args...)
}

// relayfwOn runs the command in-process, on sys.
func relayfwOn(t *testing.T, sys *host.System, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(sys, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExitCodes(t *testing.T) {
	badTorrc := writeFile(t, "torrc", "ExitRelay 1\nExitPolicy accept *:80\nExitPolicy accept *:443-80\n")
	badBool := writeFile(t, "torrc", "IPv6Exit yes\n")
	badQuote := writeFile(t, "torrc", "ExitPolicy \"accept *:80\n")
	badConfig := writeFile(t, "relayfw.toml", "[allow]\ndns = true\nfirewall = \"off\"\n")
	emptyConfig := writeFile(t, "relayfw.toml", "")
	groupWritable := writeFile(t, "torrc", "ORPort 9001\nExitRelay 1\n")
	if err := os.Chmod(groupWritable, 0o664); err != nil {
		t.Fatal(err)
	}
	torRefuses := writeFile(t, "torrc", "ORPort 9001\n# fake tor refuses: Nickname 'bad-name!', nicknames must be between 1 and 19 characters\nNickname bad-name!\n")
	badTimeout := writeFile(t, "relayfw.toml", "[tor]\nverify_timeout = \"soon\"\n")
	groupConfig := writeFile(t, "relayfw.toml", "strict_modes = false\n")
	if err := os.Chmod(groupConfig, 0o664); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		code     int
		stderrRe string // substring expected in the one-line error
	}{
		{"policy ok", []string{"--torrc", exampleTorrc, "--config", emptyConfig, "policy"}, 0, ""},
		{"unknown flag", []string{"--bogus", "policy"}, 64, "unknown flag: --bogus"},
		{"unknown command", []string{"frobnicate"}, 64, "unknown command"},
		{"policy takes no args", []string{"--torrc", exampleTorrc, "policy", "x"}, 64, "unknown command"},
		{"explain needs a target", []string{"--torrc", exampleTorrc, "explain"}, 64, "requires at least 1 arg"},
		{"explain bad target", []string{"--torrc", exampleTorrc, "explain", "203.0.113.5"}, 64, `target "203.0.113.5"`},
		{"explain port 0", []string{"--torrc", exampleTorrc, "explain", "203.0.113.5:0"}, 64, "port from 1 to 65535"},
		{"explain bad format", []string{"--torrc", exampleTorrc, "explain", "--format", "xml", "203.0.113.5:80"}, 64, "--format"},
		{"print bad format", []string{"--torrc", exampleTorrc, "print", "--format", "yaml"}, 64, "--format"},
		{"bad backend", []string{"--backend", "pf", "--torrc", exampleTorrc, "policy"}, 64, "--backend"},
		{"bad policy entry", []string{"--torrc", badTorrc, "--config", emptyConfig, "policy"}, 65, badTorrc + ":3: malformed exit policy entry \"accept *:443-80\""},
		{"bad boolean", []string{"--torrc", badBool, "--config", emptyConfig, "policy"}, 65, badBool + ":1: IPv6Exit"},
		{"bad quoting", []string{"--torrc", badQuote, "--config", emptyConfig, "policy"}, 65, badQuote + ":1:"},
		{"bad --policy", []string{"--torrc", exampleTorrc, "--config", emptyConfig, "--policy", "accept *:65536", "policy"}, 65, "--policy: malformed exit policy entry"},
		{"bad config key", []string{"--torrc", exampleTorrc, "--config", badConfig, "policy"}, 65, badConfig + ":3: unknown key \"allow.firewall\""},
		{"tor refuses", []string{"--torrc", torRefuses, "--config", emptyConfig, "print"}, 65,
			"torrc " + torRefuses + ":3: tor 0.4.9.11-fake refuses this configuration (tor --verify-config): Nickname 'bad-name!'"},
		{"bad verify_timeout", []string{"--torrc", exampleTorrc, "--config", badTimeout, "policy"}, 65, badTimeout + ":2: [tor] verify_timeout \"soon\""},
		{"missing torrc", []string{"--torrc", "/nonexistent/torrc", "--config", emptyConfig, "policy"}, 66, "/nonexistent/torrc"},
		{"missing config", []string{"--torrc", exampleTorrc, "--config", "/nonexistent/relayfw.toml", "policy"}, 66, "/nonexistent/relayfw.toml"},
		{"group-writable torrc", []string{"--torrc", groupWritable, "--config", emptyConfig, "print"}, 65, groupWritable + ": it is writable by its group (owner "},
		{"group-writable config", []string{"--torrc", exampleTorrc, "--config", groupConfig, "policy"}, 65, "config " + groupConfig + ": it is writable by its group"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := relayfw(t, tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tt.code, stderr)
			}
			if tt.code == 0 {
				return
			}
			if stdout != "" {
				t.Errorf("stdout must be empty on error, got %q", stdout)
			}
			if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "relayfw: ") {
				t.Errorf("want one line \"relayfw: ...\" on stderr, got %q", stderr)
			}
			if !strings.Contains(stderr, tt.stderrRe) {
				t.Errorf("stderr %q does not mention %q", stderr, tt.stderrRe)
			}
		})
	}
}

func TestPolicyExample(t *testing.T) {
	code, stdout, stderr := relayfw(t, "--torrc", exampleTorrc, "--config", testConfig, "policy")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	golden(t, "testdata/example.policy", stdout)
}

func TestPolicyFlagReplacesExitPolicy(t *testing.T) {
	code, stdout, stderr := relayfw(t, "--torrc", exampleTorrc, "--config", testConfig, "--policy", "accept *:443,reject *:*", "policy")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if strings.Contains(stdout, "accept *:80") || !strings.Contains(stdout, "accept6 *:443\n") {
		t.Fatalf("--policy did not replace the torrc's ExitPolicy (IPv6Exit 1 still applies):\n%s", stdout)
	}
}

func TestPolicyRejectStar(t *testing.T) {
	torrc := writeFile(t, "torrc", "ExitRelay 0\n")
	code, stdout, _ := relayfw(t, "--torrc", torrc, "--config", testConfig, "policy")
	if code != 0 || stdout != "reject *:*\n" {
		t.Fatalf("exit %d, stdout %q; want the single line \"reject *:*\"", code, stdout)
	}
	code, stdout, _ = relayfw(t, "--torrc", torrc, "--config", testConfig, "explain", "--format", "json", "203.0.113.5:443")
	want := `{"target":"203.0.113.5:443","verdict":"reject","entry":"reject *:*","index":0,"proto":"tcp","firewall":"reject","reason":"rejected by the exit policy","rule":"reject-tcp"}` + "\n"
	if code != 0 || stdout != want {
		t.Fatalf("exit %d, stdout %q, want %q", code, stdout, want)
	}
}

func TestExplainJSON(t *testing.T) {
	code, stdout, stderr := relayfw(t, "--torrc", exampleTorrc, "--config", testConfig,
		"explain", "--format", "json", "203.0.113.5:80", "[2001:db8::1]:25", "10.1.2.3:443", "203.0.113.10:443",
		"203.0.113.11:9001", "192.0.2.53:53", "127.0.0.1:9050")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	_, policyOut, _ := relayfw(t, "--torrc", exampleTorrc, "--config", testConfig, "policy")
	listing := strings.Split(strings.TrimSuffix(policyOut, "\n"), "\n")
	want := []host.Explanation{
		{Target: "203.0.113.5:80", Verdict: "accept", Entry: "accept *:80", Index: 17, Proto: "tcp", Firewall: "accept", Reason: "exit policy", Rule: "exit4"},
		{Target: "[2001:db8::1]:25", Verdict: "reject", Entry: "reject6 *:*", Index: 30, Proto: "tcp", Firewall: "reject", Reason: "rejected by the exit policy", Rule: "reject-tcp"},
		{Target: "10.1.2.3:443", Verdict: "reject", Entry: "reject 10.0.0.0/8:*", Index: 4, Proto: "tcp", Firewall: "reject", Reason: "rejected by the exit policy", Rule: "reject-tcp"},
		{Target: "203.0.113.10:443", Verdict: "reject", Entry: "reject 203.0.113.10:*", Index: 11, Proto: "tcp", Firewall: "reject", Reason: "rejected by the exit policy", Rule: "reject-tcp"},
		// In testdata/tordata's consensus: a relay link on a port the policy rejects.
		{Target: "203.0.113.11:9001", Verdict: "reject", Entry: "reject *:*", Index: 29, Proto: "tcp", Firewall: "accept", Reason: "relay link", Rule: "relay-links4"},
		{Target: "192.0.2.53:53", Verdict: "accept", Entry: "accept *:53", Index: 15, Proto: "tcp", Firewall: "accept", Reason: "host allowance", Rule: "dns-tcp4"},
		{Target: "127.0.0.1:9050", Verdict: "reject", Entry: "reject 127.0.0.0/8:*", Index: 2, Proto: "tcp", Firewall: "accept", Reason: "loopback", Rule: "loopback"},
	}
	var got []host.Explanation
	for _, line := range strings.Split(strings.TrimSuffix(stdout, "\n"), "\n") {
		var e host.Explanation
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if listing[e.Index] != e.Entry {
			t.Errorf("index %d is %q in `relayfw policy`, explain says %q", e.Index, listing[e.Index], e.Entry)
		}
		got = append(got, e)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("explain (-want +got):\n%s", diff)
	}
	// Keys come in the documented order.
	if !strings.HasPrefix(stdout, `{"target":"203.0.113.5:80","verdict":"accept","entry":"accept *:80","index":17,"proto":"tcp","firewall":"accept","reason":"exit policy","rule":"exit4"}`) {
		t.Fatalf("unexpected JSON layout: %s", stdout)
	}
}

func TestPrintGolden(t *testing.T) {
	for format, file := range map[string]string{"nft": "example.nft", "iptables": "example.iptables", "ip6tables": "example.ip6tables"} {
		code, stdout, stderr := relayfw(t, "--torrc", exampleTorrc, "--config", testConfig, "print", "--format", format)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", format, code, stderr)
		}
		golden(t, "testdata/"+file, stdout)
	}
}

// TestPrintInboundGolden: the inbound protection as print shows it, in
// every text format (ipset: the sets iptables' rules refer to) and its
// Ruleset JSON: ORPort 443 on every address (inbound.*), and ORPorts
// bound to addresses, on one family, not listened on, with a DirPort
// (inbound-bound.*).
func TestPrintInboundGolden(t *testing.T) {
	for _, tc := range []struct{ name, torrc string }{
		{"inbound", exampleTorrc},
		{"inbound-bound", "testdata/inbound-bound.torrc"},
	} {
		for _, format := range []string{"nft", "iptables", "ip6tables", "ipset", "json"} {
			code, stdout, stderr := relayfw(t, "--torrc", tc.torrc, "--config", "testdata/"+tc.name+".toml", "print", "--format", format)
			if code != 0 {
				t.Fatalf("%s %s: exit %d: %s", tc.name, format, code, stderr)
			}
			if format == "json" {
				// The Ruleset's inbound object: the rest is example.ruleset.json's.
				var rs ruleset.Ruleset
				if err := json.Unmarshal([]byte(stdout), &rs); err != nil || rs.Inbound == nil {
					t.Fatalf("%s: print --format json: %v, inbound %v", tc.name, err, rs.Inbound)
				}
				data, err := json.MarshalIndent(rs.Inbound, "", "  ")
				if err != nil {
					t.Fatal(err)
				}
				stdout, format = string(data)+"\n", "inbound.json"
			}
			golden(t, "testdata/"+tc.name+"."+format, stdout)
		}
	}
}

func TestPrintJSONGolden(t *testing.T) {
	code, stdout, stderr := relayfw(t, "--torrc", exampleTorrc, "--config", testConfig, "print", "--format", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rs ruleset.Ruleset
	if err := json.Unmarshal([]byte(stdout), &rs); err != nil {
		t.Fatalf("print --format json is not a Ruleset: %v", err)
	}
	if rs.Version != ruleset.RulesetVersion {
		t.Fatalf("version %d", rs.Version)
	}
	golden(t, "testdata/example.ruleset.json", stdout)
}

// golden compares got with the file, or rewrites it with -update.
func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/relayfw -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Fatalf("%s differs (-want +got); if intended, regenerate with go test ./cmd/relayfw -update:\n%s", path, diff)
	}
}

func TestExplainUDP(t *testing.T) {
	code, stdout, stderr := relayfw(t, "--torrc", exampleTorrc, "--config", testConfig,
		"explain", "--proto", "udp", "--format", "json", "192.0.2.53:53", "203.0.113.5:443", "203.0.113.5:123")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var reasons []string
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var e host.Explanation
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatal(err)
		}
		reasons = append(reasons, e.Firewall+" "+e.Reason+" "+e.Rule)
	}
	want := []string{"accept host allowance dns-udp4", "reject default reject reject", "accept host allowance ntp"}
	if diff := cmp.Diff(want, reasons); diff != "" {
		t.Fatal(diff)
	}
	if code, _, _ := relayfw(t, "--torrc", exampleTorrc, "explain", "--proto", "sctp", "192.0.2.1:1"); code != 64 {
		t.Fatalf("--proto sctp: exit %d, want 64", code)
	}
}

// TestTorNotConsulted: without tor, or with [tor] verify = false, relayfw
// judges alone and says so; status says what tor made of the torrcs.
func TestTorNotConsulted(t *testing.T) {
	off := writeFile(t, "relayfw.toml", "[tor]\nverify = false\n")
	noTor := t.TempDir() // no tor there
	tests := []struct {
		name, config, path, want string
	}{
		{"consulted", testConfig, "", ""},
		{"turned off", off, "", `level=INFO msg="tor was not consulted: [tor] verify = false in relayfw.toml; the torrcs were checked by relayfw alone"`},
		{"not installed", testConfig, noTor, `level=WARN msg="tor was not consulted: tor is not installed (no tor in ` + noTor + `); the torrcs were checked by relayfw alone"`},
	}
	if os.Geteuid() != 0 {
		tests[0].want = "relayfw is not running as root" // tor judges as root only
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sys := testSystem()
			if tt.path != "" {
				sys.TorDirs = []string{tt.path}
			}
			code, stdout, stderr := relayfwOn(t, sys, "--torrc", exampleTorrc, "--config", tt.config, "policy")
			if code != 0 || stdout == "" {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if got := strings.Contains(stderr, "tor was not consulted"); got != (tt.want != "") || !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr %q, want %q", stderr, tt.want)
			}
		})
	}
}
