package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/host"
	"github.com/relayfw/relayfw/rules"
)

// inboundExplanation is one line of "explain --inbound --format json".
type inboundExplanation struct {
	Target string `json:"target"`
	Source string `json:"source"` // the source network it is metered as
	Port   int    `json:"port,omitempty"`
	// Destination is the local address it connects to (--to).
	Destination string `json:"destination,omitempty"`
	// Verdict is "off" (no [inbound]), "unprotected" (not an endpoint tor
	// listens on as an ORPort), "trusted", "limited" or "blocked" (blocked
	// now, in the kernel).
	Verdict string `json:"verdict"`
	Reason  string `json:"reason"`
	Rule    string `json:"rule,omitempty"`
	// ExpiresSeconds is a block's time left.
	ExpiresSeconds int64 `json:"expires_seconds,omitempty"`
}

// parseInboundTarget reads ADDR, ADDR:PORT or [ADDR6]:PORT.
func parseInboundTarget(s string) (netip.Addr, uint16, error) {
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return a.Unmap(), 0, nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
		return netip.Addr{}, 0, fmt.Errorf("target %q: want a source ADDR, ADDR:PORT or [ADDR6]:PORT (PORT: the local port it connects to)", s)
	}
	return ap.Addr().Unmap(), ap.Port(), nil
}

// parseInboundDestination reads --to: the local address the sources
// connect to; none: any.
func parseInboundDestination(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
	if err != nil || a.Zone() != "" || a.IsUnspecified() {
		return netip.Addr{}, fmt.Errorf("--to %q: want the relay's address the sources connect to (ADDR)", s)
	}
	return a.Unmap(), nil
}

// explainInbound answers, for sources connecting to the relay (at to, or
// any of its addresses), what the inbound protection does with their new
// connections; when the firewall is installed and readable, a source
// blocked now is said so.
func explainInbound(cmd *cobra.Command, g *globals, in *host.Inputs, args []string, format, to string) error {
	type target struct {
		text string
		addr netip.Addr
		port uint16
	}
	dst, err := parseInboundDestination(to)
	if err != nil {
		return usageError(err)
	}
	var targets []target
	for _, a := range args {
		addr, port, err := parseInboundTarget(a)
		if err != nil {
			return usageError(err)
		}
		if dst.IsValid() && rules.FamilyOf(addr) != rules.FamilyOf(dst) {
			return usageError(fmt.Errorf("target %q: a source of another family than --to %s cannot connect to it", a, dst))
		}
		targets = append(targets, target{a, addr, port})
	}
	rs, _ := in.Ruleset()
	var blocked map[netip.Prefix]firewall.Block
	if rs.Inbound != nil {
		blocked = installedBlocks(cmd, g, in, *rs.Inbound)
	}
	enc := json.NewEncoder(g.stdout)
	for _, t := range targets {
		e := inboundVerdict(rs.Inbound, t.text, t.addr, dst, t.port, blocked)
		if format == "json" {
			if err := enc.Encode(e); err != nil {
				return err
			}
			continue
		}
		rule := ""
		if e.Rule != "" {
			rule = " (rule " + e.Rule + ")"
		}
		if _, err := fmt.Fprintf(g.stdout, "inbound from %s: %s, %s%s\n", e.Target, e.Verdict, e.Reason, rule); err != nil {
			return err
		}
	}
	return nil
}

// inboundVerdict is the model's answer for connections from addr to the
// local port (0: any) at dst (invalid: any address), and the kernel's
// block if any.
func inboundVerdict(in *rules.Inbound, text string, addr, dst netip.Addr, port uint16, blocked map[netip.Prefix]firewall.Block) inboundExplanation {
	e := inboundExplanation{Target: text, Port: int(port)}
	if dst.IsValid() {
		e.Destination = dst.String()
	}
	if in == nil {
		e.Verdict, e.Reason = "off", "the inbound protection is off (enabled = true under [inbound] in relayfw.toml turns it on)"
		return e
	}
	src := in.Source(addr)
	e.Source = src.String()
	fam := rules.FamilyOf(addr)
	// where is the part of the relay's addresses the answer holds for,
	// when the port is protected on some of them only.
	where := ""
	leftAlone := "relayfw leaves its connections to the host's own firewall"
	unprotected := ""
	switch all, addrs := in.ProtectedOn(fam, port); {
	case port != 0 && dst.IsValid() && !in.Protects(netip.AddrPortFrom(dst, port)):
		unprotected = fmt.Sprintf("%s is not an ORPort tor listens on: %s", netip.AddrPortFrom(dst, port), leftAlone)
	case port != 0 && !dst.IsValid() && !all && len(addrs) == 0:
		unprotected = fmt.Sprintf("port %d is not an ORPort: %s", port, leftAlone)
	case port != 0 && !dst.IsValid() && !all:
		where = fmt.Sprintf(" (to %s only: port %d on other addresses is left to the host's own firewall)", addrsText(addrs), port)
	case port == 0 && dst.IsValid() && !slices.ContainsFunc(in.Endpoints, func(ep netip.AddrPort) bool {
		return ep.Addr() == dst || ep.Addr().IsUnspecified() && rules.FamilyOf(ep.Addr()) == fam
	}):
		unprotected = fmt.Sprintf("tor listens on no ORPort at %s: %s", dst, leftAlone)
	}
	switch {
	case unprotected != "":
		e.Verdict, e.Reason = "unprotected", unprotected
	case in.Trusts(addr):
		e.Verdict, e.Reason, e.Rule = "trusted", "a directory authority, a relay (trust_relays) or in trusted: never limited"+where, rules.InboundRuleName(rules.InboundRuleTrusted, fam)
	default:
		if b, ok := blocked[src]; ok {
			e.Verdict, e.Rule, e.ExpiresSeconds = "blocked", rules.InboundRuleName(rules.InboundRuleBlocked, fam), b.ExpiresSeconds
			e.Reason = fmt.Sprintf("source %s is blocked for %s more: new connections are dropped%s (relayfw unblock %s lifts it)",
				src, b.Left(), where, addr)
			return e
		}
		e.Verdict, e.Rule = "limited", rules.InboundRuleName(rules.InboundRuleMinute, fam)
		e.Reason = fmt.Sprintf("as source %s: at most %d new connections a minute (burst %d) and %d an hour, else blocked for %s; at most %d at once, else reset%s",
			src, in.PerMinute, in.Burst, in.PerHour, in.BlockText(), in.MaxConns, where)
	}
	return e
}

// addrsText lists addresses as "192.0.2.11" or "192.0.2.11, 192.0.2.12".
func addrsText(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// installedBlocks reads the kernel's blocked sources, when relayfw's
// firewall is installed and readable; nil otherwise.
func installedBlocks(cmd *cobra.Command, g *globals, in *host.Inputs, inbound rules.Inbound) map[netip.Prefix]firewall.Block {
	b := installedBackend(cmd, g, in)
	if b == nil {
		return nil
	}
	list, err := b.Blocked(cmd.Context(), inbound)
	if err != nil {
		return nil
	}
	out := map[netip.Prefix]firewall.Block{}
	for _, bl := range list {
		out[bl.Source] = bl
	}
	return out
}
