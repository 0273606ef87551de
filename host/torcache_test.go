package host

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relayfw/relayfw/config"
)

// countingTor accepts every configuration but for a torrc line "# refuse",
// and counts its runs in the file runs.
const countingTor = `#!/bin/sh
echo run >> "$(dirname "$0")/runs"
while [ $# -gt 0 ]; do
	case "$1" in -f) torrc=$2; shift ;; esac
	shift
done
echo "Dec 02 06:45:28.233 [notice] Tor 0.4.9.11-fake running on Linux."
if grep -q '^# refuse' "$torrc"; then
	echo "Dec 02 06:45:28.236 [warn] Failed to parse/validate config: Nickname is bad"
	exit 1
fi
echo "Configuration was valid"
`

// TestRememberedVerdict: tor's acceptance is remembered while nothing it
// depends on changes, and asked again when anything does; a refusal is
// never remembered, nor a verdict another user could have written.
func TestRememberedVerdict(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: relayfw remembers tor's verdicts only as root")
	}
	sys := testSystem(t)
	torDir, dir := t.TempDir(), t.TempDir()
	tor := filepath.Join(torDir, "tor")
	if err := os.WriteFile(tor, []byte(countingTor), 0o755); err != nil {
		t.Fatal(err)
	}
	torrc, data := filepath.Join(dir, "torrc"), filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	text := "DataDirectory " + data + "\nExitRelay 1\nExitPolicy accept *:80,reject *:*\n"
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(torrc, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(text)
	runs := func() int {
		b, _ := os.ReadFile(filepath.Join(torDir, "runs"))
		return strings.Count(string(b), "run")
	}
	load := func() error {
		t.Helper()
		_, err := Load(context.Background(), Options{Torrcs: []string{torrc}, Config: config.Config{}, System: sys,
			Tor: TorJudge{Path: tor}, TorrcsOnly: true})
		return err
	}
	verdictFile := func() string {
		m, _ := filepath.Glob(filepath.Join(sys.StateDir, "tor-verdict-*.json"))
		if len(m) != 1 {
			t.Fatalf("verdict files %v", m)
		}
		return m[0]
	}
	for _, step := range []struct {
		name   string
		change func()
		asked  bool // tor ran
		fails  bool
	}{
		{"first time", func() {}, true, false},
		{"nothing changed", func() {}, false, false},
		{"nothing changed again", func() {}, false, false},
		{"torrc written again, same text", func() { write(text) }, true, false},
		{"remembered", func() {}, false, false},
		{"DataDirectory's mode", func() { _ = os.Chmod(data, 0o750) }, true, false},
		{"tor replaced", func() { _ = os.WriteFile(tor, []byte(countingTor+"\n"), 0o755) }, true, false},
		{"verdict too old", func() {
			var v rememberedVerdict
			b, _ := os.ReadFile(verdictFile())
			_ = json.Unmarshal(b, &v)
			v.At = v.At.Add(-VerdictMaxAge - time.Minute)
			b, _ = json.Marshal(v)
			_ = os.WriteFile(verdictFile(), b, 0o600)
		}, true, false},
		{"verdict writable by others", func() { _ = os.Chmod(verdictFile(), 0o666) }, true, false},
		{"refused", func() { write(text + "# refuse\n") }, true, true},
		{"refused again: asked again", func() {}, true, true},
	} {
		before := runs()
		step.change()
		err := load()
		if (err != nil) != step.fails {
			t.Fatalf("%s: %v", step.name, err)
		}
		if asked := runs() > before; asked != step.asked {
			t.Fatalf("%s: tor asked %v, want %v", step.name, asked, step.asked)
		}
	}
}
