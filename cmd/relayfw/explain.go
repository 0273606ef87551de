package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/host"
	"github.com/relayfw/relayfw/rules"
)

// explanation is one line of "explain --format json": the exit policy's
// verdict (verdict, entry, index), then the host firewall's for the
// protocol (firewall, reason, rule).
type explanation struct {
	Instance string `json:"instance,omitempty"` // with several tor instances
	Target   string `json:"target"`
	Verdict  string `json:"verdict"`
	Entry    string `json:"entry"`
	Index    int    `json:"index"`

	Proto    string `json:"proto"`
	Firewall string `json:"firewall"`
	Reason   string `json:"reason"`
	Rule     string `json:"rule"`
}

func newExplainCommand(g *globals) *cobra.Command {
	var format, proto, instance, userName string
	var inbound bool
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
			if format != "text" && format != "json" {
				return usageError(fmt.Errorf("--format %q: want text or json", format))
			}
			if proto != "tcp" && proto != "udp" {
				return usageError(fmt.Errorf("--proto %q: want tcp or udp", proto))
			}
			if inbound {
				g.readOnly = true
				in, err := loadInputs(cmd, g)
				if err != nil {
					return err
				}
				to, _ := cmd.Flags().GetString("to")
				return explainInbound(cmd, g, in, args, format, to)
			}
			if cmd.Flags().Changed("to") {
				return usageError(fmt.Errorf("--to goes with --inbound"))
			}
			targets := make([]netip.AddrPort, len(args))
			for i, a := range args {
				ap, err := netip.ParseAddrPort(a)
				if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
					return usageError(fmt.Errorf("target %q: want ADDR:PORT or [ADDR6]:PORT with a port from 1 to 65535", a))
				}
				targets[i] = ap
			}
			g.readOnly = true
			in, err := loadInputs(cmd, g)
			if err != nil {
				return err
			}
			insts, err := host.SelectInstance(in.Instances, instance)
			if err != nil {
				return usageError(fmt.Errorf("--instance: %w", err))
			}
			if instance == "" {
				// The instances that exit answer; when none does, the
				// first says "reject".
				var exits []*host.Instance
				for _, t := range insts {
					if t.IsExit() {
						exits = append(exits, t)
					}
				}
				if len(exits) == 0 {
					exits = insts[:1]
				}
				insts = exits
			}
			var asUser *uint32
			if userName != "" {
				uid, err := g.sys.UID(userName)
				if err != nil {
					return usageError(fmt.Errorf("--user %q: %v", userName, err))
				}
				asUser = &uid
			}
			rs, h := in.Ruleset()
			if b := installedBackend(cmd, g, in); b != nil && in.ConsensusRefused() {
				if kept, err := in.WithInstalledLinks(cmd.Context(), b, rs); err == nil {
					rs = kept // a refused consensus keeps the installed links
				}
			}
			kernelLinks := installedLinks(cmd, g, in, rs)
			enc := json.NewEncoder(g.stdout)
			for _, inst := range insts {
				for i, t := range targets {
					e := explain(inst.Effective.Policy, args[i], t)
					explainFirewall(&e, rs, h.RelayLinkUsers, inst, asUser, proto, t)
					if e.Reason == "relay link" && kernelLinks != nil && !kernelLinks[netip.AddrPortFrom(t.Addr().Unmap(), t.Port())] {
						e.Reason = "relay link (in the cached consensus, not yet in the kernel: relayfw refresh)"
					}
					prefix := ""
					if len(in.Instances) > 1 {
						e.Instance, prefix = inst.Name, "instance "+inst.Name+": "
					}
					if format == "json" {
						if err := enc.Encode(e); err != nil {
							return err
						}
						continue
					}
					if _, err := fmt.Fprintf(g.stdout, "%s%s %s by entry %d: %s; firewall (%s): %s, %s (rule %s)\n",
						prefix, e.Target, e.Verdict, e.Index, e.Entry, e.Proto, e.Firewall, e.Reason, e.Rule); err != nil {
						return err
					}
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	cmd.Flags().StringVar(&proto, "proto", "tcp", "protocol of the connection the firewall is asked about: tcp or udp")
	cmd.Flags().StringVar(&instance, "instance", "", "the tor instance to ask (default: every exit instance)")
	cmd.Flags().BoolVar(&inbound, "inbound", false, "explain what the inbound protection does with connections from each TARGET, a source ADDR[:PORT]")
	cmd.Flags().String("to", "", "with --inbound: the relay's address the sources connect to (default: any)")
	cmd.Flags().StringVar(&userName, "user", "", "ask for a connection of this user's sockets (name or uid), as the kernel matches user-scoped rules such as relay links (default: the instance's tor)")
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

// explainFirewall adds the host firewall's verdict for a new connection.
// The connection is the instance's: from its tor's sockets (its User's,
// else root's) and its OutboundBindAddressExit. A relay link that the
// firewall rejects for this user is said to be another user's.
func explainFirewall(e *explanation, rs rules.Ruleset, linkUsers []rules.UserRef, inst *host.Instance, asUser *uint32, proto string, t netip.AddrPort) {
	dst := t.Addr().Unmap()
	p := rules.Packet{OutIface: "eth0", Dst: dst, Proto: proto, DstPort: t.Port(), SYN: true, SrcPort: 40000}
	if dst.IsLoopback() {
		p.OutIface = "lo"
	}
	for _, src := range inst.Options.OutboundBindExit {
		if src.Is4() == dst.Is4() {
			p.Src = src
		}
	}
	uid := inst.RunsAs()
	p.UID = &uid
	if asUser != nil {
		p.UID = asUser
	}
	e.Proto = proto
	i := rs.Verdict(p)
	if i < 0 {
		e.Firewall, e.Reason, e.Rule = rules.ActionAccept, "no rule matches (chain policy accept)", ""
		return
	}
	r := rs.Outbound[i]
	e.Firewall, e.Rule = r.Action, r.Name
	switch {
	case r.Name == "loopback":
		e.Reason = "loopback"
	case r.Class == rules.ClassExit:
		e.Reason = "exit policy"
	case r.Class == rules.ClassRelayLink:
		e.Reason = "relay link"
	case r.Action == rules.ActionReject && proto == "tcp" && e.Verdict == "reject":
		e.Reason = "rejected by the exit policy"
	case r.Action == rules.ActionReject:
		e.Reason = "default reject"
	default:
		e.Reason = "host allowance"
	}
	if r.Action == rules.ActionReject {
		if users := linkUsersOf(rs, linkUsers, p); len(users) > 0 {
			e.Reason += " (a relay link, for the sockets of tor's user " + strings.Join(users, ", ") + " only)"
		}
	}
}

// linkUsersOf names the users for whose sockets p would be a relay link.
func linkUsersOf(rs rules.Ruleset, users []rules.UserRef, p rules.Packet) []string {
	var out []string
	for _, u := range users {
		q := p
		q.UID = &u.UID
		if i := rs.Verdict(q); i >= 0 && rs.Outbound[i].Class == rules.ClassRelayLink && !slices.Contains(out, u.Name) {
			out = append(out, u.Name)
		}
	}
	return out
}

// installedLinks reads the relay links in the kernel, when relayfw's
// firewall is installed and this process may read it; nil otherwise (explain
// then answers from the model alone).
func installedLinks(cmd *cobra.Command, g *globals, in *host.Inputs, rs rules.Ruleset) map[netip.AddrPort]bool {
	b := installedBackend(cmd, g, in)
	if b == nil {
		return nil
	}
	sets, err := b.RelayLinks(cmd.Context(), rs)
	if err != nil || len(sets) == 0 {
		return nil
	}
	out := map[netip.AddrPort]bool{}
	for _, regions := range sets {
		for _, r := range regions {
			out[netip.AddrPortFrom(r.AddrFirst, r.Ports.First)] = true
		}
	}
	return out
}

// installedBackend is the backend holding relayfw's firewall, when it is
// installed and this process may read it; nil otherwise (explain then
// answers from the model alone, quietly).
func installedBackend(cmd *cobra.Command, g *globals, in *host.Inputs) firewall.Backend {
	b, err := host.ChooseBackend(cmd.Context(), backendChoice(cmd, g, in.Config()), slog.New(slog.DiscardHandler))
	if err != nil {
		return nil
	}
	if ok, err := b.Installed(cmd.Context()); err != nil || !ok {
		return nil
	}
	return b
}
