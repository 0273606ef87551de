package integration

import (
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// forgedConsensus is what tor's user can write into its DataDirectory:
// a relay on a documentation address with a port the exit policy
// rejects (IPv4, and IPv6 on its a line), and a dir-source with DirPort
// 22 and ORPort 3389.
const forgedConsensus = "network-status-version 3 microdesc\nvote-status consensus\n" +
	"dir-source forged 1111111111111111111111111111111111111111 forged.example 192.0.2.99 22 3389\n" +
	"contact nobody\nvote-digest AAAA\n" +
	"r evil AAAAAAAAAAAAAAAAAAAAAAAAAAA 2026-11-25 11:00:00 198.51.100.25 25 0\n" +
	"a [2001:db8:1::25]:25\ns Fast Running Valid\n"

// forgedLinks are the relay links forgedConsensus makes; notLinks are
// next to them, and the exit policy rejects them for everyone.
var (
	forgedLinks = []string{"198.51.100.25:25", "[2001:db8:1::25]:25", "192.0.2.99:22", "192.0.2.99:3389"}
	notLinks    = []string{"198.51.100.26:25", "[2001:db8:1::26]:25", "192.0.2.99:25", "192.0.2.98:22"}
)

// linkTorrc is an exit that rejects the forged links' ports.
const linkTorrc = "ORPort 443\nExitRelay 1\nIPv6Exit 1\nExitPolicy accept *:80,accept *:443,reject *:*\n"

// TestRelayLinksTorsAlone: on every backend, the relay links of a
// consensus tor's user can write are reachable by the sockets of the tor
// instance's user only: with User daemon never by root nor nobody; a tor
// without User runs as root, so root gets them (and relayfw warns), nobody
// and daemon do not. IPv4 and IPv6; check says in sync; explain --user
// says why another user is refused. With two relay instances each user
// gets them, and print loads into the state apply installs.
func TestRelayLinksTorsAlone(t *testing.T) {
	requireRoot(t)
	requireCommand(t, "setpriv")
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel() // each backend in its own namespaces
			t.Run("User", func(t *testing.T) {
				testLinksForUsers(t, b, linkTorrc+"User daemon\n", "daemon", []string{"root", "nobody"})
			})
			t.Run("NoUser", func(t *testing.T) {
				testLinksForUsers(t, b, linkTorrc, "root", []string{"nobody", "daemon"})
			})
			t.Run("TwoRelays", func(t *testing.T) { testLinksTwoRelays(t, b) })
		})
	}
}

// reaches says whether user's socket in ns connects to dst.
func reaches(t *testing.T, ns, user, dst string) bool {
	t.Helper()
	conn, err := dialAsIn(t, ns, user, "", netip.MustParseAddrPort(dst))
	if conn != nil {
		conn.Close()
	}
	return err == nil
}

func testLinksForUsers(t *testing.T, b backend, torrc, torUser string, others []string) {
	tn := newTestNet(t)
	run := b.runner(t, tn)
	dir := t.TempDir()
	cfg := writeTestConfig(t, dir, forgedConsensus)
	path := filepath.Join(dir, "torrc")
	torrc += "DataDirectory " + torDataDir(t, torUser, "") + "\n"
	if err := os.WriteFile(path, []byte(torrc), 0o644); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--backend", b.flag, "--torrc", path, "--config", cfg}
	code, out, errOut := run(append(flags, "apply")...)
	if code != 0 {
		t.Fatalf("apply: exit %d: %s%s", code, out, errOut)
	}
	warnings := strings.Count(errOut, "has no User: tor runs as root, so root's sockets get the relay links")
	if want := map[bool]int{true: 1, false: 0}[torUser == "root"]; warnings != want {
		t.Errorf("apply warned %d times about root's relay links, want %d: %q", warnings, want, errOut)
	}
	for _, dst := range forgedLinks {
		if !reaches(t, tn.relay, torUser, dst) {
			t.Errorf("%s (tor's user) to the relay link %s: refused", torUser, dst)
		}
		for _, u := range others {
			if reaches(t, tn.relay, u, dst) {
				t.Errorf("%s to the relay link %s: connected; relay links are tor's alone", u, dst)
			}
		}
	}
	for _, dst := range notLinks {
		if reaches(t, tn.relay, torUser, dst) {
			t.Errorf("%s to %s, not a relay link: connected", torUser, dst)
		}
	}
	if code, out, _ := run(append(flags, "check")...); code != 0 {
		t.Errorf("check: exit %d %q", code, out)
	}
	var st struct {
		Classes map[string]struct{ Packets uint64 }
	}
	if code, out, errOut := run(append(flags, "status", "--format", "json")...); code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Classes["relay_link"].Packets == 0 {
		t.Errorf("status: exit %d, relay-link packets %+v: %s%s", code, st.Classes["relay_link"], out, errOut)
	}
	code, out, _ = run(append(flags, "explain", "--user", others[0], forgedLinks[0])...)
	if want := "reject, rejected by the exit policy (a relay link, for the sockets of tor's user " + torUser + " only)"; code != 0 || !strings.Contains(out, want) {
		t.Errorf("explain --user %s: exit %d %q, want %q", others[0], code, out, want)
	}
	if code, out, _ := run(append(flags, "explain", forgedLinks[1])...); code != 0 || !strings.Contains(out, "accept, relay link (rule relay-links6)") {
		t.Errorf("explain as tor's user: exit %d %q", code, out)
	}
}

