package main

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/relayfw/relayfw/host"

	"github.com/google/go-cmp/cmp"
)

// debianHost lays out Debian's tor files under a temporary directory: the
// default instance (a client, as Debian ships it) and two exit instances
// made by tor-instance-create.
func debianHost(t *testing.T) *host.System {
	t.Helper()
	root := t.TempDir()
	sys := testSystem()
	sys.TorEtcDir, sys.TorShareDir = filepath.Join(root, "etc/tor"), filepath.Join(root, "usr/share/tor")
	files := map[string]string{
		"usr/share/tor/tor-service-defaults-torrc":           "DataDirectory /var/lib/tor\nUser debian-tor\nSocksPort 9050\n",
		"usr/share/tor/tor-service-defaults-torrc-instances": "DataDirectory /var/lib/tor-instances/@@NAME@@\nUser _tor-@@NAME@@\n",
		"etc/tor/torrc":             "# the stock torrc: a client\n",
		"etc/tor/instances/a/torrc": "ORPort 9001\nAddress 203.0.113.10\nExitRelay 1\nExitPolicy accept *:80,accept *:443,reject *:*\n",
		"etc/tor/instances/b/torrc": "ORPort 9002\nAddress 203.0.113.10\nExitRelay 1\nExitPolicy accept *:22,reject *:*\n",
	}
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return sys
}

func TestDebianInstances(t *testing.T) {
	sys := debianHost(t)
	emptyConfig := writeFile(t, "relayfw.toml", "")

	code, out, errOut := relayfwOn(t, sys, "--config", emptyConfig, "policy")
	if code != 0 {
		t.Fatalf("policy: exit %d: %s", code, errOut)
	}
	wantPolicy := []string{
		"# tor instance default (" + filepath.Join(sys.TorEtcDir, "torrc") + ", user debian-tor)", "reject *:*",
		"# tor instance a (" + filepath.Join(sys.TorEtcDir, "instances/a/torrc") + ", user _tor-a)", "reject6 *:*",
		"reject 0.0.0.0/8:*", "reject 169.254.0.0/16:*", "reject 127.0.0.0/8:*", "reject 192.168.0.0/16:*",
		"reject 10.0.0.0/8:*", "reject 172.16.0.0/12:*", "reject 203.0.113.10:*", "accept *:80", "accept *:443", "reject *:*",
		"# tor instance b (" + filepath.Join(sys.TorEtcDir, "instances/b/torrc") + ", user _tor-b)", "reject6 *:*",
		"reject 0.0.0.0/8:*", "reject 169.254.0.0/16:*", "reject 127.0.0.0/8:*", "reject 192.168.0.0/16:*",
		"reject 10.0.0.0/8:*", "reject 172.16.0.0/12:*", "reject 203.0.113.10:*", "accept *:22", "reject *:*",
	}
	if diff := cmp.Diff(wantPolicy, strings.Split(strings.TrimSuffix(out, "\n"), "\n")); diff != "" {
		t.Errorf("policy (-want +got):\n%s", diff)
	}

	code, out, _ = relayfwOn(t, sys, "--config", emptyConfig, "policy", "--instance", "b")
	if code != 0 || !strings.HasPrefix(out, "reject6 *:*\nreject 0.0.0.0/8:*\n") || !strings.HasSuffix(out, "accept *:22\nreject *:*\n") {
		t.Errorf("policy --instance b: exit %d, %q", code, out)
	}
	if code, _, errOut := relayfwOn(t, sys, "--config", emptyConfig, "policy", "--instance", "c"); code != 64 || !strings.Contains(errOut, "have: default, a, b") {
		t.Errorf("policy --instance c: exit %d, %q", code, errOut)
	}

	// Each exit instance's map is looked up for its own user's sockets.
	code, out, errOut = relayfwOn(t, sys, "--config", emptyConfig, "print", "--format", "nft")
	if code != 0 {
		t.Fatalf("print: exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"meta skuid 201 meta nfproto ipv4 meta l4proto tcp ip daddr vmap @exit4_i1",
		"meta skuid 202 meta nfproto ipv4 meta l4proto tcp ip daddr vmap @exit4_i2",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("print lacks %q", want)
		}
	}
	if strings.Contains(out, "skuid 101 meta nfproto ipv4 meta l4proto tcp ip daddr vmap") {
		t.Error("the default instance is a client: it must add no exit rule")
	}
	// It gets the relay links (its guards), as the relays' users do.
	if !strings.Contains(out, "meta skuid 101 meta nfproto ipv4 meta l4proto tcp ip daddr . tcp dport @relays4") {
		t.Error("the default instance is a client: its user must reach the relay links")
	}
	// print is read-only: a missing consensus does not change its answer
	// enough to warn on every call (apply, check and status say it).
	if strings.Contains(errOut, "no cached consensus") {
		t.Errorf("print warns about the consensus: %s", errOut)
	}

	// explain answers per exit instance, as that instance's tor.
	code, out, _ = relayfwOn(t, sys, "--config", emptyConfig, "explain", "198.51.100.9:22")
	want := "instance a: 198.51.100.9:22 reject by entry 10: reject *:*; firewall (tcp): reject, rejected by the exit policy (rule reject-tcp)\n" +
		"instance b: 198.51.100.9:22 accept by entry 8: accept *:22; firewall (tcp): accept, exit policy (rule exit4_i2)\n"
	if code != 0 || out != want {
		t.Errorf("explain: exit %d\n got %q\nwant %q", code, out, want)
	}
}

