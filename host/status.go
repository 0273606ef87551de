package host

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/ruleset"
)

// StatusClasses are the verdict classes the counters are summed into.
var StatusClasses = []string{ruleset.ClassExit, ruleset.ClassRelayLink, ruleset.ClassHostAllowance,
	ruleset.ClassEstablished, ruleset.ClassRejectedPolicy, ruleset.ClassRejectedDefault}

// ruleClasses maps the ruleset's rule names to their verdict classes;
// installed rules the ruleset does not have count as "other".
type ruleClasses map[string]string

func (c ruleClasses) of(name string) string {
	if k, ok := c[name]; ok {
		return k
	}
	return "other"
}

// PendingStatus is an open confirm window: until when, and what a
// rollback restores.
type PendingStatus struct {
	Deadline time.Time `json:"deadline"`
	Restores string    `json:"restores"`
}

// Status is what relayfw status reports (its --format json).
type Status struct {
	Backend   string `json:"backend"`
	Installed bool   `json:"installed"`
	// AlsoInstalled are other backends holding relayfw objects (there
	// should be none: apply removes them).
	AlsoInstalled []string `json:"also_installed"`
	InSync        bool     `json:"in_sync"`
	// Drift are the kernel's differences from the ruleset, listed in JSON
	// by their text.
	Drift []firewall.Drift `json:"drift"`
	// RelayLinksBehind counts the relay links the cached consensus has and
	// the kernel lacks, and the other way round (refresh brings them up).
	RelayLinksBehind int `json:"relay_links_behind"`
	// Exit says whether a tor instance exits; Note says plainly what a
	// non-exit host gets.
	Exit bool `json:"exit"`
	// Pending is an open apply --confirm window.
	Pending   *PendingStatus              `json:"pending"`
	Note      string                      `json:"note,omitempty"`
	LastApply *time.Time                  `json:"last_apply"`
	Classes   map[string]firewall.Counter `json:"classes"`
	Rules     map[string]firewall.Counter `json:"rules"`
	// Inbound is the ORPort protection; nil when [inbound] is off.
	Inbound *InboundStatus `json:"inbound"`
	// Config says whether the inputs could be read (GatherStatusInvalid).
	Config ConfigStatus `json:"config"`
	// LastChange is the last change relayfw made to the firewall; nil
	// when none is known (a host that never applied since it was kept).
	LastChange *Change `json:"last_change"`
	// RolledBack is an unconfirmed rollback whose change the torrc still
	// holds: the automatic applies keep the last good firewall until an
	// operator applies by hand. nil when there is none.
	RolledBack *RolledBack `json:"rolled_back"`
	// Consensus is what became of each tor instance's cached consensus:
	// read (with its age), missing, or refused (and why).
	Consensus []ConsensusState `json:"consensus"`
	// Conntrack is the kernel's connection tracking table: entries, limit,
	// drops, the sysctls that size it, and warnings (host/conntrack.go).
	Conntrack *ConntrackStatus `json:"conntrack"`
	// RunningTor compares each instance's running tor's exit policy with
	// relayfw's (Inputs.AskRunningTor); nil while the inputs are invalid.
	RunningTor []RunningTor `json:"running_tor"`
	// Published is what clients believe of each relay instance's exit
	// policy (its summaries in tor's cached consensus and
	// microdescriptors, Inputs.Published), compared with the firewall.
	Published []PublishedState `json:"published"`

	ruleClass ruleClasses
}

// ConfigStatus says whether relayfw's inputs — the torrcs, their
// %includes and defaults files, relayfw.toml — could be read; Error is the
// one line every other command prints when they cannot.
type ConfigStatus struct {
	Valid bool   `json:"valid"`
	Error string `json:"error,omitempty"`
	// Tor is tor's own judgement of the torrcs (Inputs.TorVerdict):
	// "accepted by tor 0.4.9.11", or why tor was not consulted.
	Tor string `json:"tor,omitempty"`
}

