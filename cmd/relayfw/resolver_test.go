package main

import (
	"github.com/relayfw/relayfw/host"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fakeProc makes host.ProcRoot a directory with one process.
func fakeProc(t *testing.T, pid, comm string, uid int) {
	t.Helper()
	root := t.TempDir()
	old := host.ProcRoot
	host.ProcRoot = root
	t.Cleanup(func() { host.ProcRoot = old })
	if comm == "" {
		return
	}
	dir := filepath.Join(root, pid)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	status := "Name:\t" + comm + "\nUid:\t0\t" + strconv.Itoa(uid) + "\t" + strconv.Itoa(uid) + "\t" + strconv.Itoa(uid) + "\n"
	for name, content := range map[string]string{"comm": comm + "\n", "status": status} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLocalResolver(t *testing.T) {
	resolvConf := writeFile(t, "resolv.conf", "nameserver 127.0.0.1\n")
	torrc := writeFile(t, "torrc", "ORPort 9001\nExitRelay 1\nExitPolicy accept *:80,reject *:*\nServerDNSResolvConfFile "+resolvConf+"\n")
	emptyConfig := writeFile(t, "relayfw.toml", "")

	// unbound runs as uid 105: its sockets get DNS anywhere, and explain
	// --user says so; root's do not.
	fakeProc(t, "4242", "unbound", 105)
	code, out, errOut := relayfw(t, "--torrc", torrc, "--config", emptyConfig, "print", "--format", "nft")
	if code != 0 {
		t.Fatalf("print: exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		`meta skuid 105 meta l4proto udp udp dport 53 counter accept comment "relayfw: dns-resolver-udp"`,
		`meta skuid 105 meta l4proto tcp tcp dport 53 counter accept comment "relayfw: dns-resolver-tcp"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("print lacks %q", want)
		}
	}
	code, out, _ = relayfw(t, "--torrc", torrc, "--config", emptyConfig, "explain", "--proto", "udp", "--user", "105", "198.41.0.4:53")
	if code != 0 || !strings.Contains(out, "firewall (udp): accept, host allowance (rule dns-resolver-udp)") {
		t.Errorf("explain --user 105: exit %d %q", code, out)
	}
	code, out, _ = relayfw(t, "--torrc", torrc, "--config", emptyConfig, "explain", "--proto", "udp", "198.41.0.4:53")
	if code != 0 || !strings.Contains(out, "firewall (udp): reject, default reject") {
		t.Errorf("explain as tor: exit %d %q", code, out)
	}

	// No resolver found: a warning with the fix, no allowance.
	fakeProc(t, "", "", 0)
	code, out, errOut = relayfw(t, "--torrc", torrc, "--config", emptyConfig, "print", "--format", "nft")
	if code != 0 || strings.Contains(out, "dns-resolver") || !strings.Contains(errOut, "allow.resolver_user") {
		t.Errorf("no resolver: exit %d, allowance in output: %v, stderr %q", code, strings.Contains(out, "dns-resolver"), errOut)
	}

	// Named in relayfw.toml: used as given.
	cfg := writeFile(t, "relayfw.toml", "[allow]\nresolver_user = \"_tor-a\"\n")
	code, out, errOut = relayfw(t, "--torrc", torrc, "--config", cfg, "print", "--format", "nft")
	if code != 0 || !strings.Contains(out, `meta skuid 201 meta l4proto udp udp dport 53 counter accept comment "relayfw: dns-resolver-udp"`) {
		t.Errorf("resolver_user: exit %d %s", code, errOut)
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
