package main

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/host"
)

// TestStatusLines: the config line, the in-sync line while the config is
// invalid, and the lines on the last change, the last rollback and an
// unconfirmed rollback's record.
func TestStatusLines(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	earlier := at.Add(-time.Hour)
	if got := configLine(host.ConfigStatus{Valid: true}); got != "valid" {
		t.Errorf("config line %q", got)
	}
	if got := configLine(host.ConfigStatus{Error: "torrc /etc/tor/torrc:3: unknown option"}); got != "invalid: torrc /etc/tor/torrc:3: unknown option" {
		t.Errorf("config line %q", got)
	}
	for _, tc := range []struct {
		name string
		st   host.Status
		want string
	}{
		{"not installed", host.Status{}, "no, the config is invalid"},
		{"as installed", host.Status{Installed: true}, "no, the config is invalid (the kernel holds what relayfw last installed)"},
		{"drift", host.Status{Installed: true, Drift: []firewall.Drift{{Object: "chain output", Kind: firewall.Missing}, {Object: "set relays4", Kind: firewall.Missing}}}, "no, the config is invalid, and the kernel has 2 differences from the firewall relayfw last installed (status --format json lists them)"},
	} {
		if got := invalidSyncLine(&tc.st); got != tc.want {
			t.Errorf("%s: in sync %q, want %q", tc.name, got, tc.want)
		}
	}
	for _, tc := range []struct {
		name string
		st   host.Status
		want []string
	}{
		{"none", host.Status{}, nil},
		{"applied", host.Status{LastChange: &host.Change{Kind: host.ChangeApplied, At: at}},
			[]string{"last change: applied at 2026-12-01T10:00:00Z"}},
		{"applied after a rollback", host.Status{LastChange: &host.Change{Kind: host.ChangeApplied, At: at, LastRollback: &earlier}},
			[]string{"last change: applied at 2026-12-01T10:00:00Z", "last rollback: 2026-12-01T09:00:00Z"}},
		{"pending", host.Status{LastChange: &host.Change{Kind: host.ChangePending, At: at, Window: "2026-12-01T10:01:00Z"}},
			[]string{"last change: pending at 2026-12-01T10:00:00Z, window until 2026-12-01T10:01:00Z"}},
		{"rolled back at the deadline", host.Status{
			LastChange: &host.Change{Kind: host.ChangeRolledBack, Why: host.RollbackDeadline, At: at, Detail: "rolled back to no firewall", LastRollback: &at},
			RolledBack: &host.RolledBack{At: at, Why: host.RollbackDeadline}},
			[]string{"last change: rolled back at 2026-12-01T10:00:00Z (not confirmed by the deadline): rolled back to no firewall",
				"rolled back: at 2026-12-01T10:00:00Z (not confirmed by the deadline); the torrc still holds that change: since then the automatic applies (boot, relayfw-reapply) keep the last good firewall, until an operator runs relayfw apply"}},
		{"rolled back by command", host.Status{LastChange: &host.Change{Kind: host.ChangeRolledBack, Why: host.RollbackCommand, At: at, LastRollback: &at}},
			[]string{"last change: rolled back at 2026-12-01T10:00:00Z (relayfw rollback)"}},
		{"apply failed", host.Status{LastChange: &host.Change{Kind: host.ChangeRolledBack, Why: host.RollbackFailure, At: at, LastRollback: &at}},
			[]string{"last change: rolled back at 2026-12-01T10:00:00Z (the apply failed; what it changed was restored)"}},
		{"fallback", host.Status{LastChange: &host.Change{Kind: host.ChangeFallback, At: at, Detail: "the last good firewall"}},
			[]string{"last change: fallback at 2026-12-01T10:00:00Z: the last good firewall"}},
		{"removed", host.Status{LastChange: &host.Change{Kind: host.ChangeRemoved, At: at}},
			[]string{"last change: removed at 2026-12-01T10:00:00Z"}},
	} {
		if diff := cmp.Diff(tc.want, lastChangeLines(&tc.st)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
}

// TestCheckExitCodes: the exit codes are fixed in the design's order (4,
// 5), and check returns the most severe of what it found: drift (1), the
// running tor's policy (4), relay links behind (3).
func TestCheckExitCodes(t *testing.T) {
	if exitPolicyDiffers != 4 || exitRolledBack != 5 {
		t.Errorf("exit codes %d, %d: want 4 and 5", exitPolicyDiffers, exitRolledBack)
	}
	for _, tc := range []struct {
		found []int
		want  int
	}{
		{nil, exitOK},
		{[]int{exitLinksBehind}, exitLinksBehind},
		{[]int{exitLinksBehind, exitPolicyDiffers}, exitPolicyDiffers},
		{[]int{exitPolicyDiffers, exitFailed}, exitFailed},
		{[]int{exitLinksBehind, exitFailed}, exitFailed},
		{[]int{exitLinksBehind, exitPolicyDiffers, exitFailed}, exitFailed},
	} {
		if got := mostSevere(tc.found...); got != tc.want {
			t.Errorf("mostSevere(%v) = %d, want %d", tc.found, got, tc.want)
		}
	}
	if !strings.Contains(newCheckCommand(&globals{}).Long, "1 (drift),\nthen 4") {
		t.Error("check's help does not say the order of its exit codes")
	}
}

// TestWritePublished: status and check name the instance on each line of
// what clients believe of it.
func TestWritePublished(t *testing.T) {
	zero := 0
	var b strings.Builder
	writePublished(&b, []host.PublishedState{
		{Instance: "exitA", InConsensus: true, Summary: "accept 80,443", Summary6: "reject 1-65535", FirewallSummary6: "reject 1-65535", PortsRejected: &zero},
		{Instance: "exitB", Why: "not in the cached consensus (new relay, or not yet published): /var/lib/tor-instances/exitB/cached-microdesc-consensus"},
	})
	want := "published:  exitA: summary accept 80,443 matches the firewall\n" +
		"published:  exitB: not in the cached consensus (new relay, or not yet published): /var/lib/tor-instances/exitB/cached-microdesc-consensus\n"
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
