package main

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/host"
)

// exitTempFail (EX_TEMPFAIL) is the exit code when another relayfw holds
// the lock, or a confirm window is open, past --wait.
const exitTempFail = 75

// acquireLock takes the namespace's lock (host.Lock), mapping its errors
// to exit codes.
func acquireLock(ctx context.Context, g *globals, wait time.Duration) (release func(), err error) {
	release, err = g.sys.Lock(ctx, wait)
	return release, hostError(err)
}

// readLockWait bounds how long a command that only reads the firewall
// waits for another relayfw's change to end (an apply of a large block
// list through iptables takes seconds) before it reads anyway.
const readLockWait = 30 * time.Second

// applier is how this relayfw applies, recovers and starts watchers.
func (g *globals) applier() host.Applier {
	return host.Applier{System: g.sys, Log: g.log, StartWatcher: func(p *host.Pending) (int, error) { return startWatcher(g, p) }}
}

// recoverLocked runs host's Recover under the lock the caller holds; what
// it did is one line on stderr.
func recoverLocked(ctx context.Context, g *globals) error {
	msg, err := g.applier().Recover(ctx)
	if msg != "" {
		g.log.Warn(msg)
	}
	return err
}

// readLock is the lock of check, status, metrics and apply --dry-run:
// shared, so readers never wait for each other, and never an error — past
// readLockWait (or --wait, when longer) they read without it. When an
// apply died midway or a confirm window is due (its deadline passed, its
// watcher gone), it first takes the lock alone for Recover, so that what
// it reads is decided.
func readLock(ctx context.Context, g *globals) (release func(), err error) {
	wait := max(g.wait, readLockWait)
	if g.sys.RecoveryDue() {
		if release, err := g.sys.Lock(ctx, wait); err == nil {
			if err := recoverLocked(ctx, g); err != nil {
				g.log.Warn(err.Error())
			}
			release()
		}
	}
	release, _ = g.sys.ReadLock(ctx, wait)
	return release, nil
}

// lockAndRecover takes the lock for a change an open confirm window may
// see (confirm, rollback, unblock) and runs Recover.
func lockAndRecover(ctx context.Context, g *globals) (release func(), err error) {
	release, err = acquireLock(ctx, g, g.wait)
	if err != nil {
		return nil, err
	}
	if err := recoverLocked(ctx, g); err != nil {
		release()
		return nil, hostError(err)
	}
	return release, nil
}

// guardAndLock is how a change starts: take the lock, run Recover, and
// refuse (or, with --wait, wait out) an open confirm window.
func guardAndLock(ctx context.Context, g *globals) (release func(), err error) {
	release, _, err = lockForChange(ctx, g)
	return release, err
}

// lockForChange is guardAndLock that also returns the confirm window it
// found open (nil: none), so that an apply does not install what that
// window's rollback took away.
func lockForChange(ctx context.Context, g *globals) (release func(), found *host.Pending, err error) {
	end := time.Now().Add(g.wait)
	for {
		release, err := acquireLock(ctx, g, max(time.Until(end), 0))
		if err != nil {
			return nil, found, err
		}
		if p, err := g.sys.ReadPending(); err == nil && found == nil {
			found = p
		}
		if err := recoverLocked(ctx, g); err != nil {
			release()
			return nil, found, hostError(err)
		}
		p, err := g.sys.ReadPending()
		if errors.Is(err, os.ErrNotExist) {
			return release, found, nil
		}
		release()
		if err != nil {
			return nil, found, hostError(err)
		}
		if found == nil {
			found = p
		}
		// The watcher needs the lock to roll back: wait without it.
		if err := g.sys.GuardPending(ctx, max(time.Until(end), 0)); err != nil {
			return nil, found, hostError(err)
		}
	}
}

// hostError maps the host package's errors to exit codes.
func hostError(err error) error {
	var busy *host.BusyError
	var pending *host.PendingError
	var state *host.StateError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &busy), errors.As(err, &pending):
		return &exitError{code: exitTempFail, err: err}
	case errors.As(err, &state) && state.NotPermitted():
		return &exitError{code: exitNoPerm, err: err}
	case errors.As(err, &state):
		return &exitError{code: exitCantCreate, err: err}
	}
	return backendError(err)
}

// backendError maps the firewall sentinels to exit codes.
func backendError(err error) error {
	switch {
	case errors.Is(err, firewall.ErrNotPermitted):
		return &exitError{code: exitNoPerm, err: err}
	case errors.Is(err, firewall.ErrUnavailable):
		return &exitError{code: exitUnavailable, err: err}
	}
	return err
}
