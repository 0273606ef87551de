package host

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/firewall/fake"
)

// TestRecover: what every relayfw that takes the lock decides about the
// state a dead process left, on fake backends.
func TestRecover(t *testing.T) {
	ctx := context.Background()
	var sys *System // each case's host
	for _, tc := range []struct {
		name string
		// setup leaves a state behind (A installed before, B after).
		setup func(t *testing.T, nft *fake.Backend, started *int)
		// after, with what Recover said.
		check func(t *testing.T, nft *fake.Backend, msg string, started int)
	}{
		{"nothing to do", func(t *testing.T, nft *fake.Backend, _ *int) {},
			func(t *testing.T, nft *fake.Backend, msg string, started int) {
				if msg != "" || started != 0 || !exits(nft, 80) {
					t.Fatalf("said %q, started %d watchers", msg, started)
				}
			}},
		{"deadline passed, watcher dead: rolled back now", func(t *testing.T, nft *fake.Backend, _ *int) {
			openWindow(t, sys, nft, 50*time.Millisecond, noWatcher)
			time.Sleep(60 * time.Millisecond)
		}, func(t *testing.T, nft *fake.Backend, msg string, started int) {
			if !strings.Contains(msg, "not confirmed by its deadline") || !strings.Contains(msg, "rolled back to the firewall applied at") {
				t.Fatalf("said %q", msg)
			}
			if !exits(nft, 80) || exits(nft, 443) {
				t.Fatal("B is still installed")
			}
			c, ok := sys.ReadLastChange()
			if !ok || c.Kind != ChangeRolledBack || c.Why != RollbackDeadline || c.Window == "" {
				t.Fatalf("last change %+v", c)
			}
			if _, rolled := sys.WindowRolledBack(c.Window); !rolled {
				t.Fatal("the window does not read as rolled back")
			}
			if r, ok := sys.ReadRolledBack(); !ok || r.Window != c.Window || r.Why != RollbackDeadline {
				t.Fatalf("rolled-back record %+v %v", r, ok)
			}
			if started != 0 {
				t.Fatal("a watcher was started for a window past its deadline")
			}
		}},
		{"deadline passed, watcher alive: rolled back now", func(t *testing.T, nft *fake.Backend, _ *int) {
			openWindow(t, sys, nft, 50*time.Millisecond, selfWatcher)
			time.Sleep(60 * time.Millisecond)
		}, func(t *testing.T, nft *fake.Backend, msg string, started int) {
			if !exits(nft, 80) || exits(nft, 443) || !strings.Contains(msg, "rolled back") {
				t.Fatalf("said %q; B still installed: %v", msg, exits(nft, 443))
			}
		}},
		{"before the deadline, watcher dead: restarted", func(t *testing.T, nft *fake.Backend, _ *int) {
			openWindow(t, sys, nft, time.Hour, noWatcher)
		}, func(t *testing.T, nft *fake.Backend, msg string, started int) {
			if started != 1 || !strings.Contains(msg, "restarted the rollback watcher") {
				t.Fatalf("said %q, started %d watchers", msg, started)
			}
			if !exits(nft, 443) {
				t.Fatal("B was rolled back before its deadline")
			}
			if p, err := sys.ReadPending(); err != nil || p.Watcher != os.Getpid() {
				t.Fatalf("the new watcher is not recorded: %+v %v", p, err)
			}
		}},
		{"before the deadline, watcher alive: left alone", func(t *testing.T, nft *fake.Backend, _ *int) {
			openWindow(t, sys, nft, time.Hour, selfWatcher)
		}, func(t *testing.T, nft *fake.Backend, msg string, started int) {
			if msg != "" || started != 0 || !exits(nft, 443) {
				t.Fatalf("said %q, started %d watchers", msg, started)
			}
		}},
		{"a plain apply died midway: undone", func(t *testing.T, nft *fake.Backend, _ *int) {
			// What Apply writes before the kernel changes, then the
			// kernel changed, then the process was killed.
			j, err := sys.previousOf(nft, sys.journalPreviousPath())
			if err != nil {
				t.Fatal(err)
			}
			if err := writeJSON(sys.JournalPath(), j); err != nil {
				t.Fatal(err)
			}
			b := policyRuleset(t, "accept *:443,reject *:*")
			nft.Install(b)
		}, func(t *testing.T, nft *fake.Backend, msg string, started int) {
			if !strings.Contains(msg, "an apply was interrupted: rolled back to the firewall applied at") || !exits(nft, 80) || exits(nft, 443) {
				t.Fatalf("said %q; A installed %v", msg, exits(nft, 80))
			}
			if _, err := os.Stat(sys.JournalPath()); !errors.Is(err, os.ErrNotExist) {
				t.Fatal("the journal is left")
			}
			if sys.RecoveryDue() {
				t.Fatal("recovery still due")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var nft *fake.Backend
			sys, nft, _ = fakeHost(t)
			if _, _, err := (Applier{System: sys}).Apply(ctx, nft, policyRuleset(t, "accept *:80,reject *:*"), 0); err != nil {
				t.Fatal(err)
			}
			started := 0
			tc.setup(t, nft, &started)
			ap := Applier{System: sys, StartWatcher: func(*Pending) (int, error) { started++; return os.Getpid(), nil }}
			msg, err := ap.Recover(ctx)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, nft, msg, started)
			if again, err := ap.Recover(ctx); err != nil || (again != "" && !strings.Contains(msg, "restarted")) {
				t.Fatalf("a second Recover: %q %v", again, err)
			}
		})
	}
}

