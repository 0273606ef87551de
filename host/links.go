package host

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/relayfw/relayfw/ruleset"
)

// linkInstances are the instances that make relay links: every relay,
// or, on a host without one, every instance (tor clients). A client
// instance next to relays needs nothing of its own.
func (in *Inputs) linkInstances() []*Instance {
	var relays []*Instance
	for _, t := range in.Instances {
		if t.IsRelay() {
			relays = append(relays, t)
		}
	}
	if len(relays) == 0 {
		return in.Instances
	}
	return relays
}

// RunsAs is the uid the instance's tor runs as: its User's, else root's
// (tor drops privileges only when User is set).
func (t *Instance) RunsAs() uint32 {
	if t.UID != nil {
		return *t.UID
	}
	return 0
}

// relayLinkUsers are the users whose sockets get the relay links: those
// of every tor instance, one per uid — a relay reaches other relays, a
// client instance (next to relays too, such as Debian's tor@default) its
// guards. The consensus tor caches is written by tor's user, so what it
// lists is for tor's sockets alone.
func (in *Inputs) relayLinkUsers() []ruleset.UserRef {
	var out []ruleset.UserRef
	for _, t := range in.Instances {
		uid := t.RunsAs()
		if !slices.ContainsFunc(out, func(u ruleset.UserRef) bool { return u.UID == uid }) {
			out = append(out, ruleset.UserRef{Name: cmp.Or(t.Options.User, "root"), UID: uid})
		}
	}
	return out
}

// warnRootLinks says, in one line, that instances without User give
// root's sockets the relay links, and how to keep them to tor.
func (in *Inputs) warnRootLinks() {
	var asRoot []string
	for _, t := range in.Instances {
		if t.Options.User == "" {
			asRoot = append(asRoot, t.Describe())
		}
	}
	if len(asRoot) == 0 {
		return
	}
	verb := "has"
	if len(asRoot) > 1 {
		verb = "have"
	}
	in.log().Warn(fmt.Sprintf("%s %s no User: tor runs as root, so root's sockets get the relay links (the ORPorts and DirPorts the consensus lists); set User (e.g. User debian-tor) to keep them to tor's user",
		strings.Join(asRoot, " and "), verb))
}
