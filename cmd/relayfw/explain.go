package main

import (
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/spf13/cobra"

	"github.com/relayfw/relayfw/rules"
)

// explanation is one line of "explain --format json".
type explanation struct {
	Target  string `json:"target"`
	Verdict string `json:"verdict"`
	Entry   string `json:"entry"`
	Index   int    `json:"index"`
}

func newExplainCommand(g *globals) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "explain TARGET...",
		Short: "Say whether the exit policy accepts ADDR:PORT or [ADDR6]:PORT, and which entry decides",
		Long: `For each target, print the exit policy's verdict and the deciding entry, as
"relayfw policy" lists it (index is its 0-based line number there). Uses the
model alone; no kernel state is read.`,
		Example: `  relayfw explain 203.0.113.5:80 '[2001:db8::1]:443'
  relayfw explain --format json 198.51.100.9:25`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "text" && format != "json" {
				return usageError(fmt.Errorf("--format %q: want text or json", format))
			}
			targets := make([]netip.AddrPort, len(args))
			for i, a := range args {
				ap, err := netip.ParseAddrPort(a)
				if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
					return usageError(fmt.Errorf("target %q: want ADDR:PORT or [ADDR6]:PORT with a port from 1 to 65535", a))
				}
				targets[i] = ap
			}
			in, err := loadInputs(cmd, g)
			if err != nil {
				return err
			}
			enc := json.NewEncoder(g.stdout)
			for i, t := range targets {
				e := explain(in.effective.Policy, args[i], t)
				if format == "json" {
					if err := enc.Encode(e); err != nil {
						return err
					}
					continue
				}
				if _, err := fmt.Fprintf(g.stdout, "%s %s by entry %d: %s\n", e.Target, e.Verdict, e.Index, e.Entry); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	return cmd
}

// explain answers for one target, naming the entry as "policy" prints it.
func explain(p rules.ExitPolicy, target string, t netip.AddrPort) explanation {
	v := p.Verdict(t.Addr(), t.Port())
	e := explanation{Target: target, Verdict: v.Action.String(), Index: v.Index}
	switch {
	case p.IsRejectStar():
		// "policy" prints the single line "reject *:*".
		e.Entry, e.Index = "reject *:*", 0
	case v.Index >= 0:
		e.Entry = v.Entry.String()
	default:
		e.Entry = "(no entry matches: tor accepts)"
	}
	return e
}
