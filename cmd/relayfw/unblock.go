package main

import (
	"fmt"
	"net/netip"

	"github.com/spf13/cobra"

	"github.com/relayfw/relayfw/ruleset"
)

func newUnblockCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "unblock ADDR|PREFIX...",
		Short: "Lift the inbound protection's block of sources",
		Long: `Lift the block the inbound protection put on each source, given as an
address (the IPv6 /64 or whatever source prefix [inbound] sets is
lifted) or a prefix. The source's rate meters start afresh too (nftables
deletes them; with iptables, whose hashlimit meters cannot be reset, the
source skips them until they have refilled). relayfw status --format json
lists the blocked sources. For each source it says "unblocked SOURCE" or
"SOURCE was not blocked", and exits 0 either way. It takes the lock, but
works during an apply --confirm window too (a rollback keeps the blocks
the kernel holds then).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var sources []netip.Prefix
			for _, a := range args {
				p, err := ruleset.ParsePrefixOrAddr(a)
				if err != nil {
					return usageError(fmt.Errorf("unblock: %w", err))
				}
				sources = append(sources, p)
			}
			// The lock, but not the confirm guard: lifting a block is no
			// change a rollback would undo (a rollback keeps the blocks the
			// kernel holds then), and a flood does not wait for a window.
			rs, _, b, release, err := rulesetAndBackend(cmd, g, lockAndRecover)
			defer release()
			if err != nil {
				return err
			}
			if rs.Inbound == nil {
				return &exitError{code: exitFailed, err: fmt.Errorf("unblock: the inbound protection is off (enabled = true under [inbound] in relayfw.toml)")}
			}
			for _, p := range sources {
				// The block set holds source networks of the configured
				// prefix length: lift the one the address is in.
				src := rs.Inbound.Source(p.Addr())
				if p.Bits() < src.Bits() {
					return usageError(fmt.Errorf("unblock: %s is wider than a source (/%d): name the sources one by one", p, src.Bits()))
				}
				was, err := b.Unblock(cmd.Context(), src)
				if err != nil {
					return backendError(fmt.Errorf("unblock %s: %w", src, err))
				}
				if was {
					fmt.Fprintf(g.stdout, "unblocked %s (%s)\n", src, b.Name())
				} else {
					fmt.Fprintf(g.stdout, "%s was not blocked (%s)\n", src, b.Name())
				}
			}
			return nil
		},
	}
}
