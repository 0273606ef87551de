package ruleset

// Methods kept while callers move to Decide; they go with the rules
// package's aliases.

// Verdict returns the index of the rule that decides the packet, or -1.
//
// Deprecated: use Decide(p).Index.
func (rs Ruleset) Verdict(p Packet) int { return rs.Decide(p).Index }

// Decision is the action that decides the packet.
//
// Deprecated: use Decide(p).Action.
func (rs Ruleset) Decision(p Packet) Action { return rs.Decide(p).Action }
