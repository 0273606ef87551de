package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/host"
	"github.com/relayfw/relayfw/internal/phase"
	"github.com/relayfw/relayfw/ruleset"
)

// compileRuleset loads the inputs and compiles the ruleset.
func compileRuleset(cmd *cobra.Command, g *globals) (ruleset.Ruleset, *host.Inputs, error) {
	in, err := loadInputs(cmd, g)
	if err != nil {
		return ruleset.Ruleset{}, nil, err
	}
	end := phase.Start(cmd.Context(), "compile")
	rs, _ := in.Ruleset()
	end()
	return rs, in, nil
}

// lockFunc takes the namespace's lock: guardAndLock for a change an open
// confirm window must not see, lockAndRecover for one it may, readLock
// for a reader.
type lockFunc func(ctx context.Context, g *globals) (release func(), err error)

// rulesetAndBackend takes the lock, then reads the inputs and compiles the
// ruleset, then picks the backend: two applies that race install what
// the torrc says when the last one got the lock, and bad input is
// reported before the kernel is asked anything. With a lock, release must
// be called.
func rulesetAndBackend(cmd *cobra.Command, g *globals, lock lockFunc) (rs ruleset.Ruleset, in *host.Inputs, b firewall.Backend, release func(), err error) {
	release = func() {}
	if lock != nil {
		if release, err = lock(cmd.Context(), g); err != nil {
			return rs, in, nil, func() {}, err
		}
	}
	rs, in, err = compileRuleset(cmd, g)
	if err != nil {
		return rs, in, nil, release, err
	}
	b, err = chooseBackend(cmd.Context(), g, backendChoice(cmd, g, in.Config()))
	if err != nil {
		return rs, in, b, release, err
	}
	// A refused consensus keeps the relay links installed.
	rs, err = in.WithInstalledLinks(cmd.Context(), b, rs)
	return rs, in, b, release, backendError(err)
}

// applyFlags are apply's flags.
type applyFlags struct {
	detailed, dryRun, automatic bool
	confirm                     time.Duration
}

