package main

import (
	"context"
	"errors"
	"time"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/host"
)

// exitTempFail (EX_TEMPFAIL) is the exit code when another relayfw holds
// the lock, or a confirm window is open, past --wait.
const exitTempFail = 75

// acquireLock takes the namespace's lock (host.Lock), mapping its errors
// to exit codes.
func acquireLock(ctx context.Context, wait time.Duration) (release func(), err error) {
	release, err = host.Lock(ctx, wait)
	return release, hostError(err)
}

// readLockWait bounds how long a command that only reads the firewall
// waits for another relayfw's change to end (an apply of a large block
// list through iptables takes seconds) before it reads anyway.
const readLockWait = 30 * time.Second

// readLock is the lock of check, status, metrics and apply --dry-run:
// shared, so readers never wait for each other, and never an error — past
// readLockWait (or --wait, when longer) they read without it.
func readLock(ctx context.Context, wait time.Duration) (release func(), err error) {
	release, _ = host.ReadLock(ctx, max(wait, readLockWait))
	return release, nil
}

// guardAndLock is how a change starts: refuse (or, with --wait, wait out)
// an open confirm window, then take the lock, and look again.
func guardAndLock(ctx context.Context, wait time.Duration) (release func(), err error) {
	start := time.Now()
	if err := host.GuardPending(ctx, wait); err != nil {
		return nil, hostError(err)
	}
	release, err = acquireLock(ctx, max(wait-time.Since(start), 0))
	if err != nil {
		return nil, err
	}
	if p, err := host.ReadPending(); err == nil {
		release()
		return nil, hostError(&host.PendingError{P: p})
	}
	return release, nil
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
