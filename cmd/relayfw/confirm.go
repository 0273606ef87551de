package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/relayfw/relayfw/host"
)

// startWatcher starts the detached rollback watcher (its own session, so
// it outlives the SSH connection that ran apply); what it says goes to a
// log next to the state. Where systemd runs, a transient timer at the
// deadline is the backstop.
func startWatcher(g *globals, p *host.Pending) (int, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(self, "rollback-watcher", "--backend", p.Backend)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if f, err := os.OpenFile(g.sys.RollbackLogPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err == nil {
		cmd.Stderr = f
		defer f.Close()
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	if systemdRuns() && g.sys.InHostNetns() {
		line := backstopCommand(self, p, time.Now())
		if out, err := exec.Command(line[0], line[1:]...).CombinedOutput(); err != nil && !strings.Contains(string(out), "already") {
			g.log.Warn(fmt.Sprintf("no systemd timer as the rollback's backstop: %v: %s", err, strings.TrimSpace(string(out))))
		}
	}
	return pid, nil
}

// systemdRuns says whether systemd is the init system.
func systemdRuns() bool {
	_, err := os.Stat("/run/systemd/system")
	return err == nil
}

// backstopCommand is the systemd-run line of the transient timer that
// runs relayfw recover a few seconds after the window's deadline, should
// neither the watcher nor any other relayfw be there to roll back. Its
// unit is named after the window, so that a restarted watcher does not
// start a second one.
func backstopCommand(self string, p *host.Pending, now time.Time) []string {
	after := int(math.Ceil(p.Deadline.Sub(now).Seconds())) + 5
	return []string{"systemd-run", "--quiet", "--collect",
		fmt.Sprintf("--unit=relayfw-rollback-%d", p.Deadline.Unix()),
		fmt.Sprintf("--on-active=%ds", max(after, 1)),
		"--timer-property=AccuracySec=1s",
		self, "recover"}
}

func newRollbackWatcherCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:    "rollback-watcher",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			msg, err := g.applier().Watch(cmd.Context())
			if err != nil {
				g.log.Error(fmt.Sprintf("rollback failed: %v", err))
				return err
			}
			if msg != "" {
				g.log.Warn(msg)
			}
			return nil
		},
	}
}

// newRecoverCommand is the backstop timer's command: take the lock, as
// long as it takes, and run Recover.
func newRecoverCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:    "recover",
		Short:  "Finish what relayfw left undecided: roll back a confirm window past its deadline, undo an interrupted apply",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			release, err := g.sys.LockPatiently(cmd.Context(), g.log)
			if err != nil {
				return hostError(err)
			}
			defer release()
			msg, err := g.applier().Recover(cmd.Context())
			if err != nil {
				return hostError(fmt.Errorf("recover: %w", err))
			}
			if msg == "" {
				msg = "nothing to recover"
			}
			fmt.Fprintln(g.stdout, msg)
			return nil
		},
	}
}

func newConfirmCommand(g *globals) *cobra.Command {
	return pendingCommand(g, "confirm", "Keep the firewall of a pending apply --confirm", true)
}

func newRollbackCommand(g *globals) *cobra.Command {
	return pendingCommand(g, "rollback", "Roll a pending apply --confirm back now, instead of at its deadline", false)
}

// pendingCommand ends a pending apply --confirm (host.Applier.EndWindow):
// exit 1 when none is pending or, for confirm, when it rolled back at its
// deadline; else the one line EndWindow returns.
func pendingCommand(g *globals, use, short string, keep bool) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			msg, err := g.applier().EndWindow(cmd.Context(), g.wait, keep)
			var late *host.TooLateError
			switch {
			case errors.Is(err, host.ErrNothingPending), errors.As(err, &late):
				return &exitError{code: exitFailed, err: err}
			case err != nil:
				return hostError(err)
			}
			fmt.Fprintln(g.stdout, msg)
			return nil
		},
	}
}

// awaitConfirm follows the confirm window p (host.Applier.AwaitConfirm):
// on a terminal, the operator is asked on stderr and answers on stdin.
func awaitConfirm(ctx context.Context, g *globals, p *host.Pending) (kept bool, msg string) {
	var prompt *host.Prompt
	if _, err := unix.IoctlGetTermios(int(os.Stdin.Fd()), unix.TCGETS); err == nil {
		g.flush() // the summary first, then the prompt
		prompt = &host.Prompt{In: os.Stdin, Out: os.Stderr}
	}
	return g.applier().AwaitConfirm(ctx, p, prompt)
}
