package host

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/relayfw/relayfw/ruleset"
)

func TestPersistentRecords(t *testing.T) {
	sys := testSystem(t)

	if _, ok := sys.ReadLastChange(); ok {
		t.Fatal("a last change on a new host")
	}
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	steps := []Change{
		{Kind: ChangeApplied, At: t0},
		{Kind: ChangeRolledBack, Why: RollbackDeadline, At: t0.Add(time.Minute), Window: "w1"},
		{Kind: ChangeApplied, At: t0.Add(2 * time.Minute)},
	}
	for _, c := range steps {
		if err := sys.RecordChange(c); err != nil {
			t.Fatal(err)
		}
	}
	got, ok := sys.ReadLastChange()
	rolled := t0.Add(time.Minute)
	want := Change{Kind: ChangeApplied, At: t0.Add(2 * time.Minute), LastRollback: &rolled}
	if !ok || !cmp.Equal(got, want) {
		t.Fatalf("last change %+v, want %+v (the rollback's time kept)", got, want)
	}

	if _, err := sys.ReadLastGood(); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("last good on a new host: %v", err)
	}
	rs := ruleset.Ruleset{Version: ruleset.RulesetVersion, Outbound: []ruleset.Rule{{Name: "reject", Action: ruleset.Reject}}}
	if err := sys.SaveLastGood("nftables", rs); err != nil {
		t.Fatal(err)
	}
	lg, err := sys.ReadLastGood()
	if err != nil || lg.Backend != "nftables" || !cmp.Equal(lg.Ruleset.Outbound, rs.Outbound) {
		t.Fatalf("last good %+v %v", lg, err)
	}

	if _, ok := sys.ReadRolledBack(); ok {
		t.Fatal("a rollback record on a new host")
	}
	if err := sys.RecordRolledBack(RolledBack{At: t0, Why: RollbackDeadline, Window: "w1"}); err != nil {
		t.Fatal(err)
	}
	if r, ok := sys.ReadRolledBack(); !ok || r.Window != "w1" {
		t.Fatalf("rolled back %+v %v", r, ok)
	}
	if err := sys.ForgetRolledBack(); err != nil {
		t.Fatal(err)
	}
	if err := sys.ForgetRolledBack(); err != nil {
		t.Fatalf("forgetting twice: %v", err)
	}
	if _, ok := sys.ReadRolledBack(); ok {
		t.Fatal("the rollback record stayed")
	}
}

// TestRecordsSurviveAnUnwritableStateDir: where /var/lib/relayfw cannot
// be written (read-only, full), a rollback's records are kept in /run:
// the automatic applies must still know the firewall was rolled back.
func TestRecordsSurviveAnUnwritableStateDir(t *testing.T) {
	sys := testSystem(t)
	blocker := filepath.Join(t.TempDir(), "not-a-directory")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	sys.PersistentDir = filepath.Join(blocker, "relayfw") // cannot be created
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	if err := sys.RecordRolledBack(RolledBack{At: at, Why: RollbackDeadline, Window: "w1"}); err == nil || !strings.Contains(err.Error(), "kept in") {
		t.Fatalf("RecordRolledBack: %v, want an error saying where it is kept", err)
	}
	if r, ok := sys.ReadRolledBack(); !ok || r.Window != "w1" {
		t.Fatalf("the rollback's record is lost: %+v %v", r, ok)
	}
	if err := sys.RecordChange(Change{Kind: ChangeRolledBack, Why: RollbackDeadline, At: at, Window: "w1"}); err == nil {
		t.Fatal("RecordChange into an unwritable directory: no error")
	}
	if c, ok := sys.ReadLastChange(); !ok || c.Kind != ChangeRolledBack || c.Window != "w1" {
		t.Fatalf("last change %+v %v", c, ok)
	}
	if err := sys.ForgetRolledBack(); err != nil {
		t.Fatal(err)
	}
	if _, ok := sys.ReadRolledBack(); ok {
		t.Fatal("forgotten, the record stays")
	}
}

// TestLastGoodWrittenOnce: the last good firewall is written when it
// changes (another ruleset, another backend, a record without a digest),
// not by every apply that keeps it.
func TestLastGoodWrittenOnce(t *testing.T) {
	sys := testSystem(t)
	a := policyRuleset(t, "accept *:80,reject *:*")
	b := policyRuleset(t, "accept *:443,reject *:*")
	inode := func() uint64 {
		fi, err := os.Stat(sys.LastGoodPath())
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino // writeAtomic renames a new file over it
	}
	for _, step := range []struct {
		name    string
		backend string
		rs      ruleset.Ruleset
		before  func()
		written bool
	}{
		{"first", "nftables", a, nil, true},
		{"same", "nftables", a, nil, false},
		{"other ruleset", "nftables", b, nil, true},
		{"other backend", "iptables", b, nil, true},
		{"record without a digest", "iptables", b, func() {
			lg, _ := sys.ReadLastGood()
			lg.Digest = ""
			data, _ := json.Marshal(lg)
			_ = os.WriteFile(sys.LastGoodPath(), data, 0o600)
		}, true},
		{"same again", "iptables", b, nil, false},
	} {
		var before uint64
		if step.before != nil {
			step.before()
		}
		if _, err := os.Stat(sys.LastGoodPath()); err == nil {
			before = inode()
		}
		if err := sys.SaveLastGood(step.backend, step.rs); err != nil {
			t.Fatal(err)
		}
		if written := inode() != before; written != step.written {
			t.Fatalf("%s: written %v, want %v", step.name, written, step.written)
		}
		lg, err := sys.ReadLastGood()
		if err != nil || lg.Backend != step.backend || !slices.Equal(lg.Ruleset.ExitMaps[0].Prefixes, step.rs.ExitMaps[0].Prefixes) {
			t.Fatalf("%s: last good %s %v", step.name, lg.Backend, err)
		}
	}
}
