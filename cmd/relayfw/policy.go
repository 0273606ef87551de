package main

import (
	"fmt"
	"strings"

	"github.com/relayfw/relayfw/host"

	"github.com/spf13/cobra"
)

func newPolicyCommand(g *globals) *cobra.Command {
	var instance string
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Print the effective exit policy, as tor's GETINFO exit-policy/full does",
		Long: `Print the exit policy tor publishes for this torrc, one entry per line,
byte-identical to tor's "GETINFO exit-policy/full". A relay that exits
nowhere prints the single line "reject *:*".

With several tor instances, each instance's policy follows a line
"# tor instance NAME (TORRC[, user USER])"; --instance NAME prints one
instance's policy alone, without that line.

On stderr, a warning says when an exit's server descriptor would be larger
than the 20,000 bytes tor's directory authorities accept (tor's
MAX_DESCRIPTOR_UPLOAD_SIZE: the relay would not be published), with the
estimated size and what merging adjacent prefixes with the same action and
ports in the ExitPolicy lines would save; print and apply warn the same.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			g.readOnly, g.torrcsOnly = true, true
			in, err := loadInputs(cmd, g)
			if err != nil {
				return err
			}
			insts, err := host.SelectInstance(in.Instances, instance)
			if err != nil {
				return usageError(fmt.Errorf("--instance: %w", err))
			}
			warnDescriptors(g, insts)
			for _, t := range insts {
				if len(insts) > 1 {
					if _, err := fmt.Fprintf(g.stdout, "# %s\n", t.Describe()); err != nil {
						return err
					}
				}
				if _, err := fmt.Fprintln(g.stdout, strings.Join(t.Effective.Policy.Lines(), "\n")); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&instance, "instance", "", "the tor instance to print (default: all)")
	return cmd
}
