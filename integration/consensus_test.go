package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The consensus is written by the user tor runs as: relayfw must neither
// let it open the firewall beyond the relay-link rule nor let it hang or
// break an apply. These tests forge it as that user could.
func TestConsensusUntrusted(t *testing.T) {
	requireRoot(t)
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel() // each backend in its own namespaces
			t.Run("ForgedEntries", func(t *testing.T) { testForgedEntries(t, b) })
			t.Run("RefusedKeepsLinks", func(t *testing.T) { testRefusedKeepsLinks(t, b) })
			t.Run("RefusedOnFreshHost", func(t *testing.T) { testRefusedOnFreshHost(t, b) })
		})
	}
}

// torUser is the User of the tests' tor: the user relay links are for.
const torUser = "daemon"

// untrustedTorrc is examples/torrc's exit policy for a tor run as torUser.
func untrustedTorrc(t *testing.T, dir string) string {
	t.Helper()
	text, err := os.ReadFile("../examples/torrc")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "torrc")
	text = append(text, "User "+torUser+"\nDataDirectory "+torDataDir(t, torUser, "")+"\n"...)
	if err := os.WriteFile(path, text, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// relayfwWithin runs relayfw in a namespace and fails the test when it
// has not ended within a minute: a consensus must not hang it.
func relayfwWithin(t *testing.T, ns string, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, relayfwBin}, args...)...)
	cmd.Env = env
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("relayfw %s: still running after a minute (killed): %s%s", strings.Join(args, " "), out.String(), errOut.String())
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String(), errOut.String()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, out.String(), errOut.String()
}