// testLinksTwoRelays: two relay instances, users daemon and nobody, and a
// client instance of user _apt: each instance's user reaches the relay
// links (the client its guards), root and other users (bin) do not; print
// loads into what apply installs (the per-user rules read back equal).
func testLinksTwoRelays(t *testing.T, b backend) {
	requireCommand(t, "id")
	if _, err := exec.Command("id", "-u", "_apt").Output(); err != nil {
		t.Fatal("no _apt user: this test needs Debian's apt, which creates it")
	}
	tn := newTestNet(t)
	env := b.env(t)
	run := b.runner(t, tn)
	dir := t.TempDir()
	cfg := writeTestConfig(t, dir, forgedConsensus)
	flags := []string{"--backend", b.flag, "--config", cfg}
	for name, c := range map[string]struct{ text, user string }{
		"a":      {"ORPort 9001\nExitRelay 0\n", "daemon"},
		"b":      {"ORPort 9002\nExitRelay 1\nExitPolicy accept *:80,reject *:*\n", "nobody"},
		"client": {"SocksPort 9050\n", "_apt"},
	} {
		text := c.text + "User " + c.user + "\n"
		data := torDataDir(t, c.user, forgedConsensus)
		path := filepath.Join(dir, name, "torrc")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text+"DataDirectory "+data+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		flags = append(flags, "--torrc", path)
	}
	mustApply(t, run, flags)
	for _, dst := range forgedLinks {
		for user, want := range map[string]bool{"daemon": true, "nobody": true, "_apt": true, "root": false, "bin": false} {
			if got := reaches(t, tn.relay, user, dst); got != want {
				t.Errorf("%s to the relay link %s: connected=%v, want %v", user, dst, got, want)
			}
		}
	}
	if code, out, _ := run(append(flags, "check")...); code != 0 {
		t.Errorf("check: exit %d %q", code, out)
	}

	// print, loaded by the backend's own tools, is what apply installed.
	applied := b.snapshot(t, tn.relay, env)
	if b.mode == "" {
		code, text, errOut := run(append(flags, "print", "--format", "nft")...)
		if code != 0 || !strings.Contains(text, `meta skuid 65534 meta nfproto ipv6 meta l4proto tcp ip6 daddr . tcp dport @relays6 counter accept comment "relayfw: relay-links6-uid65534"`) {
			t.Fatalf("print: exit %d %s\n%s", code, errOut, text)
		}
		shell(t, tn.relay, nil, "", "nft", "delete", "table", "inet", "relayfw")
		tn.nft(t, tn.relay, text)
	} else {
		code, sets, errOut := run(append(flags, "print", "--format", "ipset")...)
		if code != 0 {
			t.Fatalf("print ipset: exit %d %s", code, errOut)
		}
		var printed []string
		for _, format := range []string{"iptables", "ip6tables"} {
			code, text, errOut := run(append(flags, "print", "--format", format)...)
			if code != 0 || !strings.Contains(text, `-m owner --uid-owner 1 -m set --match-set relayfw-relays`) {
				t.Fatalf("print %s: exit %d %s\n%s", format, code, errOut, text)
			}
			printed = append(printed, text)
		}
		if code, out, errOut := run(append(flags, "remove")...); code != 0 {
			t.Fatalf("remove: exit %d %s%s", code, out, errOut)
		}
		shell(t, tn.relay, env, sets, "ipset", "restore")
		for i, tool := range []string{"iptables-restore", "ip6tables-restore"} {
			shell(t, tn.relay, env, printed[i], tool, "--noflush")
		}
	}
	if loaded := b.snapshot(t, tn.relay, env); loaded != applied {
		t.Errorf("print loaded and apply differ (-apply +print):\n%s", cmp.Diff(applied, loaded))
	}
	if code, out, _ := run(append(flags, "check")...); code != 0 {
		t.Errorf("check after loading print: exit %d %q", code, out)
	}
}