func newApplyCommand(g *globals) *cobra.Command {
	var f applyFlags
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Install the firewall atomically (no change when already in sync)",
		Long: `Compile the ruleset and install it in one atomic step. When the installed
firewall already equals it, nothing changes. One line says what happened.
With --detailed-exitcode, exit 2 when something changed.

With --confirm DURATION (like iptables-apply), the previous firewall comes
back after DURATION unless "relayfw confirm" runs first (or Enter is pressed,
when apply runs on a terminal). The rollback is done by a detached watcher,
started before the firewall changes, so it happens even when the SSH session
that ran apply dies; should the watcher die too, the next relayfw command
run as root (status included) restarts it, or rolls back once the deadline
has passed, and where systemd runs a timer at the deadline does the same.
When the firewall is already in sync, no window opens. An apply that finds
a window open waits for it with --wait (else exits 75); when that window
ends in a rollback, it installs nothing and exits 5.

Everything the rollback needs is written before the firewall changes; if
it cannot be (a full or read-only /run), apply exits 73 and changes
nothing. The watcher logs what it did under /run/relayfw. On a terminal,
apply prints its summary, then asks for Enter; without it, at the deadline
it says "rolled back to ..." and exits 1. While the window is open, every
other change (apply, refresh, remove) is refused with exit 75 and one line
naming the deadline and the two ways out: relayfw confirm keeps the new
firewall, relayfw rollback restores the previous one now; with --wait they
wait for the window to end instead. relayfw confirm after the deadline is
refused (exit 1): the firewall was rolled back. status shows the window
and what a rollback would restore.

An apply reads its inputs after it has the lock, so two racing applies
install the torrc as it was when the last of them started.

With --automatic (the units' applies: boot, the re-apply path unit), after
an apply --confirm that was rolled back (not confirmed), the last good
firewall (the one last applied without a window, or confirmed) is kept
instead of the torrc's, which still holds the change that was rolled back,
until an operator applies by hand.

With --dry-run, nothing changes: apply says what it would change, in an
operator's terms — the TCP ports each exit map would accept or reject more,
and for which addresses; host allowances and rules added, removed or
changed; relay links +N -M; and any rule in relayfw's chains it did not
install (hand-made, or another tool's), which apply would remove. With
--detailed-exitcode, exit 2 when something would change. A real apply prints
the same lines after its summary.

Like policy, apply (and apply --dry-run) warns on stderr when an exit's
server descriptor would be too large for tor's directory authorities.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case f.dryRun && f.confirm > 0:
				return usageError(fmt.Errorf("--dry-run and --confirm: a dry run changes nothing to confirm"))
			case f.automatic && f.confirm > 0:
				return usageError(fmt.Errorf("--automatic and --confirm: the units' applies have nobody to confirm"))
			case f.dryRun:
				return applyDryRun(cmd, g, f.detailed)
			}
			return runApply(cmd, g, f)
		},
	}
	cmd.Flags().BoolVar(&f.detailed, "detailed-exitcode", false, "exit 2 when something changed (or, with --dry-run, would change)")
	cmd.Flags().BoolVar(&f.dryRun, "dry-run", false, "change nothing: say what apply would change")
	cmd.Flags().DurationVar(&f.confirm, "confirm", 0, "roll back after this long unless relayfw confirm runs (e.g. 60s)")
	cmd.Flags().BoolVar(&f.automatic, "automatic", false, "an unattended apply (the units'): after an unconfirmed rollback, keep the last good firewall")
	return cmd
}

// applyDryRun is apply --dry-run: what apply would change, under the
// readers' lock.
func applyDryRun(cmd *cobra.Command, g *globals, detailed bool) error {
	rs, in, b, release, err := rulesetAndBackend(cmd, g, readLock)
	defer release()
	if err != nil {
		return err
	}
	warnDescriptors(g, in.Instances)
	changes, err := g.sys.PlanChanges(cmd.Context(), b, rs)
	if err != nil {
		return backendError(fmt.Errorf("apply: %w", err))
	}
	if len(changes) == 0 {
		fmt.Fprintf(g.stdout, "dry run (%s): in sync, nothing would change\n", b.Name())
		return nil
	}
	fmt.Fprintf(g.stdout, "dry run (%s): apply would change:\n", b.Name())
	for _, c := range changes {
		fmt.Fprintf(g.stdout, "  %s\n", c)
	}
	if detailed {
		return &exitStatus{code: exitChanged}
	}
	return nil
}

// runApply is apply: under the lock for a change, the torrc's firewall
// (or, --automatic after an unconfirmed rollback, the last good one),
// with a confirm window when asked.
func runApply(cmd *cobra.Command, g *globals, f applyFlags) error {
	var found *host.Pending
	lock := lockFunc(func(ctx context.Context, g *globals) (func(), error) {
		release, p, err := lockForChange(ctx, g)
		found = p
		return release, err
	})
	rs, in, b, release, err := rulesetAndBackend(cmd, g, lock)
	defer func() { release() }()
	if err != nil {
		return err
	}
	defer warnDescriptorsLater(g, in.Instances)()
	if found != nil {
		if at, rolled := g.sys.WindowRolledBack(found.Window()); rolled {
			return &exitError{code: exitRolledBack, err: fmt.Errorf("apply: the apply --confirm window this apply waited for (until %s) was rolled back at %s; nothing installed (run apply again to install the torrc's firewall)",
				found.Window(), at.Format(time.RFC3339))}
		}
	}
	if f.automatic {
		if rb, ok := g.sys.ReadRolledBack(); ok {
			if err := keepLastGood(cmd, g, rb); err != nil {
				return fmt.Errorf("apply --automatic: %w", err)
			}
			return nil
		}
	}
	// What the apply starts from, for the lines that say what it
	// changed: the backend's own comparison supplies the rest.
	plan, err := g.sys.NewPlan(cmd.Context(), b, rs)
	if err != nil {
		return backendError(fmt.Errorf("apply: %w", err))
	}
	if f.confirm > 0 {
		if inSync, err := confirmInSync(cmd, g, b, rs); inSync || err != nil {
			return err
		}
	}
	applier := g.applier()
	applier.Automatic, applier.Plan = f.automatic, plan
	res, p, err := applier.Apply(cmd.Context(), b, rs, f.confirm)
	if err != nil {
		return hostError(fmt.Errorf("apply: %w", err))
	}
	printApplied(g, b, res, plan, in)
	warnConntrack(cmd, g)
	if p != nil {
		release() // the watcher takes the lock at the deadline
		release = func() {}
		kept, msg := awaitConfirm(cmd.Context(), g, p)
		fmt.Fprintln(g.stdout, msg)
		if !kept {
			return &exitStatus{code: exitFailed}
		}
	}
	if res.Changed && f.detailed {
		return &exitStatus{code: exitChanged}
	}
	return nil
}

// confirmInSync is apply --confirm's look before it opens a window: when
// the firewall is in sync, no window opens (and it says so).
func confirmInSync(cmd *cobra.Command, g *globals, b firewall.Backend, rs ruleset.Ruleset) (bool, error) {
	changes, err := g.sys.PlanChanges(cmd.Context(), b, rs)
	if err != nil {
		return false, backendError(fmt.Errorf("apply: %w", err))
	}
	if len(changes) > 0 {
		return false, nil
	}
	_ = g.sys.ForgetRolledBack() // the torrc's firewall is the one installed
	fmt.Fprintf(g.stdout, "in sync, nothing changed (%s): no confirm window opened\n", b.Name())
	return true, nil
}

// printApplied says what an apply did: its summary, what it changed, and
// for a host that does not exit, that it does not.
func printApplied(g *globals, b firewall.Backend, res firewall.Result, plan *host.Plan, in *host.Inputs) {
	fmt.Fprintln(g.stdout, summary(b, res))
	if res.Changed {
		for _, c := range plan.Changes(res.Drift) {
			fmt.Fprintf(g.stdout, "  %s\n", c)
		}
	}
	if note := in.NotExitNote(); note != "" {
		fmt.Fprintln(g.stdout, note)
	}
}

// keepLastGood is an automatic apply (apply --automatic, boot) after an
// unconfirmed rollback: the torrc still holds the change the operator did
// not confirm, so until an operator applies by hand it installs (or keeps)
// the last good firewall, with the backend that installed it.
func keepLastGood(cmd *cobra.Command, g *globals, rb host.RolledBack) error {
	why := fmt.Sprintf("the torrc's firewall was rolled back at %s (%s, not confirmed)", rb.At.Format(time.RFC3339), rb.Why)
	lg, err := g.sys.ValidLastGood()
	if err != nil {
		return fmt.Errorf("%s and there is no last good firewall to keep (%w); install the torrc's by hand: relayfw apply --confirm 2m", why, err)
	}
	b, res, err := g.sys.InstallFallback(cmd.Context(), lg.Backend, lg.Ruleset, host.ChangeApplied, host.DescribeLastGood(lg)+": "+why, g.log)
	if err != nil {
		return backendError(fmt.Errorf("%s; installing %s failed: %w", why, host.DescribeLastGood(lg), err))
	}
	what := "kept"
	if res.Changed {
		what = "installed"
	}
	fmt.Fprintf(g.stdout, "%s %s: %s; %s; install the torrc's by hand with relayfw apply --confirm 2m\n", what, host.DescribeLastGood(lg), counts(b, res), why)
	return nil
}

func summary(b firewall.Backend, res firewall.Result) string {
	what := fmt.Sprintf("%d rules, %d sets, %d set elements (%s)", res.Rules, res.Sets, res.Elements, b.Name())
	if res.Changed {
		return "applied: " + what
	}
	return "in sync, nothing changed: " + what
}

// checkLong is check's manual text (relayfw-check(8)).
const checkLong = `Compare the installed firewall with the one compiled now. Exit 0 when they
are equal; 1, listing the differences, when a rule, chain, set or the exit
policy differs (drift: relayfw apply repairs it); 3 when the rules are in sync
but the relay links are behind tor's cached consensus (tor fetched a new one
and relayfw refresh has not run yet: it, or relayfw-consensus.path, brings
them up to date); 4 when a running tor enforces another exit policy than
the one relayfw compiled from its torrc. When it finds several, check
exits with the most severe code, in this order: 1 (drift),
then 4 (the running tor's policy), then 3.

The running tor: for each tor instance whose torrc names a ControlSocket
(Debian's defaults file sets /run/tor/control) or a ControlPort on
loopback, with CookieAuthentication 1, check asks tor's own "GETINFO
exit-policy/full" (SAFECOOKIE when tor offers it; within a few seconds;
whatever the socket sends is untrusted) and compares it with "relayfw
policy". tor's reject of the relay's own address that tor found itself
and relayfw did not know (a host behind NAT, whose public address is on
no interface) is not a difference. A difference is listed — the entries
only tor has, the entries only relayfw has (the first 10 of each), or the
same entries in another order — with what to do: "reload tor (systemctl
reload tor@NAME)", or, when the running tor is not the release relayfw
models (0.4.9), that its version differs. A tor that was asked and
matches gets a line too; one whose control socket or port fails says why
(without a control socket or port, nothing: relayfw status says it).

