package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// withUsers adds users to testUsers for one test.
func withUsers(t *testing.T, users map[string]uint32) {
	t.Helper()
	for name, uid := range users {
		testUsers[name] = uid
	}
	t.Cleanup(func() {
		for name := range users {
			delete(testUsers, name)
		}
	})
}

// runAs starts a copy of sleep under the given name, so that the process
// list shows a program of that name.
func runAs(t *testing.T, name string) {
	t.Helper()
	data, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
}

// TestLocalResolver: when resolv.conf points at loopback, the resolver's
// DNS allowance goes to allow.resolver_user, else to the service user of a
// resolver package from the password database, never to whoever runs a
// program of a resolver's name.
func TestLocalResolver(t *testing.T) {
	resolvConf := writeFile(t, "resolv.conf", "nameserver 127.0.0.1\n")
	torrc := writeFile(t, "torrc", "ORPort 9001\nExitRelay 1\nExitPolicy accept *:80,reject *:*\nServerDNSResolvConfFile "+resolvConf+"\n")
	emptyConfig := writeFile(t, "relayfw.toml", "")
	namedConfig := writeFile(t, "relayfw.toml", "[allow]\nresolver_user = \"_tor-a\"\n")
	for _, tc := range []struct {
		name    string
		users   map[string]uint32
		process string // a program of this name runs (as root)
		config  string
		uid     string // the uid that gets DNS anywhere; "": none
		warn    bool   // the warning that says to set allow.resolver_user
	}{
		{"unbound's user", map[string]uint32{"unbound": 105}, "", emptyConfig, "105", false},
		{"bind's user", map[string]uint32{"bind": 106}, "", emptyConfig, "106", false},
		{"pdns's user", map[string]uint32{"pdns": 107}, "", emptyConfig, "107", false},
		{"no resolver user", nil, "", emptyConfig, "", true},
		{"a program named unbound grants nothing", nil, "unbound", emptyConfig, "", true},
		{"a program named named grants nothing", nil, "named", emptyConfig, "", true},
		{"allow.resolver_user", map[string]uint32{"unbound": 105}, "unbound", namedConfig, "201", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			withUsers(t, tc.users)
			if tc.process != "" {
				runAs(t, tc.process)
			}
			code, out, errOut := relayfw(t, "--torrc", torrc, "--config", tc.config, "print", "--format", "nft")
			if code != 0 {
				t.Fatalf("print: exit %d: %s", code, errOut)
			}
			if warned := strings.Contains(errOut, "allow.resolver_user"); warned != tc.warn {
				t.Errorf("warning about allow.resolver_user: %v, want %v: %q", warned, tc.warn, errOut)
			}
			if tc.uid == "" {
				if strings.Contains(out, "dns-resolver") {
					t.Errorf("a resolver allowance without a resolver user:\n%s", out)
				}
				return
			}
			for _, want := range []string{
				`meta skuid ` + tc.uid + ` meta l4proto udp udp dport 53 counter accept comment "relayfw: dns-resolver-udp"`,
				`meta skuid ` + tc.uid + ` meta l4proto tcp tcp dport 53 counter accept comment "relayfw: dns-resolver-tcp"`,
			} {
				if !strings.Contains(out, want) {
					t.Errorf("print lacks %q", want)
				}
			}
			// explain --user answers as the kernel does: the resolver's
			// user reaches any name server, tor does not.
			code, out, _ = relayfw(t, "--torrc", torrc, "--config", tc.config, "explain", "--proto", "udp", "--user", tc.uid, "198.41.0.4:53")
			if code != 0 || !strings.Contains(out, "firewall (udp): accept, host allowance (rule dns-resolver-udp)") {
				t.Errorf("explain --user %s: exit %d %q", tc.uid, code, out)
			}
			code, out, _ = relayfw(t, "--torrc", torrc, "--config", tc.config, "explain", "--proto", "udp", "198.41.0.4:53")
			if code != 0 || !strings.Contains(out, "firewall (udp): reject, default reject") {
				t.Errorf("explain as tor: exit %d %q", code, out)
			}
		})
	}
}

func TestUpdatesAllowance(t *testing.T) {
	torrc := writeFile(t, "torrc", "ORPort 9001\nExitRelay 1\nExitPolicy accept *:22,reject *:*\n")
	cfg := writeFile(t, "relayfw.toml", "[allow]\nresolvers = [\"192.0.2.53\"]\n")
	code, out, _ := relayfw(t, "--torrc", torrc, "--config", cfg, "explain", "--user", "_apt", "198.51.100.9:443")
	if code != 0 || !strings.Contains(out, "firewall (tcp): accept, host allowance (rule updates)") {
		t.Errorf("explain --user _apt: exit %d %q", code, out)
	}
	off := writeFile(t, "relayfw.toml", "[allow]\nresolvers = [\"192.0.2.53\"]\nupdates = false\n")
	code, out, _ = relayfw(t, "--torrc", torrc, "--config", off, "explain", "--user", "_apt", "198.51.100.9:443")
	if code != 0 || !strings.Contains(out, "firewall (tcp): reject") {
		t.Errorf("updates = false: exit %d %q", code, out)
	}
}

func TestNotAnExitSaysSo(t *testing.T) {
	torrc := writeFile(t, "torrc", "ORPort 9001\nExitRelay 0\n")
	cfg := writeFile(t, "relayfw.toml", "[allow]\nresolvers = [\"192.0.2.53\"]\n")
	code, _, errOut := relayfw(t, "--torrc", torrc, "--config", cfg, "print")
	if code != 0 || !strings.Contains(errOut, "not an exit (a non-exit relay (guard or middle))") || !strings.Contains(errOut, "package updates") {
		t.Errorf("print of a middle: exit %d, stderr %q", code, errOut)
	}
	bridge := writeFile(t, "torrc", "ORPort 9001\nBridgeRelay 1\n")
	if code, _, errOut := relayfw(t, "--torrc", bridge, "--config", cfg, "print"); code != 0 || !strings.Contains(errOut, "not an exit (a bridge)") {
		t.Errorf("print of a bridge: exit %d, stderr %q", code, errOut)
	}
}