func TestInstancesOfOneUserRefused(t *testing.T) {
	a := writeFile(t, "torrc", "ORPort 9001\nExitRelay 1\nExitPolicy accept *:80\nUser _tor-a\n")
	b := writeFile(t, "torrc", "ORPort 9002\nExitRelay 1\nExitPolicy accept *:22\nUser _tor-a\n")
	emptyConfig := writeFile(t, "relayfw.toml", "")
	code, _, errOut := relayfw(t, "--torrc", a, "--torrc", b, "--config", emptyConfig, "print")
	if code != 65 || !strings.Contains(errOut, "exit as the same user") {
		t.Errorf("exit %d, %q", code, errOut)
	}
}

func TestDefaultsTorrcFlag(t *testing.T) {
	defaults := writeFile(t, "defaults", "ExitRelay 1\nExitPolicy reject 198.51.100.0/24:*\nORPort 9001\n")
	torrc := writeFile(t, "torrc", "+ExitPolicy accept *:80,reject *:*\nExitPolicyRejectPrivate 0\n")
	emptyConfig := writeFile(t, "relayfw.toml", "")
	code, out, errOut := relayfw(t, "--defaults-torrc", defaults, "--torrc", torrc, "--config", emptyConfig, "policy")
	if code != 0 || out != "reject6 *:*\nreject 198.51.100.0/24:*\naccept *:80\nreject *:*\n" {
		t.Errorf("exit %d, %q %s", code, out, errOut)
	}
	code, _, errOut = relayfw(t, "--defaults-torrc", "/nonexistent/defaults", "--torrc", torrc, "--config", emptyConfig, "policy")
	if code != 66 || !strings.Contains(errOut, "/nonexistent/defaults") {
		t.Errorf("missing defaults file: exit %d, %q", code, errOut)
	}
}

