package main

import (
	"context"
	"errors"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/host"
)

// exitTempFail (EX_TEMPFAIL) is the exit code when another relayfw holds
// the lock, or a confirm window is open, past --wait.
const exitTempFail = 75

// applier is how this relayfw applies, recovers and starts watchers.
func (g *globals) applier() host.Applier {
	return host.Applier{System: g.sys, Log: g.log, StartWatcher: func(p *host.Pending) (int, error) { return startWatcher(g, p) }}
}

// readLock is the lock of check, status, metrics and apply --dry-run
// (host.Applier.LockToRead): never an error.
func readLock(ctx context.Context, g *globals) (release func(), err error) {
	return g.applier().LockToRead(ctx, g.wait), nil
}

// lockAndRecover takes the lock for a change an open confirm window may
// see (unblock) and runs Recover.
func lockAndRecover(ctx context.Context, g *globals) (release func(), err error) {
	release, err = g.applier().LockAndRecover(ctx, g.wait)
	return release, hostError(err)
}

// guardAndLock is how a change starts (host.Applier.LockToChange): take
// the lock, run Recover, and refuse (or, with --wait, wait out) an open
// confirm window.
func guardAndLock(ctx context.Context, g *globals) (release func(), err error) {
	release, _, err = lockForChange(ctx, g)
	return release, err
}

// lockForChange is guardAndLock that also returns the confirm window it
// found open (nil: none).
func lockForChange(ctx context.Context, g *globals) (release func(), found *host.Pending, err error) {
	release, found, err = g.applier().LockToChange(ctx, g.wait)
	return release, found, hostError(err)
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
