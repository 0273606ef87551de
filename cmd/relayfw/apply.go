package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/rules"
)

// compileRuleset loads the inputs and compiles the ruleset.
func compileRuleset(cmd *cobra.Command, g *globals) (rules.Ruleset, error) {
	in, err := loadInputs(cmd, g)
	if err != nil {
		return rules.Ruleset{}, err
	}
	rs, _ := in.ruleset(g)
	return rs, nil
}

// rulesetAndBackend compiles the ruleset, then picks the backend: bad
// input is reported before the kernel is asked anything. With lock, the
// namespace's lock is taken in between and release must be called.
func rulesetAndBackend(cmd *cobra.Command, g *globals, lock bool) (rs rules.Ruleset, b firewall.Backend, release func(), err error) {
	release = func() {}
	rs, err = compileRuleset(cmd, g)
	if err != nil {
		return rs, nil, release, err
	}
	if lock {
		if release, err = acquireLock(g.wait); err != nil {
			return rs, nil, func() {}, err
		}
	}
	b, err = chooseBackend(cmd.Context(), g)
	return rs, b, release, err
}

func newApplyCommand(g *globals) *cobra.Command {
	var detailed bool
	var confirm time.Duration
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Install the firewall atomically (no change when already in sync)",
		Long: `Compile the ruleset and install it in one atomic step. When the installed
firewall already equals it, nothing changes. One line says what happened.
With --detailed-exitcode, exit 2 when something changed.

With --confirm DURATION (like iptables-apply), the previous firewall comes
back after DURATION unless "relayfw confirm" runs first (or Enter is pressed,
when apply runs on a terminal). The rollback is done by a detached watcher,
so it happens even when the SSH session that ran apply dies.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rs, b, release, err := rulesetAndBackend(cmd, g, true)
			defer func() { release() }()
			if err != nil {
				return err
			}
			var p *pending
			if confirm > 0 {
				// Everything a rollback needs is written before the
				// firewall changes; if it cannot be, nothing changes.
				if p, err := readPending(); err == nil {
					return &exitError{code: exitTempFail, err: fmt.Errorf("an earlier apply --confirm is pending: %s", confirmStatus(p))}
				}
				previous, err := prepareRollback()
				if err != nil {
					return &exitError{code: exitCantCreate, err: fmt.Errorf("apply --confirm: keeping the current ruleset: %w", err)}
				}
				p = &pending{Deadline: time.Now().Add(confirm), Backend: g.backend, Previous: previous}
				if err := writePending(p); err != nil {
					return &exitError{code: exitCantCreate, err: fmt.Errorf("apply --confirm: %w", err)}
				}
			}
			res, err := b.Apply(cmd.Context(), rs)
			if err != nil {
				if p != nil {
					_ = os.Remove(pendingPath())
				}
				return backendError(fmt.Errorf("apply: %w", err))
			}
			recordApply(g, b.Name())
			if err := saveRuleset(appliedRuleset(), rs); err != nil {
				g.log.Warn(fmt.Sprintf("cannot keep the applied ruleset for a later rollback: %v", err))
			}
			fmt.Fprintln(g.stdout, summary(b, res))
			if p != nil {
				if err := startWatcher(g, p); err != nil {
					// Nobody would roll back: do it now.
					msg, rerr := rollback(cmd, g, p)
					_ = os.Remove(pendingPath())
					if rerr != nil {
						return fmt.Errorf("apply --confirm: starting the rollback watcher: %v; rolling back failed too: %w", err, rerr)
					}
					return fmt.Errorf("apply --confirm: starting the rollback watcher: %w; %s", err, msg)
				}
				release() // the watcher takes the lock at the deadline
				release = func() {}
				if awaitEnter(g, p) {
					fmt.Fprintln(g.stdout, "confirmed: the new firewall stays")
				} else {
					fmt.Fprintln(g.stdout, confirmStatus(p))
				}
			}
			if res.Changed && detailed {
				return &exitStatus{code: exitChanged}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&detailed, "detailed-exitcode", false, "exit 2 when something changed")
	cmd.Flags().DurationVar(&confirm, "confirm", 0, "roll back after this long unless relayfw confirm runs (e.g. 60s)")
	return cmd
}

func summary(b firewall.Backend, res firewall.Result) string {
	what := fmt.Sprintf("%d rules, %d sets, %d set elements (%s)", res.Rules, res.Sets, res.Elements, b.Name())
	if res.Changed {
		return "applied: " + what
	}
	return "in sync, nothing changed: " + what
}

func newCheckCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "check",
		Short: "Exit 0 when the installed firewall is in sync, 1 (with the differences) when not",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rs, b, _, err := rulesetAndBackend(cmd, g, false)
			if err != nil {
				return err
			}
			drift, err := b.Check(cmd.Context(), rs)
			if err != nil {
				return backendError(fmt.Errorf("check: %w", err))
			}
			if len(drift) == 0 {
				fmt.Fprintf(g.stdout, "in sync (%s)\n", b.Name())
				return nil
			}
			fmt.Fprintf(g.stdout, "drift (%s):\n", b.Name())
			for _, d := range drift {
				fmt.Fprintf(g.stdout, "  %s\n", d)
			}
			return &exitStatus{code: exitFailed}
		},
	}
}

func newRemoveCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "remove",
		Short: "Remove everything relayfw installed, and nothing else",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			release, err := acquireLock(g.wait)
			if err != nil {
				return err
			}
			defer release()
			b, err := chooseBackend(cmd.Context(), g)
			if err != nil {
				return err
			}
			removed, err := b.Remove(cmd.Context())
			if err != nil {
				return backendError(fmt.Errorf("remove: %w", err))
			}
			if removed {
				fmt.Fprintf(g.stdout, "removed (%s)\n", b.Name())
			} else {
				fmt.Fprintf(g.stdout, "nothing to remove (%s)\n", b.Name())
			}
			return nil
		},
	}
}