// openWindow applies B (accept 443) with a confirm window of d.
func openWindow(t *testing.T, sys *System, nft *fake.Backend, d time.Duration, watcher func(*Pending) (int, error)) {
	t.Helper()
	if _, _, err := (Applier{System: sys, StartWatcher: watcher}).Apply(context.Background(), nft, policyRuleset(t, "accept *:443,reject *:*"), d); err != nil {
		t.Fatal(err)
	}
}

// TestWatcherStartsFirst: the watcher is started and recorded before the
// kernel changes; when neither the apply nor the restore works, the
// window stays for the watcher.
func TestWatcherStartsFirst(t *testing.T) {
	sys, nft, _ := fakeHost(t)
	ctx := context.Background()
	if _, _, err := (Applier{System: sys}).Apply(ctx, nft, policyRuleset(t, "accept *:80,reject *:*"), 0); err != nil {
		t.Fatal(err)
	}
	sawOld := false
	ap := Applier{System: sys, StartWatcher: func(p *Pending) (int, error) {
		q, err := sys.ReadPending()
		sawOld = err == nil && q.Deadline.Equal(p.Deadline) && exits(nft, 80) && !exits(nft, 443)
		return os.Getpid(), nil
	}}
	openWindowWith(t, ap, nft)
	if !sawOld {
		t.Fatal("the watcher was started after the kernel changed, or before the pending record")
	}
	if _, err := sys.Confirm(); err != nil {
		t.Fatal(err)
	}
	if lg, err := sys.ReadLastGood(); err != nil || !exits(holding(lg.Ruleset), 443) {
		t.Fatalf("confirm did not keep B as the last good firewall: %v", err)
	}

	// The kernel refuses C halfway and the backend could not undo it,
	// nor can the restore of B be done: the window stays open, its
	// watcher tries again at the deadline.
	nft.Inject(fake.Fault{Op: fake.OpApply, Err: &firewall.NotRestoredError{Err: errors.New("kernel says no")}})
	_, _, err := ap.Apply(ctx, nft, policyRuleset(t, "accept *:22,reject *:*"), time.Hour)
	if err == nil || !strings.Contains(err.Error(), "kernel says no") || !strings.Contains(err.Error(), "the watcher tries again") {
		t.Fatalf("apply: %v", err)
	}
	if _, err := sys.ReadPending(); err != nil {
		t.Fatalf("the window was closed with nothing restored: %v", err)
	}
}

// TestFailedConfirmRestores: under --confirm, an apply the kernel refused
// halfway, which the backend could not undo, restores what it replaced and
// says so.
func TestFailedConfirmRestores(t *testing.T) {
	sys, nft, _ := fakeHost(t)
	ctx := context.Background()
	if _, _, err := (Applier{System: sys}).Apply(ctx, nft, policyRuleset(t, "accept *:80,reject *:*"), 0); err != nil {
		t.Fatal(err)
	}
	// The fake fails only the new ruleset's apply, and changed the kernel
	// before it failed.
	nft.Inject(fake.Fault{Op: fake.OpApply, Err: &firewall.NotRestoredError{Err: errors.New("half applied")}, Times: 1, Halfway: true})
	_, _, err := (Applier{System: sys, StartWatcher: selfWatcher}).Apply(ctx, nft, policyRuleset(t, "accept *:443,reject *:*"), time.Hour)
	if err == nil || !strings.Contains(err.Error(), "half applied") || !strings.Contains(err.Error(), "rolled back to the firewall applied at") {
		t.Fatalf("apply: %v", err)
	}
	if !exits(nft, 80) || exits(nft, 443) {
		t.Fatal("the previous firewall was not restored")
	}
	if _, err := sys.ReadPending(); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the window stays open")
	}
	if c, _ := sys.ReadLastChange(); c.Kind != ChangeRolledBack || c.Why != RollbackFailure {
		t.Fatalf("last change %+v", c)
	}
	if _, ok := sys.ReadRolledBack(); ok {
		t.Fatal("a failed apply keeps the automatic applies on the last good firewall")
	}
}

