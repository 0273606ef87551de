package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"encoding/json"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/rules"
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
func ReadPending() (*Pending, error) {
	data, err := os.ReadFile(PendingPath())
	if err != nil {
		return nil, err
	}
	var p Pending
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("%s: %w", PendingPath(), err)
	}
	return &p, nil
}

func writePending(p *Pending) error {
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return writeAtomic(PendingPath(), data, 0o600)
}

// PendingError refuses a change while a confirm window is open.
type PendingError struct{ P *Pending }

func (e *PendingError) Error() string {
	return fmt.Sprintf("an apply --confirm is pending until %s (in %s): `relayfw confirm` keeps its firewall, `relayfw rollback` restores %s now; --wait 2m waits for the window to end",
		e.P.Deadline.Format(time.RFC3339), time.Until(e.P.Deadline).Round(time.Second), e.P.Restores())
}

// GuardPending returns nil when no confirm window is open; otherwise it
// waits up to wait (and ctx) for the window to end — confirmed, or rolled
// back by the watcher — and then returns a *PendingError. Call it before
// taking the lock: the watcher needs the lock to roll back.
func GuardPending(ctx context.Context, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		p, err := ReadPending()
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
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
}

func (a Applier) log() *slog.Logger {
	if a.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Log
}

// Apply installs rs with b; the caller holds Lock. The other backend's
// relayfw objects are removed, the apply recorded. With confirm > 0,
// everything a rollback needs is written before the firewall changes (if
// it cannot be, nothing changes), and a watcher restores the previous
// firewall at the deadline unless Confirm runs first.
func (a Applier) Apply(ctx context.Context, b firewall.Backend, rs rules.Ruleset, confirm time.Duration) (firewall.Result, *Pending, error) {
	if p, err := ReadPending(); err == nil {
		return firewall.Result{}, nil, &PendingError{P: p}
	}
	var p *Pending
	if confirm > 0 {
		previous, err := keepPrevious()
		if err != nil {
			return firewall.Result{}, nil, &StateError{Path: previousRulesetPath(), Err: err}
		}
		p = &Pending{Deadline: time.Now().Add(confirm), Backend: Kind(b), Previous: previous}
		if st, ok := ReadState(); ok {
			p.PreviousBackend, p.PreviousAppliedAt = st.Backend, &st.AppliedAt
		}
		if err := writePending(p); err != nil {
			return firewall.Result{}, nil, &StateError{Path: PendingPath(), Err: err}
		}
	}
	res, err := b.Apply(ctx, rs)
	if err != nil {
		if p != nil {
			_ = os.Remove(PendingPath())
		}
		return res, nil, err
	}
	removeOthers(ctx, b, a.Log, a.Others)
	if err := RecordApply(Kind(b)); err != nil {
		a.log().Warn(fmt.Sprintf("cannot record the apply in %s: %v", StatePath(), err))
	}
	if err := SaveRuleset(AppliedRulesetPath(), rs); err != nil {
		a.log().Warn(fmt.Sprintf("cannot keep the applied ruleset for a later rollback: %v", err))
	}
	if p == nil {
		if err := SaveLastGood(Kind(b), rs); err != nil {
			a.log().Warn(fmt.Sprintf("cannot keep the firewall as the last good one (the boot's fallback) in %s: %v", LastGoodPath(), err))
		}
		return res, nil, nil
	}
	pid, err := a.StartWatcher(p)
	if err != nil {
		// Nobody would roll back: do it now.
		msg, rerr := rollbackLocked(ctx, p, a.Log)
		_ = os.Remove(PendingPath())
		if rerr != nil {
			return res, nil, fmt.Errorf("starting the rollback watcher: %v; rolling back failed too: %w", err, rerr)
		}
		return res, nil, fmt.Errorf("starting the rollback watcher: %w; %s", err, msg)
	}
	p.Watcher = pid
	p.WatcherStart, _ = processStart(pid)
	// The pid only lets Confirm stop the watcher early; without it the
	// watcher still ends once the pending file is gone.
	_ = writePending(p)
	return res, p, nil
}

