package host

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"

	"github.com/relayfw/relayfw/exitpolicy"
	"github.com/relayfw/relayfw/relays"
)

// PublishedState is what clients believe of one relay instance's exit
// policy — the summaries of its microdescriptor in the consensus its tor
// caches — compared with the firewall: the summaries tor would publish
// for the policy relayfw compiled (exitpolicy.Summarize, ported from
// tor's policy_summarize).
type PublishedState struct {
	Instance string `json:"instance"`
	// InConsensus: the relay's fingerprint is in its cached microdesc
	// consensus.
	InConsensus bool   `json:"in_consensus"`
	Fingerprint string `json:"fingerprint,omitempty"`
	// Summary and Summary6 are the published summaries ("reject 1-65535"
	// where the microdescriptor has no such line); "" when unknown.
	Summary  string `json:"summary,omitempty"`
	Summary6 string `json:"summary6,omitempty"`
	// FirewallSummary and FirewallSummary6 are tor's summaries of the
	// policy the firewall enforces for the instance.
	FirewallSummary  string `json:"firewall_summary"`
	FirewallSummary6 string `json:"firewall_summary6"`
	// RejectedByFirewall (RejectedByFirewall6): ports the published
	// summary accepts that the firewall rejects for general addresses —
	// clients send streams there and they fail: the BadExit risk. "" for
	// none.
	RejectedByFirewall  string `json:"rejected_by_firewall"`
	RejectedByFirewall6 string `json:"rejected_by_firewall6"`
	// NotInSummary (NotInSummary6): ports the firewall lets out for
	// general addresses that the published summary does not list
	// (harmless: clients do not choose the relay for them yet).
	NotInSummary  string `json:"not_in_summary"`
	NotInSummary6 string `json:"not_in_summary6"`
	// PortsRejected counts the ports (of either family, each once) in
	// RejectedByFirewall and RejectedByFirewall6; nil when the published
	// summaries are unknown.
	PortsRejected *int `json:"ports_rejected,omitempty"`
	// BadExit: the consensus already gives the relay the BadExit flag.
	BadExit bool `json:"bad_exit,omitempty"`
	// Why says why the summaries are unknown, or a relay is not in the
	// consensus.
	Why string `json:"why,omitempty"`
}

// Known says whether the published summaries were read and compared.
func (p PublishedState) Known() bool { return p.PortsRejected != nil }

// Matches says whether the published summaries list exactly the ports
// the firewall lets out for general addresses.
func (p PublishedState) Matches() bool {
	return p.Known() && p.RejectedByFirewall == "" && p.RejectedByFirewall6 == "" && p.NotInSummary == "" && p.NotInSummary6 == ""
}

// Lines say it for status and check, one finding a line, without the
// instance's name.
func (p PublishedState) Lines() []string {
	if !p.Known() {
		return []string{p.Why}
	}
	var out []string
	summary := "summary " + printable(p.Summary)
	if p.Summary6 != exitpolicy.RejectAllSummary || p.FirewallSummary6 != exitpolicy.RejectAllSummary {
		summary += " (IPv6 " + printable(p.Summary6) + ")"
	}
	if p.Matches() {
		out = append(out, summary+" matches the firewall")
	}
	if rejected := joinFamilies(p.RejectedByFirewall, p.RejectedByFirewall6); rejected != "" {
		out = append(out, fmt.Sprintf("%s accepts %s, which the firewall rejects: BadExit risk, clients will send streams there; "+
			"tor publishes a new policy with its next descriptor: reload tor if it has not been, then wait for the next consensus", summary, rejected))
	}
	if extra := joinFamilies(p.NotInSummary, p.NotInSummary6); extra != "" {
		out = append(out, fmt.Sprintf("%s does not list %s, which the firewall lets out (harmless: clients do not choose the relay for these ports until tor publishes them)",
			summary, extra))
	}
	if p.BadExit {
		out = append(out, "the consensus gives the relay the BadExit flag: clients do not exit through it")
	}
	if p.Why != "" {
		out = append(out, p.Why)
	}
	return out
}

// printable is a published summary for a terminal: as it is when it is
// printable ASCII (as tor writes it), else quoted with Go escapes, since
// the tor user writes it and a terminal obeys escape sequences and
// carriage returns.
func printable(summary string) string {
	for i := 0; i < len(summary); i++ {
		if summary[i] < 0x20 || summary[i] >= 0x7f {
			return strconv.QuoteToASCII(summary)
		}
	}
	return summary
}

