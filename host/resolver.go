package host

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/relayfw/relayfw/config"
	"github.com/relayfw/relayfw/rules"
)

// localResolvers are the recursive resolvers an exit operator runs on the
// relay itself (the Tor Project's exit guide recommends one): the process
// name the kernel shows for each, and the user its Debian package runs it
// as.
var localResolvers = []struct{ name, comm, user string }{
	{"unbound", "unbound", "unbound"},
	{"bind9", "named", "bind"},
	{"knot-resolver", "kresd", "knot-resolver"},
	{"pdns-recursor", "pdns_recursor", "pdns"},
}

// ProcRoot is where processes are listed; a variable for tests.
var ProcRoot = "/proc"

// systemdResolvedStubs are the addresses of systemd-resolved's stub
// resolver: it forwards to the upstream servers of its own resolv.conf.
var systemdResolvedStubs = []netip.Addr{netip.MustParseAddr("127.0.0.53"), netip.MustParseAddr("127.0.0.54")}

// findLocalResolver finds the user of a recursive resolver on this host:
// a running process of a known resolver first (its effective uid), else
// the service user its package creates.
func findLocalResolver() (*rules.UserRef, string) {
	entries, _ := os.ReadDir(ProcRoot)
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join(ProcRoot, e.Name(), "comm"))
		if err != nil {
			continue
		}
		for _, r := range localResolvers {
			if strings.TrimSpace(string(comm)) != r.comm {
				continue
			}
			if uid, ok := processUID(filepath.Join(ProcRoot, e.Name(), "status")); ok {
				name := r.user
				if u, err := lookupUserName(uid); err == nil {
					name = u
				}
				return &rules.UserRef{Name: name, UID: uid}, fmt.Sprintf("%s runs as %s (pid %s)", r.name, name, e.Name())
			}
		}
	}
	for _, r := range localResolvers {
		if uid, err := LookupUID(r.user); err == nil {
			return &rules.UserRef{Name: r.user, UID: uid}, fmt.Sprintf("user %s of %s exists", r.user, r.name)
		}
	}
	return nil, ""
}

// processUID reads the effective uid from /proc/PID/status.
func processUID(statusPath string) (uint32, bool) {
	f, err := os.Open(statusPath)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Uid:"); ok {
			f := strings.Fields(rest) // real, effective, saved, filesystem
			if len(f) >= 2 {
				uid, err := strconv.ParseUint(f[1], 10, 32)
				return uint32(uid), err == nil
			}
		}
	}
	return 0, false
}

// localResolverAllowance decides the DNS of a local recursive resolver:
// when a resolv.conf points at loopback (not systemd-resolved's stub),
// the resolver's user may query any name server. allow.resolver_user
// names it; otherwise relayfw looks for one, and says what to set when it
// finds none.
func (in *Inputs) localResolverAllowance(resolvers []netip.Addr) *rules.UserRef {
	if name := in.cfg.Allow.ResolverUser; name != "" {
		uid, err := LookupUID(name)
		if err != nil {
			in.log().Warn(fmt.Sprintf("allow.resolver_user %q: %v; the local resolver gets no DNS allowance", name, err))
			return nil
		}
		return &rules.UserRef{Name: name, UID: uid}
	}
	local := slices.ContainsFunc(resolvers, func(a netip.Addr) bool {
		return a.Unmap().IsLoopback() && !slices.Contains(systemdResolvedStubs, a.Unmap())
	})
	if !local {
		return nil
	}
	ref, how := findLocalResolver()
	if ref == nil {
		in.log().Warn("resolv.conf points at loopback, but no local recursive resolver (unbound, bind9, knot-resolver, pdns-recursor) was found: " +
			"it could not reach any name server. Set allow.resolver_user = \"USER\" in relayfw.toml to the user your resolver runs as")
		return nil
	}
	in.log().Debug("local recursive resolver", "how", how, "user", ref.Name, "uid", ref.UID)
	return ref
}

// lookupUserName names a uid.
func lookupUserName(uid uint32) (string, error) {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return "", err
	}
	return u.Username, nil
}

// AptUser is the user apt downloads packages as on Debian and Ubuntu.
const AptUser = "_apt"

// updatesAllowance lets apt's downloads out (allow.updates, on unless set
// to false), when the host has apt's user.
func (in *Inputs) updatesAllowance() *rules.UserRef {
	if !config.On(in.cfg.Allow.Updates) {
		return nil
	}
	uid, err := LookupUID(AptUser)
	if err != nil {
		in.log().Debug("no package updates allowance", "user", AptUser, "err", err)
		return nil
	}
	return &rules.UserRef{Name: AptUser, UID: uid}
}
