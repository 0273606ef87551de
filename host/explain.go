package host

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"

	"github.com/relayfw/relayfw/exitpolicy"
	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/ruleset"
)

// Explanation is explain's answer for one destination: the exit policy's
// verdict (verdict, entry, index), then the host firewall's for the
// protocol (firewall, reason, rule). It is one line of
// "relayfw explain --format json".
type Explanation struct {
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

// Target is a destination explain is asked about: as given, and read.
type Target struct {
	Text string
	Dst  netip.AddrPort
}

// ParseTarget reads ADDR:PORT or [ADDR6]:PORT, with a port from 1 to
// 65535.
func ParseTarget(s string) (Target, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
		return Target{}, fmt.Errorf("target %q: want ADDR:PORT or [ADDR6]:PORT with a port from 1 to 65535", s)
	}
	return Target{Text: s, Dst: ap}, nil
}

// ExplainQuery is what explain asks about a connection going out.
type ExplainQuery struct {
	// Proto is "tcp" or "udp".
	Proto string
	// User, when not nil, is the uid whose sockets the connection is
	// from; nil: each instance's tor's.
	User *uint32
	// Backend names the backend (BackendChoice) whose installed firewall
	// is read, when installed and readable, for the relay links it holds;
	// "": the model alone.
	Backend string
}

// ExplainedInstances are the instances explain answers for: the one
// named, or, for "", every exit instance (the first when none exits, to
// say "reject").
func (in *Inputs) ExplainedInstances(name string) ([]*Instance, error) {
	insts, err := SelectInstance(in.Instances, name)
	if err != nil || name != "" {
		return insts, err
	}
	var exits []*Instance
	for _, t := range insts {
		if t.IsExit() {
			exits = append(exits, t)
		}
	}
	if len(exits) == 0 {
		exits = insts[:1]
	}
	return exits, nil
}

// Explain says, for each instance of insts and each target, whether the
// exit policy and the host firewall let a new connection out, and why.
// It answers from the model; when q.Backend's firewall is installed and
// readable, a relay link the cached consensus has but the kernel does not
// yet is said so, and a refused consensus keeps the installed links.
func (in *Inputs) Explain(ctx context.Context, insts []*Instance, targets []Target, q ExplainQuery) []Explanation {
	rs, h := in.Ruleset()
	var kernelLinks map[netip.AddrPort]bool
	if b := in.sys.InstalledBackend(ctx, q.Backend); b != nil {
		if in.ConsensusRefused() {
			if kept, err := in.WithInstalledLinks(ctx, b, rs); err == nil {
				rs = kept // a refused consensus keeps the installed links
			}
		}
		kernelLinks = installedLinks(ctx, b, rs)
	}
	var out []Explanation
	for _, inst := range insts {
		for _, t := range targets {
			e := explainPolicy(inst.Effective.Policy, t)
			explainFirewall(&e, rs, h.RelayLinkUsers, inst, q, t.Dst)
			if e.Reason == "relay link" && kernelLinks != nil && !kernelLinks[netip.AddrPortFrom(t.Dst.Addr().Unmap(), t.Dst.Port())] {
				e.Reason = "relay link (in the cached consensus, not yet in the kernel: relayfw refresh)"
			}
			if len(in.Instances) > 1 {
				e.Instance = inst.Name
			}
			out = append(out, e)
		}
	}
	return out
}

// explainPolicy answers for one target, naming the entry as "relayfw
// policy" prints it.
func explainPolicy(p exitpolicy.ExitPolicy, t Target) Explanation {
	v := p.Decide(t.Dst.Addr(), t.Dst.Port())
	e := Explanation{Target: t.Text, Verdict: v.Action.String(), Index: v.Index}
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
func explainFirewall(e *Explanation, rs ruleset.Ruleset, linkUsers []ruleset.UserRef, inst *Instance, q ExplainQuery, t netip.AddrPort) {
	dst := t.Addr().Unmap()
	p := ruleset.Packet{OutIface: "eth0", Dst: dst, Proto: q.Proto, DstPort: t.Port(), SYN: true, SrcPort: 40000}
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
	if q.User != nil {
		p.UID = q.User
	}
	e.Proto = q.Proto
	i := rs.Decide(p).Index
	if i < 0 {
		e.Firewall, e.Reason, e.Rule = string(ruleset.Accept), "no rule matches (chain policy accept)", ""
		return
	}
	r := rs.Outbound[i]
	e.Firewall, e.Rule = string(r.Action), r.Name
	e.Reason = firewallReason(r, q.Proto, e.Verdict)
	if r.Action == ruleset.Reject {
		if users := linkUsersOf(rs, linkUsers, p); len(users) > 0 {
			e.Reason += " (a relay link, for the sockets of tor's user " + strings.Join(users, ", ") + " only)"
		}
	}
}

// firewallReason says why rule r decides, for a connection of proto that
// the exit policy answered verdict.
func firewallReason(r ruleset.Rule, proto, verdict string) string {
	switch {
	case r.Name == "loopback":
		return "loopback"
	case r.Class == ruleset.ClassExit:
		return "exit policy"
	case r.Class == ruleset.ClassRelayLink:
		return "relay link"
	case r.Action == ruleset.Reject && proto == "tcp" && verdict == "reject":
		return "rejected by the exit policy"
	case r.Action == ruleset.Reject:
		return "default reject"
	}
	return "host allowance"
}

// linkUsersOf names the users for whose sockets p would be a relay link.
func linkUsersOf(rs ruleset.Ruleset, users []ruleset.UserRef, p ruleset.Packet) []string {
	var out []string
	for _, u := range users {
		q := p
		q.UID = &u.UID
		if i := rs.Decide(q).Index; i >= 0 && rs.Outbound[i].Class == ruleset.ClassRelayLink && !slices.Contains(out, u.Name) {
			out = append(out, u.Name)
		}
	}
	return out
}

// installedLinks are the relay links b holds; nil when it holds none or
// cannot be read (explain then answers from the model alone).
func installedLinks(ctx context.Context, b firewall.Backend, rs ruleset.Ruleset) map[netip.AddrPort]bool {
	sets, err := b.RelayLinks(ctx, rs)
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

// InstalledBackend is the backend named (ChooseBackend) when relayfw's
// firewall is installed there and this process may read it; nil
// otherwise, and for "" (explain then answers from the model alone,
// quietly).
func (s *System) InstalledBackend(ctx context.Context, name string) firewall.Backend {
	if name == "" {
		return nil
	}
	b, err := s.chooseBackend(ctx, name, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil
	}
	if ok, err := b.Installed(ctx); err != nil || !ok {
		return nil
	}
	return b
}
