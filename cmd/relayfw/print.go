package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/relayfw/relayfw/rules"
)

func newPrintCommand(g *globals) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "print",
		Short: "Dry run: print the ruleset apply would install",
		Long: `Print exactly what apply would install, without privileges and without
touching kernel state. --format json prints the backend-neutral ruleset
(documented in the README).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "json" {
				return usageError(fmt.Errorf("--format %q: this build prints json only", format))
			}
			in, err := loadInputs(cmd, g)
			if err != nil {
				return err
			}
			rs := rules.Compile(in.effective.Policy, in.host(g))
			out, err := json.MarshalIndent(rs, "", "  ")
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(g.stdout, "%s\n", out)
			return err
		},
	}
	cmd.Flags().StringVar(&format, "format", "json", "output format: json")
	return cmd
}
