package ruleset

// CommentPrefix starts the comment of every kernel object relayfw owns
// ("relayfw: <rule name>"): how backends and check tell relayfw's rules
// from anyone else's.
const CommentPrefix = "relayfw: "

// RelayLinkSetName names the relay-link set of a family: "relays4" or
// "relays6".
func RelayLinkSetName(fam Family) string { return "relays" + suffix(fam) }

// ConsensusSets names the sets whose contents follow the consensus: every
// set of rs (relay links) and, with the inbound protection, its trusted
// sources per family (InboundSetName("trust", …)). A refresh brings these
// up to date between applies; every other object changes only with an
// apply.
func (rs Ruleset) ConsensusSets() []string {
	var out []string
	for _, s := range rs.Sets {
		out = append(out, s.Name)
	}
	if rs.Inbound != nil {
		out = append(out, InboundSetName("trust", IPv4), InboundSetName("trust", IPv6))
	}
	return out
}
