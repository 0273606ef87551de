package main

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/relayfw/relayfw/config"
	"github.com/relayfw/relayfw/host"
	"github.com/relayfw/relayfw/torconf"
)

// Exit codes: the contract with provisioning scripts (relayfw(8), EXIT
// STATUS: manual.go's exitStatuses, held to these constants by a test).
const (
	exitOK            = 0
	exitFailed        = 1  // check found drift, or an operation failed after starting
	exitChanged       = 2  // apply --detailed-exitcode changed something
	exitLinksBehind   = 3  // check: the rules are in sync, the relay links behind the cached consensus
	exitPolicyDiffers = 4  // check: a running tor enforces another exit policy than relayfw compiled from its torrc
	exitRolledBack    = 5  // apply: the confirm window it found open (or waited for) was rolled back; nothing installed
	exitUsage         = 64 // EX_USAGE
	exitDataErr       = 65 // EX_DATAERR: policy, torrc or config syntax
	exitNoInput       = 66 // EX_NOINPUT: an input file is missing or unreadable
	exitCantCreate    = 73 // EX_CANTCREAT: an output file cannot be written
	exitUnavailable   = 69 // EX_UNAVAILABLE: the backend is not available
	exitNoPerm        = 77 // EX_NOPERM: needs root / CAP_NET_ADMIN
)

// exitError carries the exit code an error maps to.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// exitStatus ends the command with a code but no error message: the
// command already printed what the caller needs (check's drift, apply's
// --detailed-exitcode).
type exitStatus struct{ code int }

func (e *exitStatus) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func usageError(err error) error { return &exitError{code: exitUsage, err: err} }

// exitCode classifies an error.
func exitCode(err error) int {
	var ee *exitError
	var torrcSyntax *torconf.SyntaxError
	var configSyntax *config.SyntaxError
	var fileErr *torconf.FileError
	var pathErr *fs.PathError // reading the config file
	var refused *host.RefusedFileError
	var unsafe *host.UnsafeFileError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &refused), errors.As(err, &unsafe): // before fileErr, which may wrap them
		return exitDataErr
	case errors.As(err, &torrcSyntax), errors.As(err, &configSyntax):
		return exitDataErr
	case errors.As(err, &fileErr), errors.As(err, &pathErr):
		return exitNoInput
	}
	return exitFailed
}

// checkSeverity orders what check can find, most severe first: drift (the
// rules differ), the running tor's policy differs, the relay links behind.
var checkSeverity = []int{exitFailed, exitPolicyDiffers, exitLinksBehind}

// mostSevere is check's exit code for what it found (codes among
// checkSeverity): the first of checkSeverity found, exitOK for none.
func mostSevere(found ...int) int {
	for _, code := range checkSeverity {
		for _, f := range found {
			if f == code {
				return code
			}
		}
	}
	return exitOK
}
