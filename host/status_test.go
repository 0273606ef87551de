package host

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/relayfw/relayfw/firewall/fake"
	"github.com/relayfw/relayfw/ruleset"
)

func TestInboundRuleCause(t *testing.T) {
	for name, want := range map[string]string{
		"inbound": "", "inbound-trusted4": "", "inbound-limited6": "",
		"inbound-blocked4": "blocked", "inbound-minute6": "minute", "inbound-hour4": "hour", "inbound-conns6": "conns",
	} {
		got, ok := inboundRuleCause(name)
		if !ok || got != want {
			t.Errorf("%s: %q %v, want %q", name, got, ok, want)
		}
	}
	for _, name := range []string{"exit4", "extra-inbound4", "relay-links6", "reject"} {
		if _, ok := inboundRuleCause(name); ok {
			t.Errorf("%s taken for an inbound rule", name)
		}
	}
}

// TestStatusWithInvalidInputs: with inputs that cannot be read, status
// still reports the kernel, its counters classed by the ruleset relayfw
// last installed, never in sync, with the inputs' error; on a host that
// never applied it reports what little there is, without an error.
func TestStatusWithInvalidInputs(t *testing.T) {
	sys, nft, _ := fakeHost(t)
	ctx := context.Background()
	inputErr := errors.New("torrc /etc/tor/torrc:3: unknown option \"ExitPolcy\"")

	st, err := sys.GatherStatusInvalid(ctx, nft, inputErr)
	if err != nil {
		t.Fatalf("never applied: %v", err)
	}
	if st.Installed || st.InSync || st.Config.Valid || st.Config.Error != inputErr.Error() || st.LastChange != nil || st.RolledBack != nil {
		t.Errorf("never applied: %+v", st)
	}

	rs := policyRuleset(t, "accept *:80,reject *:*")
	if _, _, err := (Applier{System: sys, StartWatcher: noWatcher}).Apply(ctx, nft, rs, 0); err != nil {
		t.Fatal(err)
	}
	exitRule := ""
	for _, r := range rs.Outbound {
		if r.Class == ruleset.ClassExit && exitRule == "" {
			exitRule = r.Name
		}
	}
	b := nft
	b.Count(exitRule, 3, 180)
	b.Count("reject-tcp", 2, 120)
	for _, tc := range []struct {
		name   string
		gather func() (*Status, error)
		valid  bool
	}{
		{"valid", func() (*Status, error) { return sys.GatherStatus(ctx, b, rs, "") }, true},
		{"invalid", func() (*Status, error) { return sys.GatherStatusInvalid(ctx, b, inputErr) }, false},
	} {
		st, err := tc.gather()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !st.Installed || st.InSync != tc.valid || st.Config.Valid != tc.valid || !st.Exit {
			t.Errorf("%s: installed %v, in sync %v, config %+v, exit %v", tc.name, st.Installed, st.InSync, st.Config, st.Exit)
		}
		if st.Classes[ruleset.ClassExit].Packets != 3 || st.Classes[ruleset.ClassRejectedPolicy].Packets != 2 || st.RuleClass(exitRule) != ruleset.ClassExit {
			t.Errorf("%s: counters not classed by the applied ruleset: %+v", tc.name, st.Classes)
		}
		if st.LastChange == nil || st.LastChange.Kind != ChangeApplied || time.Since(st.LastChange.At) > time.Minute {
			t.Errorf("%s: last change %+v, want applied now", tc.name, st.LastChange)
		}
	}
}

// TestStatusWithInvalidInputsUncomparable: when the ruleset relayfw last
// installed cannot be compared with the kernel, the kernel's facts are
// still reported; with valid inputs the error is the status's.
func TestStatusWithInvalidInputsUncomparable(t *testing.T) {
	sys, nft, _ := fakeHost(t)
	ctx := context.Background()
	rs := policyRuleset(t, "accept *:80,reject *:*")
	if _, _, err := (Applier{System: sys, StartWatcher: noWatcher}).Apply(ctx, nft, rs, 0); err != nil {
		t.Fatal(err)
	}
	b := nft
	b.Count("reject-tcp", 2, 120)
	// It cannot compare the kernel with a ruleset.
	b.Inject(fake.Fault{Op: fake.OpCheck, Err: errors.New("ruleset of an older format")})
	st, err := sys.GatherStatusInvalid(ctx, b, errors.New("torrc t:1: bad"))
	if err != nil || !st.Installed || st.InSync || len(st.Drift) != 0 || st.Classes[ruleset.ClassRejectedPolicy].Packets != 2 {
		t.Errorf("status %+v, %v", st, err)
	}
	if _, err := sys.GatherStatus(ctx, b, rs, ""); err == nil {
		t.Error("GatherStatus hid the backend's error")
	}
}

// TestStatusShowsTheLastChange: the last change, the last rollback and an
// unconfirmed rollback's record reach the status; an apply under a confirm
// window is recorded as pending, not applied, and keeps the last rollback's
// time.
func TestStatusShowsTheLastChange(t *testing.T) {
	sys, nft, _ := fakeHost(t)
	ctx := context.Background()
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	if err := sys.RecordChange(Change{Kind: ChangeRolledBack, Why: RollbackDeadline, At: at, Window: "w1", Detail: "rolled back to no firewall"}); err != nil {
		t.Fatal(err)
	}
	if err := sys.RecordRolledBack(RolledBack{At: at, Why: RollbackDeadline, Window: "w1"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := (Applier{System: sys, StartWatcher: noWatcher}).Apply(ctx, nft, policyRuleset(t, "accept *:80"), time.Hour); err != nil {
		t.Fatal(err)
	}
	st, err := sys.GatherStatus(ctx, nft, policyRuleset(t, "accept *:80"), "")
	if err != nil {
		t.Fatal(err)
	}
	if c := st.LastChange; c == nil || c.Kind != ChangePending || c.Window == "" || c.LastRollback == nil || !c.LastRollback.Equal(at) {
		t.Errorf("last change %+v: an apply --confirm is pending, not applied, and the last rollback's time stays", c)
	}
	if r := st.RolledBack; r == nil || !r.At.Equal(at) || r.Why != RollbackDeadline {
		t.Errorf("rolled back %+v", r)
	}
}
