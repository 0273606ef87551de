package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/relayfw/relayfw/host"
)

func newRefreshCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "refresh",
		Short: "Re-read the consensus and replace only the relay-link sets",
		Long: `Re-read tor's cached consensus (and the directory authorities and
fallbacks) and replace the contents of the relay-link sets atomically,
without touching any rule; with [inbound], the trusted sources too (the
authorities, and the relays with trust_relays). Prints how many elements
were added and removed. Run apply first.

The host names of allow.extra are resolved again too (an answer can
change, and an apply at boot may have run before the network was up):
when they now resolve to other addresses than at the last apply, and
nothing else changed since, refresh replaces the rules atomically as apply
does and says so. A name that does not resolve leaves what is installed.

After an unconfirmed rollback (until an operator applies by hand), refresh
changes nothing: the torrc still holds what was rolled back (its
DirAuthority and FallbackDir lines, its allowances), and the last good
firewall stays as it is, relay links included.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rs, in, b, release, err := rulesetAndBackend(cmd, g, guardAndLock)
			defer release()
			if err != nil {
				return err
			}
			if rb, ok := g.sys.ReadRolledBack(); ok {
				fmt.Fprintf(g.stdout, "refresh: nothing changed: an apply --confirm was rolled back at %s (%s, not confirmed) and the torrc still holds its change; the last good firewall stays, relay links included, until an operator applies by hand (relayfw apply --confirm 2m)\n",
					rb.At.Format(time.RFC3339), rb.Why)
				return nil
			}
			// allow.extra's host names were resolved again: new answers
			// replace the rules through the normal, atomic apply.
			if reapply, warning := in.ExtraReapply(b, rs); warning != "" {
				g.log.Warn(warning)
			} else if reapply {
				res, _, err := host.Applier{System: g.sys, Log: g.log, Automatic: true}.Apply(cmd.Context(), b, rs, 0)
				if err != nil {
					return hostError(fmt.Errorf("refresh: %w", err))
				}
				fmt.Fprintf(g.stdout, "allow.extra's host names resolve to new addresses: rules replaced; %s\n", summary(b, res))
				return nil
			}
			added, removed, err := g.sys.Refresh(cmd.Context(), b, rs)
			if err != nil {
				return backendError(fmt.Errorf("refresh: %w", err))
			}
			if added+removed > 0 {
				_ = g.sys.RecordChange(host.Change{Kind: host.ChangeApplied, Detail: fmt.Sprintf("refresh: relay links +%d -%d", added, removed)})
			}
			n := 0
			for _, s := range rs.Sets {
				n += len(s.Elements)
			}
			fmt.Fprintf(g.stdout, "refreshed relay links: %d added, %d removed, %d in all (%s)\n", added, removed, n, b.Name())
			return nil
		},
	}
}
