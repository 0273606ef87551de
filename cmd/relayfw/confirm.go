package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/relayfw/relayfw/host"
)

// startWatcher starts the detached rollback watcher (its own session, so
// it outlives the SSH connection that ran apply); what it says goes to a
// log next to the state.
func startWatcher(g *globals, p *host.Pending) (int, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(self, "rollback-watcher", "--backend", p.Backend)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if f, err := os.OpenFile(host.RollbackLogPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err == nil {
		cmd.Stderr = f
		defer f.Close()
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	return pid, nil
}

func newRollbackWatcherCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:    "rollback-watcher",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			msg, err := host.Watch(cmd.Context(), g.log)
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

func newConfirmCommand(g *globals) *cobra.Command {
	return pendingCommand(g, "confirm", "Keep the firewall of a pending apply --confirm",
		func(*cobra.Command) (string, error) {
			_, err := host.Confirm()
			return "confirmed: the new firewall stays", err
		})
}

func newRollbackCommand(g *globals) *cobra.Command {
	return pendingCommand(g, "rollback", "Roll a pending apply --confirm back now, instead of at its deadline",
		func(cmd *cobra.Command) (string, error) { return host.Rollback(cmd.Context(), g.log) })
}

// pendingCommand ends a pending apply --confirm under the lock: exit 1
// when none is pending, else the one line decide returns.
func pendingCommand(g *globals, use, short string, decide func(*cobra.Command) (string, error)) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			release, err := acquireLock(cmd.Context(), g.wait)
			if err != nil {
				return err
			}
			defer release()
			msg, err := decide(cmd)
			if errors.Is(err, host.ErrNothingPending) {
				return &exitError{code: exitFailed, err: err}
			}
			if err != nil {
				return hostError(fmt.Errorf("%s: %w", use, err))
			}
			fmt.Fprintln(g.stdout, msg)
			return nil
		},
	}
}

// awaitConfirm, on a terminal, waits for Enter until the deadline: Enter
// confirms; without it the watcher rolls back, and awaitConfirm says so
// once it has. It reports whether the firewall stays; on no terminal it
// returns at once, true (relayfw confirm decides).
func awaitConfirm(g *globals, p *host.Pending) (kept bool, msg string) {
	if _, err := unix.IoctlGetTermios(int(os.Stdin.Fd()), unix.TCGETS); err != nil {
		return true, fmt.Sprintf("waiting for relayfw confirm until %s; without it the watcher restores %s",
			p.Deadline.Format(time.RFC3339), p.Restores())
	}
	g.flush() // the summary first, then the prompt
	fmt.Fprintf(os.Stderr, "Press Enter within %s to keep the new firewall (or run relayfw confirm); otherwise it rolls back to %s.\n",
		time.Until(p.Deadline).Round(time.Second), p.Restores())
	line := make(chan struct{}, 1)
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		line <- struct{}{}
	}()
	select {
	case <-line:
		release, err := host.Lock(context.Background(), 10*time.Second)
		if err == nil {
			_, err = host.Confirm()
			release()
		}
		if err == nil {
			return true, "confirmed: the new firewall stays"
		}
	case <-time.After(time.Until(p.Deadline)):
	}
	// The watcher rolls back: wait for it to finish, then say so.
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if _, err := host.ReadPending(); errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	return false, "rolled back to " + p.Restores()
}
