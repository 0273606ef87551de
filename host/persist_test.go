package host

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/relayfw/relayfw/rules"
)

func TestPersistentRecords(t *testing.T) {
	PersistentDir = t.TempDir()
	t.Cleanup(func() { PersistentDir = "/var/lib/relayfw" })

	if _, ok := ReadLastChange(); ok {
		t.Fatal("a last change on a new host")
	}
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	steps := []Change{
		{Kind: ChangeApplied, At: t0},
		{Kind: ChangeRolledBack, Why: RollbackDeadline, At: t0.Add(time.Minute), Window: "w1"},
		{Kind: ChangeApplied, At: t0.Add(2 * time.Minute)},
	}
	for _, c := range steps {
		if err := RecordChange(c); err != nil {
			t.Fatal(err)
		}
	}
	got, ok := ReadLastChange()
	rolled := t0.Add(time.Minute)
	want := Change{Kind: ChangeApplied, At: t0.Add(2 * time.Minute), LastRollback: &rolled}
	if !ok || !cmp.Equal(got, want) {
		t.Fatalf("last change %+v, want %+v (the rollback's time kept)", got, want)
	}

	if _, err := ReadLastGood(); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("last good on a new host: %v", err)
	}
	rs := rules.Ruleset{Version: rules.RulesetVersion, Outbound: []rules.Rule{{Name: "reject", Action: rules.ActionReject}}}
	if err := SaveLastGood("nftables", rs); err != nil {
		t.Fatal(err)
	}
	lg, err := ReadLastGood()
	if err != nil || lg.Backend != "nftables" || !cmp.Equal(lg.Ruleset.Outbound, rs.Outbound) {
		t.Fatalf("last good %+v %v", lg, err)
	}

	if _, ok := ReadRolledBack(); ok {
		t.Fatal("a rollback record on a new host")
	}
	if err := RecordRolledBack(RolledBack{At: t0, Why: RollbackDeadline, Window: "w1"}); err != nil {
		t.Fatal(err)
	}
	if r, ok := ReadRolledBack(); !ok || r.Window != "w1" {
		t.Fatalf("rolled back %+v %v", r, ok)
	}
	if err := ForgetRolledBack(); err != nil {
		t.Fatal(err)
	}
	if err := ForgetRolledBack(); err != nil {
		t.Fatalf("forgetting twice: %v", err)
	}
	if _, ok := ReadRolledBack(); ok {
		t.Fatal("the rollback record stayed")
	}
}
