package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"encoding/json"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/internal/phase"
	"github.com/relayfw/relayfw/ruleset"
)

// Confirm-or-rollback, like iptables-apply: an apply with a confirm window
// keeps the ruleset relayfw last applied, installs the new one, and leaves
// a detached watcher (its own session, so it outlives the SSH connection
// that ran apply) that restores the old one at the deadline unless Confirm
// comes first. While the window is open, every other change (apply,
// refresh, remove) is refused with a *PendingError, so nothing is
// silently undone at the deadline.

// Pending is an apply waiting for confirmation.
type Pending struct {
	Deadline time.Time `json:"deadline"`
	Backend  string    `json:"backend"` // kind of the backend the apply used
	// PreviousBackend installed the firewall being replaced ("" when
	// unknown: the same backend).
	PreviousBackend string `json:"previous_backend,omitempty"`
	// Previous is the ruleset file to restore; "" means remove.
	Previous string `json:"previous"`
	// PreviousAppliedAt is when the firewall to restore was applied.
	PreviousAppliedAt *time.Time `json:"previous_applied_at,omitempty"`
	// Watcher is the rollback watcher's pid and WatcherStart its start
	// time (clock ticks since boot), so that a reused pid is never
	// signalled.
	Watcher      int    `json:"watcher"`
	WatcherStart uint64 `json:"watcher_start"`
}

// Restores says what a rollback would bring back.
func (p *Pending) Restores() string {
	if p.Previous == "" {
		return "no firewall (relayfw's firewall is removed)"
	}
	kind := p.PreviousBackend
	if kind == "" {
		kind = p.Backend
	}
	if p.PreviousAppliedAt != nil {
		return fmt.Sprintf("the firewall applied at %s (%s)", p.PreviousAppliedAt.Format(time.RFC3339), kind)
	}
	return fmt.Sprintf("the previous firewall (%s)", kind)
}

// ReadPending reads the pending confirm; an error wrapping
// os.ErrNotExist when there is none.
func (s *System) ReadPending() (*Pending, error) {
	data, err := os.ReadFile(s.PendingPath())
	if err != nil {
		return nil, err
	}
	var p Pending
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("%s: %w", s.PendingPath(), err)
	}
	return &p, nil
}

func (s *System) writePending(p *Pending) error {
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return writeAtomic(s.PendingPath(), data, 0o600)
}

// PendingError refuses a change while a confirm window is open.
type PendingError struct{ P *Pending }

func (e *PendingError) Error() string {
	return fmt.Sprintf("an apply --confirm is pending until %s (in %s): `relayfw confirm` keeps its firewall, `relayfw rollback` restores %s now; --wait 2m waits for the window to end",
		e.P.Deadline.Format(time.RFC3339), time.Until(e.P.Deadline).Round(time.Second), e.P.Restores())
}

// Window names the confirm window: its deadline, RFC 3339 (Change.Window,
// RolledBack.Window).
func (p *Pending) Window() string { return p.Deadline.UTC().Format(time.RFC3339) }

// LateError is a confirm that comes after the deadline: the window was
// (or is being) rolled back.
type LateError struct{ P *Pending }

func (e *LateError) Error() string {
	return fmt.Sprintf("too late: the apply --confirm window ended at %s; it rolls back to %s", e.P.Window(), e.P.Restores())
}

