package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/relayfw/relayfw/rules"
)

// Confirm-or-rollback, like iptables-apply: apply --confirm keeps the
// ruleset relayfw last applied, installs the new one, and leaves a
// detached watcher (its own session, so it outlives the SSH connection
// that ran apply) that restores the old one at the deadline unless
// `relayfw confirm` (or Enter, on a terminal) came first.

// pending is an apply waiting for confirmation.
type pending struct {
	Deadline time.Time `json:"deadline"`
	Backend  string    `json:"backend"` // the backend the apply used
	// PreviousBackend installed the firewall being replaced ("" when
	// unknown: the same backend).
	PreviousBackend string `json:"previous_backend,omitempty"`
	Previous        string `json:"previous"` // ruleset file to restore; "" means remove
	Watcher         int    `json:"watcher"`  // pid of the rollback watcher
}

func pendingPath() string    { return strings.Replace(statePath(), ".json", ".pending.json", 1) }
func appliedRuleset() string { return strings.Replace(statePath(), ".json", ".ruleset.json", 1) }

// saveRuleset remembers the ruleset apply installed, for a later rollback.
func saveRuleset(path string, rs rules.Ruleset) error {
	data, err := json.Marshal(rs)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readPending() (*pending, error) {
	data, err := os.ReadFile(pendingPath())
	if err != nil {
		return nil, err
	}
	var p pending
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("%s: %w", pendingPath(), err)
	}
	return &p, nil
}

func writePending(p *pending) error {
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	tmp := pendingPath() + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, pendingPath())
}

// prepareRollback keeps a copy of the last applied ruleset before apply
// replaces it; "" when there is none (rollback then removes).
func prepareRollback() (string, error) {
	data, err := os.ReadFile(appliedRuleset())
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	prev := strings.Replace(appliedRuleset(), ".ruleset.json", ".previous.json", 1)
	if err := os.WriteFile(prev, data, 0o600); err != nil {
		return "", err
	}
	return prev, nil
}

// startWatcher starts the detached rollback watcher for p (whose pending
// file apply wrote before changing anything) and records its pid.
func startWatcher(g *globals, p *pending) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "rollback-watcher", "--backend", p.Backend)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // survives the session that ran apply
	// What the watcher says (the rollback, or its failure) goes to a log
	// next to the state.
	logPath := strings.Replace(statePath(), ".json", ".rollback.log", 1)
	if f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err == nil {
		cmd.Stderr = f
		defer f.Close()
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	p.Watcher = cmd.Process.Pid
	_ = cmd.Process.Release()
	// The pid only lets confirm stop the watcher early; without it the
	// watcher still ends once the pending file is gone.
	_ = writePending(p)
	return nil
}

// rollback restores the previous ruleset, or removes the firewall, on the
// backend that had it; the new firewall goes from the backend the apply
// used.
func rollback(cmd *cobra.Command, g *globals, p *pending) (string, error) {
	b, err := chooseBackend(cmd.Context(), g, p.Backend)
	if err != nil {
		return "", err
	}
	if p.Previous == "" {
		if _, err := b.Remove(cmd.Context()); err != nil {
			return "", err
		}
		_ = os.Remove(appliedRuleset())
		forgetApply()
		return "rolled back: removed the firewall (there was none before)", nil
	}
	data, err := os.ReadFile(p.Previous)
	if err != nil {
		return "", err
	}
	var rs rules.Ruleset
	if err := json.Unmarshal(data, &rs); err != nil {
		return "", fmt.Errorf("%s: %w", p.Previous, err)
	}
	prev := b
	if p.PreviousBackend != "" && p.PreviousBackend != backendKind(b) {
		if prev, err = chooseBackend(cmd.Context(), g, p.PreviousBackend); err != nil {
			return "", err
		}
	}
	if _, err := prev.Apply(cmd.Context(), rs); err != nil {
		return "", err
	}
	removeOthers(cmd.Context(), g, prev)
	recordApply(g, backendKind(prev))
	_ = saveRuleset(appliedRuleset(), rs)
	return fmt.Sprintf("rolled back: the previous firewall is restored (%s)", prev.Name()), nil
}

func newRollbackWatcherCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:    "rollback-watcher",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for {
				p, err := readPending()
				if err != nil {
					return nil // confirmed (or already rolled back)
				}
				if left := time.Until(p.Deadline); left > 0 {
					time.Sleep(min(left, 250*time.Millisecond))
					continue
				}
				release, err := acquireLock(time.Minute)
				if err != nil {
					return err
				}
				defer release()
				if _, err := readPending(); err != nil {
					return nil // confirmed at the last moment
				}
				msg, err := rollback(cmd, g, p)
				if err != nil {
					g.log.Error(fmt.Sprintf("rollback failed: %v", err))
					return err
				}
				_ = os.Remove(pendingPath())
				g.log.Warn(msg)
				return nil
			}
		},
	}
}

func newConfirmCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "confirm",
		Short: "Keep the firewall of a pending apply --confirm",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			release, err := acquireLock(g.wait)
			if err != nil {
				return err
			}
			defer release()
			p, err := readPending()
			if errors.Is(err, os.ErrNotExist) {
				return &exitError{code: exitFailed, err: errors.New("no apply is waiting for confirmation (did it roll back already?)")}
			}
			if err != nil {
				return err
			}
			if err := keep(p); err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, "confirmed: the new firewall stays")
			return nil
		},
	}
}

// keep confirms the pending apply: its record goes, and its watcher is
// told to stop (it would stop anyway, finding no record).
func keep(p *pending) error {
	if err := os.Remove(pendingPath()); err != nil {
		return err
	}
	if p.Watcher > 0 {
		_ = syscall.Kill(p.Watcher, syscall.SIGTERM)
	}
	return nil
}

// awaitEnter waits for Enter on a terminal until the deadline; it reports
// whether the operator confirmed.
func awaitEnter(g *globals, p *pending) bool {
	if _, err := unix.IoctlGetTermios(int(os.Stdin.Fd()), unix.TCGETS); err != nil {
		return false // not a terminal
	}
	fmt.Fprintf(os.Stderr, "Press Enter within %s to keep the new firewall (or run relayfw confirm); otherwise it rolls back.\n",
		time.Until(p.Deadline).Round(time.Second))
	line := make(chan struct{}, 1)
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		line <- struct{}{}
	}()
	select {
	case <-line:
		if _, err := readPending(); err == nil && keep(p) == nil {
			return true
		}
	case <-time.After(time.Until(p.Deadline) + time.Second):
	}
	return false
}

// confirmStatus is one line for a pending deadline.
func confirmStatus(p *pending) string {
	return "waiting for `relayfw confirm` until " + p.Deadline.Format(time.RFC3339) +
		" (watcher pid " + strconv.Itoa(p.Watcher) + "); without it the previous firewall comes back"
}