// reachable says whether user connects from the relay namespace to ap.
func reachable(t *testing.T, tn *testNet, user string, ap netip.AddrPort) bool {
	t.Helper()
	c, err := dialAsIn(t, tn.relay, user, "", ap)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// installedLinks are the relay-link sets' contents in the kernel.
func (b backend) installedLinks(t *testing.T, ns string) string {
	t.Helper()
	if b.mode == "" {
		var out strings.Builder
		for _, set := range []string{"relays4", "relays6"} {
			text, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "set", "inet", "relayfw", set).CombinedOutput()
			if err != nil {
				t.Fatalf("nft list set %s: %v\n%s", set, err, text)
			}
			out.Write(text)
		}
		return out.String()
	}
	var lines []string
	for _, l := range strings.Split(ipsetIn(t, ns, "save"), "\n") {
		if strings.HasPrefix(l, "add ") && strings.Contains(l, "relays") {
			lines = append(lines, l)
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// testForgedEntries: a consensus entry on the cloud metadata address and
// one with a zoned IPv6 address (the characters nft and ipset parse) are
// left out with one warning: the metadata address reaches nobody, not even
// tor's user, the apply succeeds and check is in sync.
func testForgedEntries(t *testing.T, b backend) {
	tn := newTestNet(t)
	addrsOnLo(t, tn.net, "169.254.169.254/32")
	env := b.env(t)
	dir := t.TempDir()
	consensus := consensusWith("203.0.113.11:9001", "[2001:db8:1::11]:9001") +
		"r meta AAAAAAAAAAAAAAAAAAAAAAAAAAA 2026-11-25 11:00:00 169.254.169.254 80 0\na [2001:db8::30%x},tcp:1]:443\ns Fast Running Valid\n"
	cfg := writeTestConfig(t, dir, consensus)
	flags := []string{"--backend", b.flag, "--torrc", untrustedTorrc(t, dir), "--config", cfg}

	code, out, errOut := relayfwWithin(t, tn.relay, env, append(flags, "apply")...)
	if code != 0 {
		t.Fatalf("apply: exit %d: %s%s", code, out, errOut)
	}
	if lines := consensusWarnings(errOut); len(lines) != 1 || !strings.Contains(lines[0], "2 entries left out") {
		t.Errorf("apply: want one warning counting the 2 entries left out, got %q", errOut)
	}
	if code, out, errOut := relayfwWithin(t, tn.relay, env, append(flags, "check")...); code != 0 || !strings.Contains(out, "in sync") {
		t.Errorf("check: exit %d: %s%s; want in sync", code, out, errOut)
	}
	meta := netip.MustParseAddrPort("169.254.169.254:80")
	for _, user := range []string{"root", torUser, "nobody"} {
		if reachable(t, tn, user, meta) {
			t.Errorf("%s reaches %s, a forged relay link", user, meta)
		}
	}
	// The relay links work: the probes above could have connected.
	for _, ap := range []string{"203.0.113.11:9001", "[2001:db8:1::11]:9001"} {
		if !reachable(t, tn, torUser, netip.MustParseAddrPort(ap)) {
			t.Errorf("%s does not reach the relay link %s", torUser, ap)
		}
	}
	if links := b.installedLinks(t, tn.relay); strings.Contains(links, "169.254") || strings.Contains(links, "2001:db8::30") {
		t.Errorf("forged links installed:\n%s", links)
	}
}

// refusedConsensus is a way to put something relayfw must refuse where
// tor's consensus belongs.
type refusedConsensus struct {
	name  string
	put   func(t *testing.T, path string)
	state string // what status says of it
}

func refusedConsensuses() []refusedConsensus {
	replace := func(t *testing.T, path string) {
		t.Helper()
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}
	writeRelays := func(t *testing.T, path string, n int, pad int) {
		t.Helper()
		var b strings.Builder
		b.WriteString("network-status-version 3 microdesc\nvote-status consensus\n")
		for i := range n {
			// The benchmarking range 198.18.0.0/15: no packet goes there.
			fmt.Fprintf(&b, "r relay%d AAAAAAAAAAAAAAAAAAAAAAAAAAA 2026-11-25 11:00:00 198.%d.%d.%d 443 0\ns Fast Running Valid\n", i, 18+i/65536, i/256%256, i%256)
		}
		line := "contact " + strings.Repeat("x", 1000) + "\n"
		for b.Len() < pad {
			b.WriteString(line)
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return []refusedConsensus{
		{"FIFO", func(t *testing.T, path string) {
			replace(t, path)
			if err := syscall.Mkfifo(path, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file (a FIFO)"},
		{"SymlinkToUrandom", func(t *testing.T, path string) {
			replace(t, path)
			if err := os.Symlink("/dev/urandom", path); err != nil {
				t.Fatal(err)
			}
		}, "a symbolic link"},
		{"Over50000Relays", func(t *testing.T, path string) { writeRelays(t, path, 50001, 0) }, "more than 50000 relays"},
		{"Over32MiB", func(t *testing.T, path string) { writeRelays(t, path, 1, 32<<20+1) }, "larger than 32 MiB"},
	}
}

// statusConsensus is status --format json's consensus list.
type statusConsensus struct {
	Consensus []struct {
		Instance string `json:"instance"`
		State    string `json:"state"`
		Reason   string `json:"reason"`
	} `json:"consensus"`
	InSync           bool `json:"in_sync"`
	RelayLinksBehind int  `json:"relay_links_behind"`
}

// testRefusedKeepsLinks: a consensus replaced by a FIFO, a symbolic link
// to /dev/urandom, or one over a cap is refused at once with one warning;
// apply and refresh keep the relay links installed and exit 0, check is in
// sync, status says why.
func testRefusedKeepsLinks(t *testing.T, b backend) {
	for _, rc := range refusedConsensuses() {
		t.Run(rc.name, func(t *testing.T) {
			tn := newTestNet(t)
			env := b.env(t)
			dir := t.TempDir()
			cfg := writeTestConfig(t, dir, consensusWith("203.0.113.11:9001", "[2001:db8:1::11]:9001"))
			flags := []string{"--backend", b.flag, "--torrc", untrustedTorrc(t, dir), "--config", cfg}
			if code, out, errOut := relayfwWithin(t, tn.relay, env, append(flags, "apply")...); code != 0 {
				t.Fatalf("apply: exit %d: %s%s", code, out, errOut)
			}
			before := b.installedLinks(t, tn.relay)
			link := netip.MustParseAddrPort("203.0.113.11:9001")
			if !reachable(t, tn, torUser, link) {
				t.Fatalf("the relay link %s does not work", link)
			}

			rc.put(t, filepath.Join(dir, "tordata", "cached-microdesc-consensus"))
			for _, cmd := range [][]string{{"apply"}, {"refresh"}} {
				code, out, errOut := relayfwWithin(t, tn.relay, env, append(flags, cmd...)...)
				if code != 0 {
					t.Fatalf("%s: exit %d: %s%s", cmd[0], code, out, errOut)
				}
				if lines := consensusWarnings(errOut); len(lines) != 1 || !strings.Contains(lines[0], rc.state) {
					t.Errorf("%s: want one warning saying %q, got %q", cmd[0], rc.state, errOut)
				}
				if after := b.installedLinks(t, tn.relay); after != before {
					t.Errorf("%s changed the relay links installed:\n-%s\n+%s", cmd[0], before, after)
				}
			}
			if cmd := "refresh"; !reachable(t, tn, torUser, link) {
				t.Errorf("after %s: the relay link %s is gone", cmd, link)
			}
			if code, out, errOut := relayfwWithin(t, tn.relay, env, append(flags, "check")...); code != 0 || !strings.Contains(out, "in sync") {
				t.Errorf("check: exit %d: %s%s; want in sync", code, out, errOut)
			}
			if code, out, errOut := relayfwWithin(t, tn.relay, env, append(flags, "explain", link.String())...); code != 0 ||
				!strings.Contains(out, "relay link") || strings.Contains(out, "not yet") {
				t.Errorf("explain %s: exit %d: %s%s; want a relay link", link, code, out, errOut)
			}
			code, out, errOut := relayfwWithin(t, tn.relay, env, append(flags, "status")...)
			if code != 0 || !strings.Contains(out, "consensus:  refused: ") || !strings.Contains(out, rc.state) || !strings.Contains(out, "relay links: up to date") {
				t.Errorf("status: exit %d: %s%s; want the refusal said", code, out, errOut)
			}
			var st statusConsensus
			code, out, errOut = relayfwWithin(t, tn.relay, env, append(flags, "status", "--format", "json")...)
			if code != 0 || json.Unmarshal([]byte(out), &st) != nil || len(st.Consensus) != 1 || st.Consensus[0].State != "refused" ||
				!strings.Contains(st.Consensus[0].Reason, rc.state) || !st.InSync || st.RelayLinksBehind != 0 {
				t.Errorf("status --format json: exit %d %+v: %s%s", code, st, out, errOut)
			}
		})
	}
}

// testRefusedOnFreshHost: on a host without relayfw's firewall, a refused
// consensus is like a missing one: the relay links are the directory
// authorities and fallbacks.
func testRefusedOnFreshHost(t *testing.T, b backend) {
	tn := newTestNet(t)
	env := b.env(t)
	dir := t.TempDir()
	cfg := writeTestConfig(t, dir, testConsensus)
	if err := os.Remove(filepath.Join(dir, "tordata", "cached-microdesc-consensus")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "tordata", "cached-microdesc-consensus"), 0o644); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--backend", b.flag, "--torrc", untrustedTorrc(t, dir), "--config", cfg}
	code, out, errOut := relayfwWithin(t, tn.relay, env, append(flags, "apply")...)
	if lines := consensusWarnings(errOut); code != 0 || len(lines) != 1 || !strings.Contains(lines[0], "FIFO") {
		t.Fatalf("apply: exit %d: %s%s; want 0 and one warning", code, out, errOut)
	}
	// moria1's ORPort is in tor's compiled-in authorities.
	if links := b.installedLinks(t, tn.relay); !strings.Contains(links, "128.31.0.39") {
		t.Errorf("the compiled-in authorities are not relay links:\n%s", links)
	}
	if code, out, errOut := relayfwWithin(t, tn.relay, env, append(flags, "check")...); code != 0 {
		t.Errorf("check: exit %d: %s%s", code, out, errOut)
	}
}

// consensusWarnings are a command's stderr lines but the conntrack
// warnings an apply gives on every host left at the kernel's defaults (the
// test namespaces are).
func consensusWarnings(stderr string) []string {
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if l != "" && !strings.Contains(l, "conntrack") {
			lines = append(lines, l)
		}
	}
	return lines
}
