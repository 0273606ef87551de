package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPathDropIn: the drop-in names each path as systemd reads
// PathChanged=: a space and a backslash as they are, "%" doubled.
func TestPathDropIn(t *testing.T) {
	dir := t.TempDir()
	paths := []string{
		"/etc/relayfw/relayfw.toml",
		"/etc/tor/torrc",
		"/etc/tor/torrc.d",
		"/etc/tor/torrc.d/50 exit ports",
		`/etc/tor/torrc.d/back\slash`,
		`/etc/tor/torrc.d/two\\`,
		"/etc/tor/torrc.d/100%",
		"/etc/tor/torrc.d/%n%i.conf",
		"/etc/tor/torrc.d/ leading space",
		"/etc/tor/torrc.d/ünïcode",
	}
	changed, err := writePathDropIn(dir, paths)
	if err != nil || !changed {
		t.Fatalf("changed %v, %v", changed, err)
	}
	data, err := os.ReadFile(filepath.Join(dir, pathUnit+".d", "50-inputs.conf"))
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "testdata/reapply-path-dropin.conf", string(data))
	if changed, err := writePathDropIn(dir, paths); err != nil || changed {
		t.Errorf("the same paths again: changed %v, %v", changed, err)
	}
}

// TestPathDropInRefuses: a path no PathChanged= line can name is refused
// (exit 65, the file named on one line), and the drop-in is not written.
func TestPathDropInRefuses(t *testing.T) {
	for _, bad := range []string{
		"/etc/tor/torrc.d/10-y\n[Unit]\nWants=poweroff.target",
		"/etc/tor/torrc.d/cr\r",
		"/etc/tor/torrc.d/tab\there",
		"/etc/tor/torrc.d/esc\x1b[31m",
		"/etc/tor/torrc.d/del\x7f",
		"/etc/tor/torrc.d/latin1-\xe9",
		"/etc/tor/torrc.d/trailing space ",
		`/etc/tor/torrc.d/trailing\`,
		`/etc/tor/torrc.d/three\\\`,
	} {
		dir := t.TempDir()
		_, err := writePathDropIn(dir, []string{"/etc/tor/torrc", bad})
		if err == nil {
			t.Errorf("%q: written", bad)
			continue
		}
		if code := exitCode(err); code != exitDataErr {
			t.Errorf("%q: exit %d, want %d", bad, code, exitDataErr)
		}
		if msg := oneLine(err.Error()); strings.ContainsAny(msg, "\n\r") {
			t.Errorf("%q: not one line: %q", bad, msg)
		}
		if _, err := os.Stat(filepath.Join(dir, pathUnit+".d", "50-inputs.conf")); err == nil {
			t.Errorf("%q: the drop-in was written", bad)
		}
	}
}

// TestIncludedFileNameRefused: a file in an %included directory whose
// name a unit cannot hold is refused by every command that reads the
// torrcs, with exit 65 and one line naming it; a hidden one, which tor
// skips, is not.
func TestIncludedFileNameRefused(t *testing.T) {
	emptyConfig := writeFile(t, "relayfw.toml", "")
	for _, tc := range []struct {
		name string
		file string
		code int
	}{
		{"newline", "10-y\n[Unit]\nWants=poweroff.target", 65},
		{"escape sequence", "10-\x1b]0;x\a", 65},
		{"trailing space", "10-x ", 65},
		{"hidden", ".10-y\n[Unit]", 0},
		{"space, backslash, percent", `10 a\b%n`, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			inc := filepath.Join(dir, "torrc.d")
			if err := os.Mkdir(inc, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(inc, tc.file), []byte("ExitPolicy accept *:443\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			torrc := filepath.Join(dir, "torrc")
			if err := os.WriteFile(torrc, []byte("ORPort 9001\nExitRelay 1\n%include "+inc+"\nExitPolicy reject *:*\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			// apply itself is the integration test's, in a namespace: here
			// a regression would change this host's firewall.
			for _, cmd := range [][]string{{"policy"}, {"print"}, {"paths"}, {"paths", "--update-path-unit", "--unit-dir", t.TempDir()}} {
				code, stdout, stderr := relayfw(t, append([]string{"--torrc", torrc, "--config", emptyConfig}, cmd...)...)
				if code != tc.code {
					t.Errorf("%s: exit %d, want %d: %s", cmd[0], code, tc.code, stderr)
					continue
				}
				if tc.code == 0 {
					continue
				}
				if stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "rename it") || !strings.Contains(stderr, "torrc.d/10-") {
					t.Errorf("%s: stdout %q, stderr %q; want one line naming the file", cmd[0], stdout, stderr)
				}
			}
		})
	}
}
