package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/relayfw/relayfw/host"
)

// explainFlags are explain's flags.
type explainFlags struct {
	format, proto, instance, user, to string
	inbound                           bool
}

func newExplainCommand(g *globals) *cobra.Command {
	var f explainFlags
	cmd := &cobra.Command{
		Use:   "explain TARGET...",
		Short: "Say whether the exit policy and the host firewall let ADDR:PORT or [ADDR6]:PORT out, and why",
		Long: `For each target, print the exit policy's verdict and the deciding entry, as
"relayfw policy" lists it (index is its 0-based line number there), then
the host firewall's verdict for a new connection of --proto (tcp or udp)
and why: exit policy, relay link, host allowance, loopback, or the default
reject. Uses the model alone; no kernel state is read. With
OutboundBindAddressExit, the connection is taken to come from that address.

With several tor instances, each exit instance answers on a line of its own
starting "instance NAME:", for a connection of its tor (its User's
sockets); --instance NAME asks one. --user NAME asks for a connection of
another user's sockets: user-scoped rules (relay links, which only tor's
users get; the local resolver, package updates, allow.extra with a user)
are explained as the kernel applies them. A tor without User runs as root.

When relayfw's firewall is installed and readable, a relay link the cached
consensus has but the kernel does not yet is said so.

With --inbound, each TARGET is a source connecting to the relay (ADDR, or
ADDR:PORT with the local port it connects to; --to ADDR names the relay's
address it connects to), and the answer is what the inbound protection
([inbound]) does with its new connections: off, unprotected (not an
ORPort tor listens on), trusted, limited (with the limits of its source
network), or blocked now (read from the kernel, with the time left). A
port protected on some addresses only is said so.`,
		Example: `  relayfw explain 203.0.113.5:80 '[2001:db8::1]:443'
  relayfw explain --format json 198.51.100.9:25
  relayfw explain --inbound 203.0.113.7 '[2001:db8::7]:9001'
  relayfw explain --inbound --to 192.0.2.10 203.0.113.7:443`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.format != "text" && f.format != "json" {
				return usageError(fmt.Errorf("--format %q: want text or json", f.format))
			}
			if f.proto != "tcp" && f.proto != "udp" {
				return usageError(fmt.Errorf("--proto %q: want tcp or udp", f.proto))
			}
			if f.inbound {
				return explainInbound(cmd, g, args, f)
			}
			if cmd.Flags().Changed("to") {
				return usageError(fmt.Errorf("--to goes with --inbound"))
			}
			return explainOutbound(cmd, g, args, f)
		},
	}
	cmd.Flags().StringVar(&f.format, "format", "text", "output format: text or json")
	cmd.Flags().StringVar(&f.proto, "proto", "tcp", "protocol of the connection the firewall is asked about: tcp or udp")
	cmd.Flags().StringVar(&f.instance, "instance", "", "the tor instance to ask (default: every exit instance)")
	cmd.Flags().BoolVar(&f.inbound, "inbound", false, "explain what the inbound protection does with connections from each TARGET, a source ADDR[:PORT]")
	cmd.Flags().StringVar(&f.to, "to", "", "with --inbound: the relay's address the sources connect to (default: any)")
	cmd.Flags().StringVar(&f.user, "user", "", "ask for a connection of this user's sockets (name or uid), as the kernel matches user-scoped rules such as relay links (default: the instance's tor)")
	return cmd
}

// explainOutbound is explain without --inbound (host.Inputs.Explain).
func explainOutbound(cmd *cobra.Command, g *globals, args []string, f explainFlags) error {
	targets := make([]host.Target, len(args))
	for i, a := range args {
		t, err := host.ParseTarget(a)
		if err != nil {
			return usageError(err)
		}
		targets[i] = t
	}
	g.readOnly = true
	in, err := loadInputs(cmd, g)
	if err != nil {
		return err
	}
	insts, err := in.ExplainedInstances(f.instance)
	if err != nil {
		return usageError(fmt.Errorf("--instance: %w", err))
	}
	q := host.ExplainQuery{Proto: f.proto, Backend: backendChoice(cmd, g, in.Config())}
	if f.user != "" {
		uid, err := g.sys.UID(f.user)
		if err != nil {
			return usageError(fmt.Errorf("--user %q: %v", f.user, err))
		}
		q.User = &uid
	}
	return printEach(g.stdout, f.format, in.Explain(cmd.Context(), insts, targets, q), func(e host.Explanation) string {
		prefix := ""
		if e.Instance != "" {
			prefix = "instance " + e.Instance + ": "
		}
		return fmt.Sprintf("%s%s %s by entry %d: %s; firewall (%s): %s, %s (rule %s)\n",
			prefix, e.Target, e.Verdict, e.Index, e.Entry, e.Proto, e.Firewall, e.Reason, e.Rule)
	})
}

// explainInbound is explain --inbound (host.Inputs.ExplainInbound).
func explainInbound(cmd *cobra.Command, g *globals, args []string, f explainFlags) error {
	g.readOnly = true
	in, err := loadInputs(cmd, g)
	if err != nil {
		return err
	}
	dst, targets, err := host.ParseInboundTargets(args, f.to)
	if err != nil {
		return usageError(err)
	}
	answers := in.ExplainInbound(cmd.Context(), targets, dst, backendChoice(cmd, g, in.Config()))
	return printEach(g.stdout, f.format, answers, func(e host.InboundExplanation) string {
		rule := ""
		if e.Rule != "" {
			rule = " (rule " + e.Rule + ")"
		}
		return fmt.Sprintf("inbound from %s: %s, %s%s\n", e.Target, e.Verdict, e.Reason, rule)
	})
}

// printEach writes each answer: a JSON line with --format json, else the
// line text makes of it.
func printEach[T any](w io.Writer, format string, answers []T, text func(T) string) error {
	enc := json.NewEncoder(w)
	for _, e := range answers {
		if format == "json" {
			if err := enc.Encode(e); err != nil {
				return err
			}
			continue
		}
		if _, err := io.WriteString(w, text(e)); err != nil {
			return err
		}
	}
	return nil
}
