package ruleset

// Methods kept only while callers move to Decide; they go with the rules
// package's aliases (not marked Deprecated, so that staticcheck passes in
// the meantime).

// Verdict is Decide(p).Index: the index of the rule that decides the
// packet, or -1.
func (rs Ruleset) Verdict(p Packet) int { return rs.Decide(p).Index }

// Decision is Decide(p).Action.
func (rs Ruleset) Decision(p Packet) Action { return rs.Decide(p).Action }