// joinFamilies names the ports of each family: "8080", "IPv6 8080",
// "8080 (IPv6 443)".
func joinFamilies(v4, v6 string) string {
	switch {
	case v6 == "":
		return v4
	case v4 == "":
		return "IPv6 " + v6
	}
	return v4 + " (IPv6 " + v6 + ")"
}

// Published reads, for each relay instance (bridges are in no public
// consensus), what its cached consensus and microdescriptors say clients
// believe of its exit policy, and compares it with the instance's
// compiled policy. It reads only tor's DataDirectory (no control port).
// A summary lagging after a policy change is expected until tor publishes
// a new descriptor and the next consensus lists it.
func (in *Inputs) Published() []PublishedState {
	var out []PublishedState
	for _, t := range in.Instances {
		if !t.IsRelay() || t.Options.BridgeRelay {
			continue
		}
		dir := in.dataDirectory(t)
		l, err := relays.ReadListing(dir)
		out = append(out, comparePublished(t.Name, t.Effective.Policy, dir, l, err))
	}
	return out
}

// comparePublished is Published for one instance, from what
// relays.ReadListing returned.
func comparePublished(instance string, policy exitpolicy.ExitPolicy, dir string, l relays.Listing, err error) PublishedState {
	st := PublishedState{Instance: instance}
	fw4, fw6 := policy.Summarize(false), policy.Summarize(true)
	st.FirewallSummary, st.FirewallSummary6 = fw4.Text, fw6.Text
	var refused *relays.RefusedError
	switch {
	case errors.Is(err, relays.ErrNoFingerprint):
		st.Why = fmt.Sprintf("unknown: no fingerprint file in %s (tor has not run as a relay with this DataDirectory)", dir)
		return st
	case errors.Is(err, relays.ErrNoMicrodescConsensus):
		st.Why = fmt.Sprintf("unknown: no cached microdesc consensus in %s (tor has not fetched one yet)", dir)
		return st
	case errors.As(err, &refused) && errors.Is(err, fs.ErrPermission):
		st.Why = fmt.Sprintf("unknown: %s: permission denied (tor's DataDirectory is read as root)", refused.Path)
		return st
	case errors.As(err, &refused):
		st.Why = fmt.Sprintf("unknown: %s refused: %v", refused.Path, refused.Err)
		return st
	case err != nil:
		st.Why = "unknown: " + err.Error()
		return st
	}
	st.Fingerprint = l.Fingerprint.String()
	switch {
	case !l.Listed:
		st.Why = fmt.Sprintf("not in the cached consensus (new relay, or not yet published): %s", l.ConsensusPath)
		return st
	case l.MicrodescPath == "":
		st.InConsensus = true
		st.Why = fmt.Sprintf("unknown: in the consensus, but tor has not cached its microdescriptor yet (%s, %s)",
			relays.MicrodescCache, relays.MicrodescJournal)
		return st
	}
	st.InConsensus, st.BadExit = true, l.Entry.HasFlag("BadExit")
	pub4, why4 := publishedPorts(l.Microdesc.Summary)
	pub6, why6 := publishedPorts(l.Microdesc.Summary6)
	if why := strings.Join(nonEmpty(why4, why6), "; "); why != "" {
		st.Why = why
	}
	st.Summary, st.Summary6 = orRejectAll(l.Microdesc.Summary), orRejectAll(l.Microdesc.Summary6)
	rej4, rej6 := pub4.Minus(fw4.Accepted), pub6.Minus(fw6.Accepted)
	st.RejectedByFirewall, st.RejectedByFirewall6 = rej4.String(), rej6.String()
	st.NotInSummary, st.NotInSummary6 = fw4.Accepted.Minus(pub4).String(), fw6.Accepted.Minus(pub6).String()
	n := slices.Concat(rej4, rej6).Normalize().Count()
	st.PortsRejected = &n
	return st
}

// publishedPorts are the ports a published summary accepts, as a client
// reads it: none where the line is absent, or where tor would not read it
// (then why says so).
func publishedPorts(summary string) (exitpolicy.Ports, string) {
	if summary == "" {
		return nil, ""
	}
	sp, err := exitpolicy.ParseSummary(summary)
	if err != nil {
		return nil, fmt.Sprintf("the published summary is one clients do not read (%v): they exit nowhere through the relay", err)
	}
	return sp.Accepted(), ""
}

func orRejectAll(summary string) string {
	if summary == "" {
		return exitpolicy.RejectAllSummary
	}
	return summary
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
