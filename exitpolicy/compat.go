package exitpolicy

import "net/netip"

// Verdict is Decide, kept while callers move to Decide (the name
// Ruleset.Decide shares); it goes with the rules package's aliases.
//
// Deprecated: use Decide.
func (p ExitPolicy) Verdict(addr netip.Addr, port uint16) Verdict { return p.Decide(addr, port) }