// GuardPending returns nil when no confirm window is open, or when the
// open one needs Recover (its deadline passed, or its watcher is dead);
// otherwise it waits up to wait (and ctx) for one of these and then
// returns a *PendingError. Call it without the lock: the watcher needs the
// lock to roll back.
func (s *System) GuardPending(ctx context.Context, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		p, err := s.ReadPending()
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if s.recoveryDue(p) {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return &PendingError{P: p}
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Applier installs rulesets, with an optional confirm window.
type Applier struct {
	Log *slog.Logger
	// StartWatcher starts the detached process that calls Watch (relayfw
	// rollback-watcher) and returns its pid.
	StartWatcher func(p *Pending) (pid int, err error)
	// Others lists the backends whose relayfw objects an apply removes;
	// nil: every other working backend (OtherBackends).
	Others func(ctx context.Context, b firewall.Backend) []firewall.Backend
	// Automatic marks the applies of the units (boot, the re-apply path
	// unit): they leave the record of an unconfirmed rollback in place,
	// which only an operator's apply clears.
	Automatic bool
	// System is the host; nil: DefaultSystem.
	System *System
	// Plan, when not nil, is NewPlan's of the ruleset Apply is given,
	// made in the same command: whether the kernel holds that ruleset
	// need not be looked up again.
	Plan *Plan
}

func (a Applier) sys() *System { return orDefault(a.System) }

func (a Applier) log() *slog.Logger {
	if a.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Log
}

// JournalPath is the record of a plain apply in progress: what it
// replaces, written before the kernel changes and removed once the apply
// is recorded. Recover finds it only when its writer died midway.
func (s *System) JournalPath() string         { return s.stateFile("state", ".journal.json") }
func (s *System) journalPreviousPath() string { return s.stateFile("state", ".journal-previous.json") }

// Apply installs rs with b; the caller holds Lock (and has run Recover).
// The other backend's relayfw objects are removed, the apply recorded.
// What a rollback needs is written before the firewall changes (if it
// cannot be, nothing changes): for a plain apply a journal, so that an
// apply killed midway is undone by the next relayfw that takes the lock;
// with confirm > 0 the pending record, and the watcher that restores the
// previous firewall at the deadline unless Confirm runs first is started
// and recorded before the kernel changes.
func (a Applier) Apply(ctx context.Context, b firewall.Backend, rs ruleset.Ruleset, confirm time.Duration) (firewall.Result, *Pending, error) {
	s := a.sys()
	if p, err := s.ReadPending(); err == nil {
		return firewall.Result{}, nil, &PendingError{P: p}
	}
	if confirm > 0 {
		return a.applyConfirm(ctx, b, rs, confirm)
	}
	encoded := encoder(rs)
	var res firewall.Result
	var ok bool
	if a.Plan != nil { // the plan looked already: only its generation is read again
		res, ok = a.Plan.stillHolds(ctx, b)
	} else {
		res, ok = s.KernelHolds(ctx, b, rs)
	}
	if ok {
		a.removeOthers(ctx, b)
		a.keep(ctx, b, rs, encoded)
		return res, nil, nil
	}
	// The record of the applied ruleset (its JSON) is made on the other
	// core while the kernel takes the ruleset.
	go func() { _, _ = encoded() }()
	// The journal only serves a kill midway: an apply goes ahead without
	// it (a full /run must not keep the firewall from being installed).
	end := phase.Start(ctx, "journal")
	j, err := s.previousOf(b, s.journalPreviousPath())
	if err == nil {
		err = writeJSON(s.JournalPath(), j)
	}
	end()
	if err != nil {
		a.log().Warn(fmt.Sprintf("no journal of this apply (%v): killed midway, it would not be undone", err))
	}
	gen, _ := generation(ctx, b)
	res, err = b.Apply(ctx, rs)
	if err != nil {
		// The backend's apply is all or nothing: nothing to undo.
		_ = os.Remove(s.JournalPath())
		return res, nil, err
	}
	end = phase.Start(ctx, "record")
	a.installed(ctx, b, rs, encoded, gen, res.Changed)
	end()
	// Before the journal goes: killed in between, the next relayfw
	// finds the journal and undoes the apply, never two firewalls.
	a.removeOthers(ctx, b)
	_ = os.Remove(s.JournalPath())
	if res.Changed {
		a.record(Change{Kind: ChangeApplied})
	}
	a.keep(ctx, b, rs, encoded)
	return res, nil, nil
}

// removeOthers removes the other backends' relayfw objects: never two
// relayfw firewalls.
func (a Applier) removeOthers(ctx context.Context, b firewall.Backend) {
	defer phase.Start(ctx, "other backends")()
	a.sys().removeOthers(ctx, b, a.Log, a.Others)
}

// keep is the end of a plain apply, once the kernel holds rs: rs is the
// last good firewall and, for an operator's apply, no unconfirmed
// rollback is left to keep.
func (a Applier) keep(ctx context.Context, b firewall.Backend, rs ruleset.Ruleset, encoded func() ([]byte, error)) {
	s := a.sys()
	defer phase.Start(ctx, "last good")()
	if err := s.saveLastGood(Kind(b), rs, encoded); err != nil {
		a.log().Warn(fmt.Sprintf("cannot keep the last good firewall: %v", err))
	}
	if !a.Automatic {
		if err := s.ForgetRolledBack(); err != nil {
			a.log().Warn(fmt.Sprintf("cannot drop the record of the rollback: %v", err))
		}
	}
}

func (a Applier) applyConfirm(ctx context.Context, b firewall.Backend, rs ruleset.Ruleset, confirm time.Duration) (firewall.Result, *Pending, error) {
	s := a.sys()
	p, err := s.previousOf(b, s.previousRulesetPath())
	if err != nil {
		return firewall.Result{}, nil, &StateError{Path: s.previousRulesetPath(), Err: err}
	}
	p.Deadline = time.Now().Add(confirm)
	if err := s.writePending(p); err != nil {
		return firewall.Result{}, nil, &StateError{Path: s.PendingPath(), Err: err}
	}
	pid, err := a.StartWatcher(p)
	if err != nil {
		_ = os.Remove(s.PendingPath())
		return firewall.Result{}, nil, fmt.Errorf("starting the rollback watcher: %w (nothing changed)", err)
	}
	p.Watcher = pid
	p.WatcherStart, _ = s.processStart(pid)
	// Without the pid, the next relayfw would start a second watcher:
	// harmless (the first to get the lock rolls back, the other finds
	// nothing to do).
	_ = s.writePending(p)
	gen, _ := generation(ctx, b)
	res, err := b.Apply(ctx, rs)
	var notRestored *firewall.NotRestoredError
	if err != nil && !errors.As(err, &notRestored) {
		// The backend left the firewall it found (all or nothing, or
		// its own undo): there is nothing to roll back, and a rollback
		// from the previous ruleset would drop what relayfw did not
		// install (a hand-made rule in its chains).
		_ = os.Remove(s.PendingPath())
		s.stopWatcher(p)
		a.record(Change{Kind: ChangeRolledBack, Why: RollbackFailure, Window: p.Window(), Detail: "the apply failed; the firewall is as it was"})
		return res, nil, err
	}
	if err != nil {
		msg, rerr := s.rollbackLocked(ctx, p, a.Log)
		if rerr != nil {
			return res, nil, fmt.Errorf("%w; restoring %s failed too: %v (the watcher tries again at %s)", err, p.Restores(), rerr, p.Window())
		}
		_ = os.Remove(s.PendingPath())
		s.stopWatcher(p)
		a.record(Change{Kind: ChangeRolledBack, Why: RollbackFailure, Window: p.Window(), Detail: msg})
		return res, nil, fmt.Errorf("%w; %s", err, msg)
	}
	a.removeOthers(ctx, b)
	a.installed(ctx, b, rs, encoder(rs), gen, res.Changed)
	a.record(Change{Kind: ChangePending, Window: p.Window()})
	return res, p, nil
}

// installed records an apply of rs with b that the kernel took, and,
// when the ruleset generation went from gen to what the apply alone
// makes of it, what the kernel holds.
func (a Applier) installed(ctx context.Context, b firewall.Backend, rs ruleset.Ruleset, encoded func() ([]byte, error), gen uint32, committed bool) {
	s := a.sys()
	// The applied ruleset first: a record of what the kernel holds lets
	// later applies skip writing it, so there is none unless it was
	// written (a full /run must not leave a stale one for a rollback).
	data, err := encoded()
	if err == nil {
		err = writeAtomic(s.AppliedRulesetPath(), data, 0o600)
	}
	var kernel *KernelRecord
	if err != nil {
		a.log().Warn(fmt.Sprintf("cannot keep the applied ruleset for a later rollback: %v", err))
	} else if after, ok := generationAfter(ctx, b, gen, committed); ok {
		kernel = s.kernelRecord(rs, after)
	}
	if err := s.RecordApply(Kind(b), kernel); err != nil {
		a.log().Warn(fmt.Sprintf("cannot record the apply in %s: %v", s.StatePath(), err))
	}
}

func (a Applier) record(c Change) {
	s := a.sys()
	if err := s.RecordChange(c); err != nil {
		a.log().Warn(fmt.Sprintf("cannot record the change in %s: %v", s.LastChangePath(), err))
	}
}

// previousOf is what an apply with b replaces: the last applied ruleset,
// copied to keep (none: a rollback removes), and its backend and time.
func (s *System) previousOf(b firewall.Backend, keep string) (*Pending, error) {
	previous, err := s.keepPrevious(keep)
	if err != nil {
		return nil, err
	}
	p := &Pending{Backend: Kind(b), Previous: previous}
	if st, ok := s.ReadState(); ok && previous != "" {
		p.PreviousBackend, p.PreviousAppliedAt = st.Backend, &st.AppliedAt
	}
	return p, nil
}

// keepPrevious copies the last applied ruleset to keep before an apply
// replaces it; "" when there is none (a rollback then removes).
func (s *System) keepPrevious(keep string) (string, error) {
	data, err := os.ReadFile(s.AppliedRulesetPath())
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if err := writeAtomic(keep, data, 0o600); err != nil {
		return "", err
	}
	return keep, nil
}

func writeJSON(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return writeAtomic(path, data, 0o600)
}

// ErrNothingPending is Confirm's and Rollback's error when no confirm
// window is open.
var ErrNothingPending = errors.New("no apply is waiting for confirmation")

// Confirm keeps the firewall of the pending apply: its record goes, and
// its watcher is stopped; it becomes the last good firewall. The caller
// holds Lock (and has run Recover). After the deadline it is refused with
// a *LateError.
func (s *System) Confirm() (*Pending, error) {
	p, err := s.ReadPending()
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNothingPending
	}
	if err != nil {
		return nil, err
	}
	if !time.Now().Before(p.Deadline) {
		return nil, &LateError{P: p}
	}
	if err := os.Remove(s.PendingPath()); err != nil {
		return nil, err
	}
	s.stopWatcher(p)
	_ = s.RecordChange(Change{Kind: ChangeConfirmed, Window: p.Window()})
	if rs, err := LoadRuleset(s.AppliedRulesetPath()); err == nil {
		_ = s.SaveLastGood(p.Backend, rs)
	}
	_ = s.ForgetRolledBack()
	return p, nil
}

// Rollback restores, now, what the pending apply replaced; the caller
// holds Lock. It returns "rolled back to …".
func (s *System) Rollback(ctx context.Context, log *slog.Logger) (string, error) {
	p, err := s.ReadPending()
	if errors.Is(err, os.ErrNotExist) {
		return "", ErrNothingPending
	}
	if err != nil {
		return "", err
	}
	return s.endWindow(ctx, p, RollbackCommand, log)
}

// endWindow rolls the pending window p back and records why.
func (s *System) endWindow(ctx context.Context, p *Pending, why string, log *slog.Logger) (string, error) {
	msg, err := s.rollbackLocked(ctx, p, log)
	if err != nil {
		return "", err
	}
	// The records first: killed before the pending record goes, the next
	// relayfw rolls back again and records it again; the other way round,
	// the automatic applies would install the unconfirmed firewall anew.
	if err := s.RecordChange(Change{Kind: ChangeRolledBack, Why: why, Window: p.Window(), Detail: msg}); err != nil && log != nil {
		log.Warn(err.Error())
	}
	if err := s.RecordRolledBack(RolledBack{At: time.Now().UTC().Truncate(time.Second), Why: why, Window: p.Window()}); err != nil && log != nil {
		log.Warn(err.Error())
	}
	_ = os.Remove(s.PendingPath())
	s.stopWatcher(p)
	return msg, nil
}

// WindowRolledBack says whether the confirm window named window (Pending.
// Window) ended in a rollback, and when.
func (s *System) WindowRolledBack(window string) (time.Time, bool) {
	if c, ok := s.ReadLastChange(); ok && c.Window == window {
		return c.At, c.Kind == ChangeRolledBack
	}
	if r, ok := s.ReadRolledBack(); ok && r.Window == window {
		return r.At, true
	}
	return time.Time{}, false
}

// rollbackLocked restores the previous ruleset on the backend that had
// it, or removes the firewall; the new firewall goes from the backend the
// apply used.
func (s *System) rollbackLocked(ctx context.Context, p *Pending, log *slog.Logger) (string, error) {
	b, err := s.chooseBackend(ctx, p.Backend, log)
	if err != nil {
		return "", err
	}
	if p.Previous == "" {
		if _, err := b.Remove(ctx); err != nil {
			return "", err
		}
		s.ForgetApply()
		return "rolled back to " + p.Restores(), nil
	}
	rs, err := LoadRuleset(p.Previous)
	if err != nil {
		return "", err
	}
	prev := b
	if p.PreviousBackend != "" && p.PreviousBackend != Kind(b) {
		if prev, err = s.chooseBackend(ctx, p.PreviousBackend, log); err != nil {
			return "", err
		}
	}
	if _, err := prev.Apply(ctx, rs); err != nil {
		return "", err
	}
	s.RemoveOthers(ctx, prev, log)
	_ = s.RecordApply(Kind(prev), nil)
	_ = SaveRuleset(s.AppliedRulesetPath(), rs)
	return "rolled back to " + p.Restores(), nil
}

// RecoveryDue looks, cheaply and without the lock, whether Recover has
// something to do: an apply that died midway, or a confirm window whose
// deadline passed or whose watcher is gone. A reader (check, status)
// then takes the lock for Recover before it reads.
func (s *System) RecoveryDue() bool {
	if _, err := os.Stat(s.JournalPath()); err == nil {
		return true
	}
	p, err := s.ReadPending()
	return err == nil && s.recoveryDue(p)
}

func (s *System) recoveryDue(p *Pending) bool {
	return !time.Now().Before(p.Deadline) || !s.watcherAlive(p)
}

// Recover brings the firewall back to a decided state; every relayfw that
// takes the lock runs it first, with the lock held. An apply that died
// midway (its journal left, its lock free) is undone; a confirm window
// whose deadline passed is rolled back now; one whose watcher is gone
// gets a new watcher. It returns one line saying what it did ("" when
// nothing).
func (a Applier) Recover(ctx context.Context) (string, error) {
	s := a.sys()
	var said []string
	if j, err := s.readJournal(); err == nil {
		msg, err := s.rollbackLocked(ctx, j, a.Log)
		if err != nil {
			return "", fmt.Errorf("undoing an apply that was interrupted: %w", err)
		}
		_ = os.Remove(s.JournalPath())
		a.record(Change{Kind: ChangeRolledBack, Why: RollbackFailure, Detail: "an apply was interrupted; " + msg})
		said = append(said, "an apply was interrupted: "+msg)
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	p, err := s.ReadPending()
	if errors.Is(err, os.ErrNotExist) {
		return strings.Join(said, "; "), nil
	}
	if err != nil {
		return "", err
	}
	switch {
	case !time.Now().Before(p.Deadline):
		msg, err := s.endWindow(ctx, p, RollbackDeadline, a.Log)
		if err != nil {
			return "", fmt.Errorf("rolling back the apply --confirm whose deadline %s passed: %w", p.Window(), err)
		}
		said = append(said, fmt.Sprintf("the apply --confirm was not confirmed by its deadline %s: %s", p.Window(), msg))
	case !s.watcherAlive(p) && a.StartWatcher != nil:
		pid, err := a.StartWatcher(p)
		if err != nil {
			return "", fmt.Errorf("restarting the rollback watcher of the apply --confirm until %s: %w", p.Window(), err)
		}
		p.Watcher = pid
		p.WatcherStart, _ = s.processStart(pid)
		if err := s.writePending(p); err != nil {
			return "", &StateError{Path: s.PendingPath(), Err: err}
		}
		said = append(said, fmt.Sprintf("restarted the rollback watcher of the apply --confirm until %s (it was gone)", p.Window()))
	}
	return strings.Join(said, "; "), nil
}

func (s *System) readJournal() (*Pending, error) {
	data, err := os.ReadFile(s.JournalPath())
	if err != nil {
		return nil, err
	}
	var j Pending
	if err := json.Unmarshal(data, &j); err != nil {
		// A journal cut short: its apply never reached the kernel.
		_ = os.Remove(s.JournalPath())
		return nil, os.ErrNotExist
	}
	return &j, nil
}
