package host

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/relayfw/relayfw/config"
	"github.com/relayfw/relayfw/ruleset"
)

// localResolvers are the recursive resolvers an exit operator runs on the
// relay itself (the Tor Project's exit guide recommends one), with the
// service user its Debian package creates. Only that user, from the
// password database, or allow.resolver_user gets the resolver's DNS
// allowance: a running program's name (/proc/PID/comm) is whatever its
// owner calls it, so a process list grants nothing.
var localResolvers = []struct{ name, user string }{
	{"unbound", "unbound"},
	{"bind9", "bind"},
	{"knot-resolver", "knot-resolver"},
	{"pdns-recursor", "pdns"},
}

// systemdResolvedStubs are the addresses of systemd-resolved's stub
// resolver: it forwards to the upstream servers of its own resolv.conf.
var systemdResolvedStubs = []netip.Addr{netip.MustParseAddr("127.0.0.53"), netip.MustParseAddr("127.0.0.54")}

// findLocalResolver finds the user of a recursive resolver on this host:
// the first service user of a known resolver package that exists.
func (s *System) findLocalResolver() (*ruleset.UserRef, string) {
	for _, r := range localResolvers {
		if uid, err := s.lookupUID(r.user); err == nil {
			return &ruleset.UserRef{Name: r.user, UID: uid}, fmt.Sprintf("user %s of %s exists", r.user, r.name)
		}
	}
	return nil, ""
}

// localResolverAllowance decides the DNS of a local recursive resolver:
// when a resolv.conf points at loopback (not systemd-resolved's stub),
// the resolver's user may query any name server. allow.resolver_user
// names it; otherwise the service user of a known resolver package (see
// localResolvers), and when there is none relayfw says what to set.
func (in *Inputs) localResolverAllowance(resolvers []netip.Addr) *ruleset.UserRef {
	if name := in.cfg.Allow.ResolverUser; name != "" {
		uid, err := in.sys.lookupUID(name)
		if err != nil {
			in.log().Warn(fmt.Sprintf("allow.resolver_user %q: %v; the local resolver gets no DNS allowance", name, err))
			return nil
		}
		return &ruleset.UserRef{Name: name, UID: uid}
	}
	local := slices.ContainsFunc(resolvers, func(a netip.Addr) bool {
		return a.Unmap().IsLoopback() && !slices.Contains(systemdResolvedStubs, a.Unmap())
	})
	if !local {
		return nil
	}
	ref, how := in.sys.findLocalResolver()
	if ref == nil {
		in.log().Warn("resolv.conf points at loopback, but no user of a local recursive resolver (unbound, bind, knot-resolver, pdns) exists: " +
			"it could not reach any name server. Set allow.resolver_user = \"USER\" in relayfw.toml to the user your resolver runs as")
		return nil
	}
	in.log().Debug("local recursive resolver", "how", how, "user", ref.Name, "uid", ref.UID)
	return ref
}

// AptUser is the user apt downloads packages as on Debian and Ubuntu.
const AptUser = "_apt"

// updatesAllowance lets apt's downloads out (allow.updates, on unless set
// to false), when the host has apt's user.
func (in *Inputs) updatesAllowance() *ruleset.UserRef {
	if !config.On(in.cfg.Allow.Updates) {
		return nil
	}
	uid, err := in.sys.lookupUID(AptUser)
	if err != nil {
		in.log().Debug("no package updates allowance", "user", AptUser, "err", err)
		return nil
	}
	return &ruleset.UserRef{Name: AptUser, UID: uid}
}