// TestFailedConfirmAllOrNothing: under --confirm, an apply the backend
// refused as a whole (it left the firewall it found) closes the window
// without a rollback: re-applying the previous ruleset would drop what
// relayfw did not install.
func TestFailedConfirmAllOrNothing(t *testing.T) {
	sys, nft, _ := fakeHost(t)
	ctx := context.Background()
	if _, _, err := (Applier{System: sys}).Apply(ctx, nft, policyRuleset(t, "accept *:80,reject *:*"), 0); err != nil {
		t.Fatal(err)
	}
	before := nft.Calls(fake.OpApply)
	nft.Inject(fake.Fault{Op: fake.OpApply, Err: errors.New("kernel says no")})
	_, _, err := (Applier{System: sys, StartWatcher: selfWatcher}).Apply(ctx, nft, policyRuleset(t, "accept *:443,reject *:*"), time.Hour)
	if err == nil || !strings.Contains(err.Error(), "kernel says no") {
		t.Fatalf("apply: %v", err)
	}
	if nft.Calls(fake.OpApply) != before+1 {
		t.Fatalf("%d applies after the refused one, want none (no rollback of an unchanged firewall)", nft.Calls(fake.OpApply)-before-1)
	}
	if !exits(nft, 80) || exits(nft, 443) {
		t.Fatal("the firewall is not the one before")
	}
	if _, err := sys.ReadPending(); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the window stays open")
	}
	if c, _ := sys.ReadLastChange(); c.Kind != ChangeRolledBack || c.Why != RollbackFailure {
		t.Fatalf("last change %+v", c)
	}
}

// TestConfirmAfterTheDeadline is refused; a rollback record keeps the
// automatic applies off the torrc's firewall until a manual apply.
func TestConfirmAfterTheDeadline(t *testing.T) {
	sys, nft, _ := fakeHost(t)
	ctx := context.Background()
	if _, _, err := (Applier{System: sys}).Apply(ctx, nft, policyRuleset(t, "accept *:80,reject *:*"), 0); err != nil {
		t.Fatal(err)
	}
	openWindow(t, sys, nft, 30*time.Millisecond, selfWatcher)
	time.Sleep(40 * time.Millisecond)
	var late *LateError
	if _, err := sys.Confirm(); !errors.As(err, &late) {
		t.Fatalf("confirm after the deadline: %v", err)
	}
	if _, err := (Applier{System: sys}).Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := sys.ReadRolledBack(); !ok {
		t.Fatal("no rolled-back record")
	}
	// An automatic apply leaves it; a manual one that stands clears it.
	if _, _, err := (Applier{System: sys, Automatic: true}).Apply(ctx, nft, policyRuleset(t, "accept *:80,reject *:*"), 0); err != nil {
		t.Fatal(err)
	}
	if _, ok := sys.ReadRolledBack(); !ok {
		t.Fatal("an automatic apply dropped the rolled-back record")
	}
	if _, _, err := (Applier{System: sys}).Apply(ctx, nft, policyRuleset(t, "accept *:443,reject *:*"), 0); err != nil {
		t.Fatal(err)
	}
	if _, ok := sys.ReadRolledBack(); ok {
		t.Fatal("a manual apply left the rolled-back record")
	}
	if lg, err := sys.ReadLastGood(); err != nil || !exits(holding(lg.Ruleset), 443) {
		t.Fatalf("the manual apply is not the last good firewall: %v", err)
	}
}

func openWindowWith(t *testing.T, ap Applier, nft *fake.Backend) {
	t.Helper()
	if _, _, err := ap.Apply(context.Background(), nft, policyRuleset(t, "accept *:443,reject *:*"), time.Hour); err != nil {
		t.Fatal(err)
	}
}