// InboundStatus is what the ORPort protection did.
type InboundStatus struct {
	// Endpoints are the protected endpoints (ruleset.Inbound's).
	Endpoints []netip.AddrPort `json:"endpoints"`
	Summary   string           `json:"summary"`
	// NewConnections counts the connection attempts it looked at;
	// Trusted those from trusted sources.
	NewConnections uint64 `json:"new_connections"`
	Trusted        uint64 `json:"trusted"`
	// Drops counts refused connection attempts by cause: "blocked" (the
	// source was blocked), "minute" and "hour" (the source broke a rate and
	// is blocked from now), "conns" (too many at once: reset).
	Drops map[string]uint64 `json:"drops"`
	// Blocked are the sources blocked now.
	Blocked []firewall.Block `json:"blocked"`
}

// inboundRuleCause maps an inbound rule's name to its drop cause, or to
// "" for the jump and the trusted rules; ok is false for other rules.
func inboundRuleCause(name string) (cause string, ok bool) {
	cause, ok = inboundCauses[name]
	return cause, ok
}

// inboundCauses are the inbound rules' names (ruleset.InboundRuleName, per
// family) with their drop causes ("" for rules that drop nothing).
var inboundCauses = func() map[string]string {
	byBase := map[string]string{ruleset.InboundRuleTrusted: "", ruleset.InboundRuleLimited: "",
		ruleset.InboundRuleBlocked: "blocked", ruleset.InboundRuleMinute: "minute", ruleset.InboundRuleHour: "hour", ruleset.InboundRuleConns: "conns"}
	out := map[string]string{ruleset.InboundRuleJump: ""}
	for base, cause := range byBase {
		for _, fam := range []ruleset.Family{ruleset.IPv4, ruleset.IPv6} {
			out[ruleset.InboundRuleName(base, fam)] = cause
		}
	}
	return out
}()

// isTrustedRule reports whether name is an inbound rule of trusted
// sources.
func isTrustedRule(name string) bool {
	return name == ruleset.InboundRuleName(ruleset.InboundRuleTrusted, ruleset.IPv4) ||
		name == ruleset.InboundRuleName(ruleset.InboundRuleTrusted, ruleset.IPv6)
}

// gatherInbound sums the inbound rules' counters and lists the blocks.
func gatherInbound(ctx context.Context, b firewall.Backend, in ruleset.Inbound, counters map[string]firewall.Counter) (*InboundStatus, error) {
	st := &InboundStatus{Endpoints: in.Endpoints, Summary: in.Summary(), Drops: map[string]uint64{}, Blocked: []firewall.Block{}}
	for _, c := range ruleset.InboundCauses {
		st.Drops[c] = 0
	}
	for name, c := range counters {
		cause, ok := inboundRuleCause(name)
		switch {
		case !ok:
		case name == ruleset.InboundRuleJump:
			st.NewConnections += c.Packets
		case isTrustedRule(name):
			st.Trusted += c.Packets
		case cause != "":
			st.Drops[cause] += c.Packets
		}
	}
	blocked, err := b.Blocked(ctx, in)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(blocked, func(a, b firewall.Block) int { return a.Source.Addr().Compare(b.Source.Addr()) })
	st.Blocked = append(st.Blocked, blocked...)
	return st, nil
}

// RuleClass is the verdict class of an installed rule's name ("other"
// for a rule the ruleset does not have).
func (st *Status) RuleClass(name string) string { return st.ruleClass.of(name) }

// GatherStatus reads the kernel's state of b against rs: installed, in
// sync (the rules), relay links behind, other backends holding relayfw
// objects, an open confirm window, the last apply, counters per rule and
// per verdict class. note is the plain statement for a host that does not
// exit (Inputs.NotExitNote).
func (s *System) GatherStatus(ctx context.Context, b firewall.Backend, rs ruleset.Ruleset, note string) (*Status, error) {
	return s.gatherStatus(ctx, b, rs, note, true)
}

