package host

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// How an operation starts: every command that changes or reads the
// firewall takes the namespace's lock one of these ways, and runs Recover
// first when it holds the lock alone.

// ReadLockWait bounds how long an operation that only reads the firewall
// waits for another relayfw's change to end (an apply of a large block
// list through iptables takes seconds) before it reads anyway.
const ReadLockWait = 30 * time.Second

// recoverLocked runs Recover under the lock the caller holds; what it did
// is one warning.
func (a Applier) recoverLocked(ctx context.Context) error {
	msg, err := a.Recover(ctx)
	if msg != "" {
		a.log().Warn(msg)
	}
	return err
}

// LockToRead is the lock of an operation that only reads the firewall
// (check, status, metrics, apply --dry-run): shared, so readers never
// wait for each other, and never an error — past ReadLockWait (or wait,
// when longer) they read without it. When an apply died midway or a
// confirm window is due (its deadline passed, its watcher gone), it first
// takes the lock alone for Recover, so that what it reads is decided.
func (a Applier) LockToRead(ctx context.Context, wait time.Duration) (release func()) {
	s := a.sys()
	wait = max(wait, ReadLockWait)
	if s.RecoveryDue() {
		if release, err := s.Lock(ctx, wait); err == nil {
			if err := a.recoverLocked(ctx); err != nil {
				a.log().Warn(err.Error())
			}
			release()
		}
	}
	release, _ = s.ReadLock(ctx, wait)
	return release
}

// LockAndRecover takes the lock (waiting up to wait) for a change an open
// confirm window may see (unblock; EndWindow for confirm and rollback)
// and runs Recover.
func (a Applier) LockAndRecover(ctx context.Context, wait time.Duration) (release func(), err error) {
	release, err = a.sys().Lock(ctx, wait)
	if err != nil {
		return nil, err
	}
	if err := a.recoverLocked(ctx); err != nil {
		release()
		return nil, err
	}
	return release, nil
}

// LockToChange is how a change starts (apply, refresh, remove, boot):
// take the lock, run Recover, and refuse with a *PendingError (or, within
// wait, wait out) an open confirm window. It also returns the window it
// found open (nil: none), so that an apply does not install what that
// window's rollback took away.
func (a Applier) LockToChange(ctx context.Context, wait time.Duration) (release func(), found *Pending, err error) {
	s := a.sys()
	end := time.Now().Add(wait)
	for {
		release, err := s.Lock(ctx, max(time.Until(end), 0))
		if err != nil {
			return nil, found, err
		}
		if p, err := s.ReadPending(); err == nil && found == nil {
			found = p
		}
		if err := a.recoverLocked(ctx); err != nil {
			release()
			return nil, found, err
		}
		p, err := s.ReadPending()
		if errors.Is(err, os.ErrNotExist) {
			return release, found, nil
		}
		release()
		if err != nil {
			return nil, found, err
		}
		if found == nil {
			found = p
		}
		// The watcher needs the lock to roll back: wait without it.
		if err := s.GuardPending(ctx, max(time.Until(end), 0)); err != nil {
			return nil, found, err
		}
	}
}

// Prompt is an operator at a terminal, whom AwaitConfirm asks: the
// question goes to Out, the answer (a line, Enter) comes from In.
type Prompt struct {
	In  io.Reader
	Out io.Writer
}

// AwaitConfirm follows the confirm window p that Apply opened, for the
// operator at prompt: it asks, and waits for Enter until the deadline.
// Enter confirms; without it the firewall is rolled back (by the watcher,
// or by AwaitConfirm itself when the watcher is gone), and AwaitConfirm
// says so once it has. It reports whether the firewall stays, and one line
// saying so. With no prompt (not a terminal) it returns at once, true:
// relayfw confirm decides. The caller does not hold the lock.
func (a Applier) AwaitConfirm(ctx context.Context, p *Pending, prompt *Prompt) (kept bool, msg string) {
	if prompt == nil {
		return true, fmt.Sprintf("waiting for relayfw confirm until %s; without it the watcher restores %s",
			p.Deadline.Format(time.RFC3339), p.Restores())
	}
	s := a.sys()
	fmt.Fprintf(prompt.Out, "Press Enter within %s to keep the new firewall (or run relayfw confirm); otherwise it rolls back to %s.\n",
		time.Until(p.Deadline).Round(time.Second), p.Restores())
	line := make(chan struct{}, 1)
	go func() {
		_, _ = bufio.NewReader(prompt.In).ReadString('\n')
		line <- struct{}{}
	}()
	select {
	case <-line:
		release, err := s.Lock(ctx, 10*time.Second)
		if err == nil {
			_, err = s.Confirm()
			release()
		}
		if err == nil {
			return true, "confirmed: the new firewall stays"
		}
	case <-time.After(time.Until(p.Deadline)):
	case <-ctx.Done():
	}
	// The watcher rolls back; should it be gone, or held up by a reader,
	// roll back here once the lock is free.
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end) && ctx.Err() == nil; time.Sleep(100 * time.Millisecond) {
		if _, err := s.ReadPending(); errors.Is(err, os.ErrNotExist) {
			return false, "rolled back to " + p.Restores()
		}
		if release, err := s.Lock(ctx, 0); err == nil {
			_, _ = a.Recover(ctx)
			release()
		}
	}
	return false, "not rolled back yet: another relayfw holds the lock; the watcher rolls back to " + p.Restores() + " once it is free"
}

// TooLateError is EndWindow's error when the window it was to end had
// passed its deadline: Recover rolled it back first.
type TooLateError struct {
	Msg string // what the rollback said
}

func (e *TooLateError) Error() string {
	return "too late, it rolled back at the deadline: " + e.Msg
}

// EndWindow ends the open apply --confirm window under the lock (waiting
// up to wait), after Recover, which rolls back a window past its
// deadline: keep is relayfw confirm (the firewall stays), else relayfw
// rollback (the previous one comes back now). It returns one line saying
// what happened. With no window open, the error wraps ErrNothingPending
// and says how the last one ended; a confirm that comes after the
// deadline is a *TooLateError (a rollback then says what Recover did);
// errors past the lock name the operation.
func (a Applier) EndWindow(ctx context.Context, wait time.Duration, keep bool) (string, error) {
	s := a.sys()
	op := "rollback"
	if keep {
		op = "confirm"
	}
	release, err := s.Lock(ctx, wait)
	if err != nil {
		return "", err
	}
	defer release()
	// Recover rolls back a window past its deadline: say so instead of
	// what Recover says.
	p, _ := s.ReadPending()
	msg, err := a.Recover(ctx)
	if err != nil {
		return "", fmt.Errorf("%s: %w", op, err)
	}
	if _, perr := s.ReadPending(); p != nil && errors.Is(perr, os.ErrNotExist) {
		if !keep {
			return msg, nil
		}
		return "", fmt.Errorf("%s: %w", op, &TooLateError{Msg: msg})
	}
	if msg != "" {
		a.log().Warn(msg)
	}
	if keep {
		_, err = s.Confirm()
		msg = "confirmed: the new firewall stays"
	} else {
		msg, err = s.Rollback(ctx, a.Log)
	}
	if errors.Is(err, ErrNothingPending) {
		if c, ok := s.ReadLastChange(); ok && c.Kind == ChangeRolledBack && c.Window != "" {
			err = fmt.Errorf("%w: the apply --confirm until %s was rolled back at %s (%s)", err, c.Window, c.At.Format(time.RFC3339), c.Why)
		}
		return "", err
	}
	if err != nil {
		return "", fmt.Errorf("%s: %w", op, err)
	}
	return msg, nil
}
