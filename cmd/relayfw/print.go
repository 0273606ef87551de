package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/relayfw/relayfw/firewall/nft"
)

func newPrintCommand(g *globals) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "print",
		Short: "Dry run: print the ruleset apply would install",
		Long: `Print exactly what apply would install, without privileges and without
touching kernel state. --format nft prints nft -f input that replaces the
table inet relayfw in one transaction; --format json prints the
backend-neutral ruleset (documented in the README).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "json" && format != "nft" {
				return usageError(fmt.Errorf("--format %q: want nft or json (iptables formats come with the iptables backend)", format))
			}
			rs, err := compileRuleset(cmd, g)
			if err != nil {
				return err
			}
			if format == "nft" {
				text, err := nft.Render(rs)
				if err != nil {
					return err
				}
				_, err = io.WriteString(g.stdout, text)
				return err
			}
			out, err := json.MarshalIndent(rs, "", "  ")
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(g.stdout, "%s\n", out)
			return err
		},
	}
	cmd.Flags().StringVar(&format, "format", "nft", "output format: nft (nft -f input) or json (the backend-neutral ruleset)")
	return cmd
}