func TestPathsFollowIncludes(t *testing.T) {
	sys := debianHost(t)
	incDir := filepath.Join(sys.TorEtcDir, "torrc.d")
	if err := os.MkdirAll(incDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(incDir, "50-exit.conf"), []byte("Nickname x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sys.TorEtcDir, "instances/a/torrc"), []byte("%include "+incDir+"\nORPort 9001\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := writeFile(t, "relayfw.toml", "")
	code, out, errOut := relayfwOn(t, sys, "--config", cfg, "paths")
	if code != 0 {
		t.Fatalf("paths: exit %d: %s", code, errOut)
	}
	got := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	for _, want := range []string{
		filepath.Join(sys.TorEtcDir, "torrc"), filepath.Join(sys.TorEtcDir, "instances"),
		filepath.Join(sys.TorEtcDir, "instances/a/torrc"), filepath.Join(sys.TorEtcDir, "instances/b/torrc"),
		incDir, filepath.Join(incDir, "50-exit.conf"),
		filepath.Join(sys.TorShareDir, "tor-service-defaults-torrc"), filepath.Join(sys.TorShareDir, "tor-service-defaults-torrc-instances"),
		cfg, "/etc/resolv.conf",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("paths lacks %s:\n%s", want, out)
		}
	}

	unitDir := t.TempDir()
	for i := range 2 { // the second run finds the drop-in unchanged
		if code, _, errOut := relayfwOn(t, sys, "--config", cfg, "paths", "--update-path-unit", "--unit-dir", unitDir); code != 0 {
			t.Fatalf("run %d: exit %d: %s", i, code, errOut)
		}
	}
	dropIn, err := os.ReadFile(filepath.Join(unitDir, "relayfw-reapply.path.d/50-inputs.conf"))
	if err != nil || !strings.Contains(string(dropIn), "\nPathChanged="+filepath.Join(incDir, "50-exit.conf")+"\n") {
		t.Fatalf("drop-in: %v\n%s", err, dropIn)
	}
}

func TestWritePathDropIn(t *testing.T) {
	dir := t.TempDir()
	for i, want := range []bool{true, false} {
		changed, err := writePathDropIn(dir, []string{"/etc/tor/torrc", "/etc/tor/with space"})
		if err != nil || changed != want {
			t.Fatalf("write %d: changed %v, err %v; want changed %v", i, changed, err, want)
		}
	}
	data, _ := os.ReadFile(filepath.Join(dir, "relayfw-reapply.path.d/50-inputs.conf"))
	if !strings.Contains(string(data), `PathChanged=/etc/tor/with space`) {
		t.Errorf("drop-in:\n%s", data)
	}
}

// A file of random bytes, as a torrc, is refused as tor refuses it.
func TestRandomBytesRefused(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	emptyConfig := writeFile(t, "relayfw.toml", "")
	for i := range 20 {
		data := make([]byte, 2048)
		for j := range data {
			data[j] = byte(r.UintN(256))
		}
		torrc := writeFile(t, "torrc", string(data))
		code, out, errOut := relayfw(t, "--torrc", torrc, "--config", emptyConfig, "print")
		if code != 65 || out != "" || !strings.Contains(errOut, torrc+":") {
			t.Fatalf("random torrc %d: exit %d, stdout %q, stderr %q", i, code, out, errOut)
		}
	}
}

func TestConfigInstances(t *testing.T) {
	a := writeFile(t, "torrc", "ORPort 9001\nExitRelay 1\nExitPolicy accept *:80,reject *:*\nExitPolicyRejectPrivate 0\n")
	defaultsB := writeFile(t, "defaults", "User _tor-b\n")
	b := writeFile(t, "torrc", "ORPort 9002\nExitRelay 1\nExitPolicy accept *:443,reject *:*\nExitPolicyRejectPrivate 0\n")
	cfg := writeFile(t, "relayfw.toml", "[[instance]]\nname = \"web\"\ntorrc = \""+a+"\"\n\n[[instance]]\nname = \"tls\"\ntorrc = \""+b+"\"\ndefaults_torrc = \""+defaultsB+"\"\n")
	code, out, errOut := relayfw(t, "--config", cfg, "policy")
	want := "# tor instance web (" + a + ", as root)\nreject6 *:*\naccept *:80\nreject *:*\n" +
		"# tor instance tls (" + b + ", user _tor-b)\nreject6 *:*\naccept *:443\nreject *:*\n"
	if code != 0 || out != want {
		t.Fatalf("exit %d %s\n got %q\nwant %q", code, errOut, out, want)
	}
	// web has no User: with several instances, tor runs it as root.
	if !strings.Contains(errOut, "tor instance web") || !strings.Contains(errOut, "runs it as root") {
		t.Errorf("warnings: %s", errOut)
	}
}