// GatherStatusInvalid is GatherStatus when the inputs cannot be read
// (inputErr, with the line every other command prints): the kernel is
// still reported — installed, counters, the inbound protection's blocks —
// read with the ruleset relayfw last installed for its rule names and
// classes, and Drift lists the kernel's differences from that ruleset.
// The firewall is not in sync while the inputs are invalid, and the relay
// links are not compared (the cached consensus is found through them).
func (s *System) GatherStatusInvalid(ctx context.Context, b firewall.Backend, inputErr error) (*Status, error) {
	ref, err := LoadRuleset(s.AppliedRulesetPath())
	known := err == nil
	if !known {
		ref = ruleset.Ruleset{} // first run, or nothing installed since the state was lost
	}
	st, err := s.gatherStatus(ctx, b, ref, "", known)
	if err != nil && known {
		// A ruleset the backend cannot compare the kernel with (an older
		// relayfw's): the kernel's facts still count.
		st, err = s.gatherStatus(ctx, b, ref, "", false)
	}
	if err != nil {
		return nil, err
	}
	st.InSync = false
	st.RelayLinksBehind = 0
	st.Exit = false
	for _, r := range ref.Outbound {
		st.Exit = st.Exit || r.Class == ruleset.ClassExit
	}
	st.Config = ConfigStatus{Error: inputErr.Error()}
	return st, nil
}

// gatherStatus is GatherStatus; compare false skips the comparison with
// rs (no drift, no relay links behind).
func (s *System) gatherStatus(ctx context.Context, b firewall.Backend, rs ruleset.Ruleset, note string, compare bool) (*Status, error) {
	installed, err := b.Installed(ctx)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	var drift []firewall.Drift
	var behind LinksBehind
	if compare {
		if drift, behind, err = s.Check(ctx, b, rs); err != nil {
			return nil, fmt.Errorf("status: %w", err)
		}
	}
	counters, err := b.Counters(ctx)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	st := &Status{Backend: b.Name(), Installed: installed, AlsoInstalled: []string{}, InSync: len(drift) == 0,
		Drift: append([]firewall.Drift{}, drift...), RelayLinksBehind: behind.Total(), Note: note,
		Classes: map[string]firewall.Counter{}, Rules: counters, ruleClass: ruleClasses{}, Config: ConfigStatus{Valid: true}}
	st.Exit = st.Note == ""
	for _, o := range s.otherBackends(ctx, b) {
		if ok, err := o.Installed(ctx); err == nil && ok {
			st.AlsoInstalled = append(st.AlsoInstalled, Kind(o))
		}
	}
	if p, err := s.ReadPending(); err == nil {
		st.Pending = &PendingStatus{Deadline: p.Deadline, Restores: p.Restores()}
	}
	for _, r := range rs.Outbound {
		st.ruleClass[r.Name] = r.Class
	}
	for _, c := range StatusClasses {
		st.Classes[c] = firewall.Counter{}
	}
	for name, c := range counters {
		k := st.ruleClass.of(name)
		if k == ruleset.ClassLog {
			continue // logged packets are counted again by the reject that follows
		}
		if _, inbound := inboundRuleCause(name); inbound {
			st.ruleClass[name] = ClassInbound
			continue // not outbound traffic: Inbound counts it
		}
		sum := st.Classes[k]
		sum.Packets += c.Packets
		sum.Bytes += c.Bytes
		st.Classes[k] = sum
	}
	if a, ok := s.ReadState(); ok {
		st.LastApply = &a.AppliedAt
	}
	if c, ok := s.ReadLastChange(); ok {
		st.LastChange = &c
	}
	if r, ok := s.ReadRolledBack(); ok {
		st.RolledBack = &r
	}
	if rs.Inbound != nil {
		if st.Inbound, err = gatherInbound(ctx, b, *rs.Inbound, counters); err != nil {
			return nil, fmt.Errorf("status: %w", err)
		}
	}
	st.Conntrack = s.Conntrack(ctx) // the kernel's, whatever the inputs
	return st, nil
}

// ClassInbound is the class of the inbound protection's rules in metrics.
const ClassInbound = "inbound"
