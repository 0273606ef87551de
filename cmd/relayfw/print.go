package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/relayfw/relayfw/host"
)

func newPrintCommand(g *globals) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "print",
		Short: "Dry run: print the ruleset apply would install",
		Long: `Print exactly what apply would install, without privileges and without
touching kernel state. --format nft prints nft -f input that replaces the
table inet relayfw in one transaction; --format iptables and ip6tables
print iptables-restore --noflush input for the chain RELAYFW-OUTPUT, and
--format ipset the relay-link ipsets it refers to (ipset restore input);
--format json prints the backend-neutral ruleset (described in
ruleset-json.md, in /usr/share/doc/relayfw). Loading the nft, iptables,
ip6tables and ipset outputs gives the same kernel state as apply. Like
policy, print warns on stderr when an exit's server descriptor would be
too large for tor's directory authorities.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch format {
			case "nft", "iptables", "ip6tables", "ipset", "json":
			default:
				return usageError(fmt.Errorf("--format %q: want nft, iptables, ip6tables, ipset or json", format))
			}
			g.readOnly = true
			rs, in, err := compileRuleset(cmd, g)
			if err != nil {
				return err
			}
			if note := in.NotExitNote(); note != "" {
				g.log.Info(note)
			}
			warnDescriptors(g, in.Instances)
			if format != "json" {
				text, err := host.Render(rs, format)
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
	cmd.Flags().StringVar(&format, "format", "nft", "output format: nft (nft -f input), iptables or ip6tables (iptables-restore --noflush input), ipset (ipset restore input), json (the backend-neutral ruleset)")
	return cmd
}
