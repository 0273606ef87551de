package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func newPolicyCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "policy",
		Short: "Print the effective exit policy, as tor's GETINFO exit-policy/full does",
		Long: `Print the exit policy tor publishes for this torrc, one entry per line,
byte-identical to tor's "GETINFO exit-policy/full". A relay that exits
nowhere prints the single line "reject *:*".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in, err := loadInputs(cmd, g)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(g.stdout, strings.Join(in.effective.Policy.Lines(), "\n"))
			return err
		},
	}
}