// keepPrevious copies the last applied ruleset aside before an apply
// replaces it; "" when there is none (a rollback then removes).
func keepPrevious() (string, error) {
	data, err := os.ReadFile(AppliedRulesetPath())
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if err := writeAtomic(previousRulesetPath(), data, 0o600); err != nil {
		return "", err
	}
	return previousRulesetPath(), nil
}

// ErrNothingPending is Confirm's and Rollback's error when no confirm
// window is open.
var ErrNothingPending = errors.New("no apply is waiting for confirmation (did it roll back already?)")

// Confirm keeps the firewall of the pending apply: its record goes, and
// its watcher is stopped. The caller holds Lock.
func Confirm() (*Pending, error) {
	p, err := ReadPending()
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNothingPending
	}
	if err != nil {
		return nil, err
	}
	if err := os.Remove(PendingPath()); err != nil {
		return nil, err
	}
	stopWatcher(p)
	return p, nil
}

// Rollback restores, now, what the pending apply replaced; the caller
// holds Lock. It returns "rolled back to …".
func Rollback(ctx context.Context, log *slog.Logger) (string, error) {
	p, err := ReadPending()
	if errors.Is(err, os.ErrNotExist) {
		return "", ErrNothingPending
	}
	if err != nil {
		return "", err
	}
	msg, err := rollbackLocked(ctx, p, log)
	if err != nil {
		return "", err
	}
	_ = os.Remove(PendingPath())
	stopWatcher(p)
	return msg, nil
}

// rollbackLocked restores the previous ruleset on the backend that had
// it, or removes the firewall; the new firewall goes from the backend the
// apply used.
func rollbackLocked(ctx context.Context, p *Pending, log *slog.Logger) (string, error) {
	b, err := chooseBackend(ctx, p.Backend, log)
	if err != nil {
		return "", err
	}
	if p.Previous == "" {
		if _, err := b.Remove(ctx); err != nil {
			return "", err
		}
		ForgetApply()
		return "rolled back to " + p.Restores(), nil
	}
	rs, err := LoadRuleset(p.Previous)
	if err != nil {
		return "", err
	}
	prev := b
	if p.PreviousBackend != "" && p.PreviousBackend != Kind(b) {
		if prev, err = chooseBackend(ctx, p.PreviousBackend, log); err != nil {
			return "", err
		}
	}
	if _, err := prev.Apply(ctx, rs); err != nil {
		return "", err
	}
	RemoveOthers(ctx, prev, log)
	_ = RecordApply(Kind(prev))
	_ = SaveRuleset(AppliedRulesetPath(), rs)
	return "rolled back to " + p.Restores(), nil
}

// Watch is the rollback watcher: it sleeps until the pending deadline and
// rolls back unless the apply was confirmed (or rolled back) first.
func Watch(ctx context.Context, log *slog.Logger) (string, error) {
	for {
		p, err := ReadPending()
		if err != nil {
			return "", nil // confirmed, or already rolled back
		}
		if left := time.Until(p.Deadline); left > 0 {
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(min(left, 250*time.Millisecond)):
			}
			continue
		}
		release, err := Lock(ctx, time.Minute)
		if err != nil {
			return "", err
		}
		defer release()
		return Rollback(ctx, log)
	}
}

// stopWatcher signals the watcher, when the process with its pid is still
// the watcher (same start time): a reused pid is left alone.
func stopWatcher(p *Pending) {
	if p.Watcher <= 0 || p.Watcher == os.Getpid() {
		return
	}
	if start, ok := processStart(p.Watcher); ok && start == p.WatcherStart && p.WatcherStart != 0 {
		_ = syscall.Kill(p.Watcher, syscall.SIGTERM)
	}
}

// processStart reads a process's start time (field 22 of /proc/PID/stat,
// in clock ticks since boot).
func processStart(pid int) (uint64, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 20 {
		return 0, false
	}
	v, err := strconv.ParseUint(f[19], 10, 64) // field 22: the 20th after ")"
	return v, err == nil
}
