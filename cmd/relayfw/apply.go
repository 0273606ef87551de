package main

import (
	"fmt"

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
	return rules.Compile(in.effective.Policy, in.host(g)), nil
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
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Install the firewall atomically (no change when already in sync)",
		Long: `Compile the ruleset and install it in one atomic step. When the installed
firewall already equals it, nothing changes. One line says what happened.
With --detailed-exitcode, exit 2 when something changed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rs, b, release, err := rulesetAndBackend(cmd, g, true)
			defer release()
			if err != nil {
				return err
			}
			res, err := b.Apply(cmd.Context(), rs)
			if err != nil {
				return backendError(fmt.Errorf("apply: %w", err))
			}
			recordApply(g, b.Name())
			fmt.Fprintln(g.stdout, summary(b, res))
			if res.Changed && detailed {
				return &exitStatus{code: exitChanged}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&detailed, "detailed-exitcode", false, "exit 2 when something changed")
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
