package exitpolicy

import "net/netip"

// Verdict is Decide, kept only while callers move to Decide (the name
// Ruleset.Decide shares); it goes with the rules package's aliases.
func (p ExitPolicy) Verdict(addr netip.Addr, port uint16) Verdict { return p.Decide(addr, port) }
