package main

import (
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/spf13/cobra"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/host"
)

func newBootCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "boot",
		Short: "Install the firewall at boot, failing closed (what relayfw.service runs)",
		Long: `Apply as an automatic apply does, for relayfw.service at boot: the torrc's
firewall, or, after an apply --confirm that was rolled back and not applied
by hand since, the last good firewall (the one last applied without a
confirm window, or confirmed), kept in /var/lib/relayfw.

When the apply fails (a torrc relayfw cannot read, a User that does not
exist, a kernel that refuses the ruleset …), boot never leaves the host
unfiltered:

  - the last good firewall is installed instead; boot warns and exits 0,
    so tor starts, filtered as it was last confirmed to be;
  - with no last good firewall, the minimal one is: loopback, established
    and related packets and the pickup of connections that predate it (SSH
    sessions go on), ICMP and NDP, the host allowances of relayfw.toml (or
    its defaults, when it cannot be read), relay links for the tor users
    that can be known, and no exit traffic. boot then exits with the
    apply's error code, so that tor, whose units require relayfw.service
    when it is enabled, does not start as an exit that cannot exit.

status and metrics show the fallback as the last change ("fallback"), and
what was installed and why. Fix the cause, then run relayfw apply, or
systemctl start relayfw.service (starting tor starts it too).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runBoot(cmd, g) },
	}
}

// runBoot is relayfw boot: under the lock, the automatic apply, else a
// fallback (host/boot.go says which, and why the exit codes are what they
// are).
func runBoot(cmd *cobra.Command, g *globals) error {
	ctx := cmd.Context()
	release, err := guardAndLock(ctx, g)
	if err != nil {
		return err // a firewall stands and is being changed: nothing to fall back from
	}
	defer release()
	// After an unconfirmed rollback the torrc still holds the change the
	// operator did not confirm: the automatic applies keep the last good
	// firewall until an operator applies by hand.
	if rb, ok := g.sys.ReadRolledBack(); ok {
		if err := keepLastGood(cmd, g, rb); err != nil {
			cause := fmt.Errorf("the torrc's firewall was rolled back at %s (%s, not confirmed)", rb.At.Format(time.RFC3339), rb.Why)
			return bootMinimal(cmd, g, cause, err)
		}
		return nil
	}
	rs, in, b, _, err := rulesetAndBackend(cmd, g, nil)
	if err == nil {
		applier := host.Applier{System: g.sys, Log: g.log, Automatic: true}
		var res firewall.Result
		if res, _, err = applier.Apply(ctx, b, rs, 0); err == nil {
			fmt.Fprintln(g.stdout, summary(b, res))
			if note := in.NotExitNote(); note != "" {
				fmt.Fprintln(g.stdout, note)
			}
			return nil
		}
		err = hostError(fmt.Errorf("apply: %w", err))
	}
	if host.BootNeedsNoFallback(err) {
		return err
	}
	return bootFallback(cmd, g, err)
}

// bootFallback installs the last good firewall after the boot apply
// failed with cause (exit 0), else the minimal one (bootMinimal).
func bootFallback(cmd *cobra.Command, g *globals, cause error) error {
	lg, lgErr := g.sys.ValidLastGood()
	if lgErr == nil {
		detail := fmt.Sprintf("%s: the boot apply failed: %s", host.DescribeLastGood(lg), oneLine(cause.Error()))
		b, res, err := g.sys.InstallFallback(cmd.Context(), lg.Backend, lg.Ruleset, host.ChangeFallback, detail, g.log)
		if err == nil {
			fmt.Fprintf(g.stdout, "fallback: installed %s: %s\n", host.DescribeLastGood(lg), counts(b, res))
			g.log.Warn(fmt.Sprintf("boot: %s; installed %s instead: fix it, then relayfw apply",
				oneLine(cause.Error()), host.DescribeLastGood(lg)))
			return nil
		}
		lgErr = fmt.Errorf("installing %s failed: %w", host.DescribeLastGood(lg), err)
	}
	return bootMinimal(cmd, g, cause, lgErr)
}

// bootMinimal installs the minimal firewall and exits with cause's code:
// tor must not start. noLastGood says why the last good firewall was not
// installed.
func bootMinimal(cmd *cobra.Command, g *globals, cause, noLastGood error) error {
	why := "no last good firewall is recorded"
	if !errors.Is(noLastGood, fs.ErrNotExist) {
		why = oneLine(noLastGood.Error())
	}
	cfg, err := loadConfig(cmd, g)
	if err != nil {
		cfg = host.DefaultConfig() // relayfw.toml itself is what is invalid
	}
	rs, users := host.MinimalRuleset(cmd.Context(), inputOptions(cmd, g, cfg))
	what := host.DescribeMinimal(users)
	detail := fmt.Sprintf("%s: %s; %s", what, oneLine(cause.Error()), why)
	if _, _, err := g.sys.InstallFallback(cmd.Context(), backendChoice(cmd, g, cfg), rs, host.ChangeFallback, detail, g.log); err != nil {
		return &exitError{code: exitCode(cause), err: fmt.Errorf("boot: %w; %s; installing %s failed too: %v: relayfw's firewall is not installed",
			cause, why, host.FallbackMinimal, err)}
	}
	return &exitError{code: exitCode(cause), err: fmt.Errorf("boot: %w; %s: installed %s, so tor does not start; fix it, then relayfw apply, or systemctl start relayfw.service",
		cause, why, what)}
}

// counts says what a fallback installed.
func counts(b firewall.Backend, res firewall.Result) string {
	return fmt.Sprintf("%d rules, %d sets, %d set elements (%s)", res.Rules, res.Sets, res.Elements, b.Name())
}