check also says, per relay instance, what clients believe of its exit
policy (the "published:" lines of relayfw status): the summary of its
microdescriptor in the consensus tor caches, against the ports the
firewall lets out for general addresses. Ports the summary accepts that
the firewall rejects are a BadExit risk, to be fixed by reloading tor and
waiting for the next consensus. These lines do not change the exit code:
after any policy change the published summary lags the firewall until tor
publishes its next descriptor and the authorities' next consensus lists
it, an hour or more, and a check run after every apply would fail for
that time; alert on relayfw_tor_published_ports_rejected instead.`

func newCheckCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "check",
		Short: "Exit 0 when the installed firewall is in sync, 1 (with the differences) when not, 4 when a running tor enforces another policy, 3 when only the relay links are behind",
		Long:  checkLong,
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return runCheck(cmd, g) },
	}
}

// runCheck compares the kernel with the compiled firewall, the running
// tors with their torrcs, and says what clients believe; its exit code is
// the most severe finding.
func runCheck(cmd *cobra.Command, g *globals) error {
	rs, in, b, lock, err := rulesetAndBackend(cmd, g, readLock)
	release := sync.OnceFunc(lock)
	defer release()
	if err != nil {
		return err
	}
	askedRunning := askRunningTorLater(cmd.Context(), in)
	drift, behind, err := g.sys.Check(cmd.Context(), b, rs)
	if err != nil {
		return backendError(fmt.Errorf("check: %w", err))
	}
	release()
	running := askedRunning()
	// What clients believe is said, whatever the rules' state,
	// and changes no exit code (a summary lags every change).
	defer writePublished(g.stdout, in.Published())
	var found []int // what check found: exit codes, mostSevere picks one
	if runningTorDiffers(running) {
		found = append(found, exitPolicyDiffers)
	}
	linksLine := fmt.Sprintf("relay links behind the cached consensus: %d to add, %d to remove (relayfw refresh)", behind.Missing, behind.Extra)
	if len(drift) > 0 {
		fmt.Fprintf(g.stdout, "drift (%s):\n", b.Name())
		for _, d := range drift {
			fmt.Fprintf(g.stdout, "  %s\n", d)
		}
		if behind.Total() > 0 {
			fmt.Fprintf(g.stdout, "%s\n", linksLine)
			found = append(found, exitLinksBehind)
		}
		if rb, ok := g.sys.ReadRolledBack(); ok {
			fmt.Fprintf(g.stdout, "the torrc differs from what is installed because its apply --confirm was rolled back at %s (not confirmed); relayfw apply --confirm 2m installs it\n", rb.At.Format(time.RFC3339))
		}
		writeRunningTorCheck(g.stdout, running)
		return &exitStatus{code: mostSevere(append(found, exitFailed)...)}
	}
	if behind.Total() > 0 {
		fmt.Fprintf(g.stdout, "rules in sync (%s); %s\n", b.Name(), linksLine)
		writeRunningTorCheck(g.stdout, running)
		return &exitStatus{code: mostSevere(append(found, exitLinksBehind)...)}
	}
	fmt.Fprintf(g.stdout, "in sync (%s)\n", b.Name())
	writeRunningTorCheck(g.stdout, running)
	if len(found) > 0 {
		return &exitStatus{code: mostSevere(found...)}
	}
	return nil
}

func newRemoveCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "remove",
		Short: "Remove everything relayfw installed, and nothing else",
		Long: `Remove relayfw's firewall and nothing else. With --backend (or backend in
