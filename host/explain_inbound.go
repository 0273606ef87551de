package host

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/ruleset"
)

// InboundExplanation is explain --inbound's answer for one source: what
// the inbound protection does with its new connections. It is one line
// of "relayfw explain --inbound --format json".
type InboundExplanation struct {
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

// InboundTarget is a source explain --inbound is asked about: as given,
// its address, and the local port it connects to (0: any).
type InboundTarget struct {
	Text string
	Addr netip.Addr
	Port uint16
}

// ParseInboundTargets reads explain --inbound's sources (ADDR, ADDR:PORT
// or [ADDR6]:PORT, PORT being the local port they connect to) and to, the
// relay's address they connect to ("": any, the invalid address).
func ParseInboundTargets(args []string, to string) (netip.Addr, []InboundTarget, error) {
	dst, err := parseInboundDestination(to)
	if err != nil {
		return dst, nil, err
	}
	var targets []InboundTarget
	for _, a := range args {
		addr, port, err := parseInboundTarget(a)
		if err != nil {
			return dst, nil, err
		}
		if dst.IsValid() && ruleset.FamilyOf(addr) != ruleset.FamilyOf(dst) {
			return dst, nil, fmt.Errorf("target %q: a source of another family than --to %s cannot connect to it", a, dst)
		}
		targets = append(targets, InboundTarget{a, addr, port})
	}
	return dst, targets, nil
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

// ExplainInbound answers, for sources connecting to the relay (at dst, or
// any of its addresses when dst is invalid), what the inbound protection
// does with their new connections; when backend's firewall (BackendChoice)
// is installed and readable, a source blocked now is said so.
func (in *Inputs) ExplainInbound(ctx context.Context, targets []InboundTarget, dst netip.Addr, backend string) []InboundExplanation {
	rs, _ := in.Ruleset()
	var blocked map[netip.Prefix]firewall.Block
	if rs.Inbound != nil {
		blocked = in.sys.installedBlocks(ctx, backend, *rs.Inbound)
	}
	out := make([]InboundExplanation, 0, len(targets))
	for _, t := range targets {
		out = append(out, inboundVerdict(rs.Inbound, t.Text, t.Addr, dst, t.Port, blocked))
	}
	return out
}

// inboundVerdict is the model's answer for connections from addr to the
// local port (0: any) at dst (invalid: any address), and the kernel's
// block if any.
func inboundVerdict(in *ruleset.Inbound, text string, addr, dst netip.Addr, port uint16, blocked map[netip.Prefix]firewall.Block) InboundExplanation {
	e := InboundExplanation{Target: text, Port: int(port)}
	if dst.IsValid() {
		e.Destination = dst.String()
	}
	if in == nil {
		e.Verdict, e.Reason = "off", "the inbound protection is off (enabled = true under [inbound] in relayfw.toml turns it on)"
		return e
	}
	src := in.Source(addr)
	e.Source = src.String()
	fam := ruleset.FamilyOf(addr)
	unprotected, where := inboundScope(in, fam, dst, port)
	switch {
	case unprotected != "":
		e.Verdict, e.Reason = "unprotected", unprotected
	case in.Trusts(addr):
		e.Verdict, e.Reason, e.Rule = "trusted", "a directory authority, a relay (trust_relays) or in trusted: never limited"+where, ruleset.InboundRuleName(ruleset.InboundRuleTrusted, fam)
	default:
		if b, ok := blocked[src]; ok {
			e.Verdict, e.Rule, e.ExpiresSeconds = "blocked", ruleset.InboundRuleName(ruleset.InboundRuleBlocked, fam), b.ExpiresSeconds
			e.Reason = fmt.Sprintf("source %s is blocked for %s more: new connections are dropped%s (relayfw unblock %s lifts it)",
				src, b.Left(), where, addr)
			return e
		}
		e.Verdict, e.Rule = "limited", ruleset.InboundRuleName(ruleset.InboundRuleMinute, fam)
		e.Reason = fmt.Sprintf("as source %s: at most %d new connections a minute (burst %d) and %d an hour, else blocked for %s; at most %d at once, else reset%s",
			src, in.PerMinute, in.Burst, in.PerHour, in.BlockText(), in.MaxConns, where)
	}
	return e
}

// inboundScope says whether connections of family fam to port (0: any) at
// dst (invalid: any address) are protected at all: unprotected says why
// not; where is the part of the relay's addresses the answer holds for,
// when the port is protected on some of them only.
func inboundScope(in *ruleset.Inbound, fam ruleset.Family, dst netip.Addr, port uint16) (unprotected, where string) {
	leftAlone := "relayfw leaves its connections to the host's own firewall"
	switch all, addrs := in.ProtectedOn(fam, port); {
	case port != 0 && dst.IsValid() && !in.Protects(netip.AddrPortFrom(dst, port)):
		unprotected = fmt.Sprintf("%s is not an ORPort tor listens on: %s", netip.AddrPortFrom(dst, port), leftAlone)
	case port != 0 && !dst.IsValid() && !all && len(addrs) == 0:
		unprotected = fmt.Sprintf("port %d is not an ORPort: %s", port, leftAlone)
	case port != 0 && !dst.IsValid() && !all:
		where = fmt.Sprintf(" (to %s only: port %d on other addresses is left to the host's own firewall)", addrsText(addrs), port)
	case port == 0 && dst.IsValid() && !slices.ContainsFunc(in.Endpoints, func(ep netip.AddrPort) bool {
		return ep.Addr() == dst || ep.Addr().IsUnspecified() && ruleset.FamilyOf(ep.Addr()) == fam
	}):
		unprotected = fmt.Sprintf("tor listens on no ORPort at %s: %s", dst, leftAlone)
	}
	return unprotected, where
}

// addrsText lists addresses as "192.0.2.11" or "192.0.2.11, 192.0.2.12".
func addrsText(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// installedBlocks reads the kernel's blocked sources, when backend's
// firewall is installed and readable; nil otherwise.
func (s *System) installedBlocks(ctx context.Context, backend string, inbound ruleset.Inbound) map[netip.Prefix]firewall.Block {
	b := s.InstalledBackend(ctx, backend)
	if b == nil {
		return nil
	}
	list, err := b.Blocked(ctx, inbound)
	if err != nil {
		return nil
	}
	out := map[netip.Prefix]firewall.Block{}
	for _, bl := range list {
		out[bl.Source] = bl
	}
	return out
}