relayfw.toml), from that backend; otherwise from every backend where relayfw's
objects are found, whichever backend put them there.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			release, err := guardAndLock(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer release()
			cfg, err := loadConfig(cmd, g)
			if err != nil {
				return err
			}
			var targets []firewall.Backend
			if g.backendSet(cmd) || (cfg.Backend != "" && cfg.Backend != "auto") {
				b, err := chooseBackend(cmd.Context(), g, backendChoice(cmd, g, cfg))
				if err != nil {
					return err
				}
				targets = []firewall.Backend{b}
			} else {
				// The command that gets an operator out of a lockout must
				// find the firewall whatever backend installed it.
				if _, err := chooseBackend(cmd.Context(), g, "auto"); err != nil {
					return err // no backend at all, or not permitted
				}
				targets = host.AllBackends(cmd.Context())
			}
			var names []string
			removedAny := false
			for _, b := range targets {
				names = append(names, b.Name())
				removed, err := b.Remove(cmd.Context())
				if err != nil {
					return backendError(fmt.Errorf("remove (%s): %w", b.Name(), err))
				}
				if removed {
					removedAny = true
					fmt.Fprintf(g.stdout, "removed (%s)\n", b.Name())
				}
			}
			if !removedAny {
				fmt.Fprintf(g.stdout, "nothing to remove (%s)\n", strings.Join(names, ", "))
			} else {
				_ = g.sys.RecordChange(host.Change{Kind: host.ChangeRemoved})
			}
			g.sys.ForgetApply()
			return nil
		},
	}
}
