package host

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/relayfw/relayfw/firewall"
)

// System is the host relayfw works on: where it keeps its state, where
// tor's files and the kernel's process information are, and how users,
// host names and firewall backends are found. Every operation that reads
// or changes the host is given one (Options.System, Applier.System, the
// methods of *System); DefaultSystem is the real host. Tests and other
// programs start from DefaultSystem and change what differs.
type System struct {
	// StateDir holds relayfw's state, one set of files per network
	// namespace (the firewall is per namespace, so are the operations that
	// change it): the lock, the record of the last apply, the ruleset it
	// installed and a pending confirm. /run/relayfw, a tmpfs.
	StateDir string
	// PersistentDir keeps what must outlive a reboot: the last good
	// firewall, the boot's fallback; the last change, for status and
	// metrics; and the record of an unconfirmed rollback, which keeps the
	// automatic applies (boot, the re-apply path unit) from installing
	// again what the operator did not confirm. /var/lib/relayfw, the
	// units' StateDirectory.
	PersistentDir string
	// TorEtcDir and TorShareDir are Debian's layout of tor: the default
	// instance (tor@default) reads TorEtcDir/torrc with
	// TorShareDir/tor-service-defaults-torrc; every instance made by
	// tor-instance-create NAME (tor@NAME) reads
	// TorEtcDir/instances/NAME/torrc with
	// tor-service-defaults-torrc-instances, "@@NAME@@" replaced by NAME.
	TorEtcDir   string
	TorShareDir string
	// ProcRoot is where the kernel's process, memory and namespace
	// information is (/proc).
	ProcRoot string
	// ResolvedUpstreamConf lists systemd-resolved's upstream servers.
	ResolvedUpstreamConf string
	// LookupUID accepts a user name or a numeric uid; nil:
	// LookupSystemUID.
	LookupUID func(name string) (uint32, error)
	// LookupNetIP resolves host names (allow.extra's, a torrc's Address
	// and ORPort lines); nil: the system's resolver.
	LookupNetIP func(ctx context.Context, network, host string) ([]netip.Addr, error)
	// DNSWait bounds the time one Load waits for host names, all of its
	// lookups together: a name that does not resolve (no network yet at
	// boot, a resolver that does not answer) costs one short wait per
	// run, not one per name. 0: 3s.
	DNSWait time.Duration
	// TorDirs are where FindTor looks for tor; nil: SystemBinDirs.
	TorDirs []string
	// TrustedOwner says whether uid may own an input file; nil: root, or
	// the user running relayfw (see UnsafeFileError).
	TrustedOwner func(uid uint32) bool
	// ChooseBackend and OtherBackends find the firewall backends of the
	// rollbacks, the fallbacks and status; nil: the kernel's
	// (ChooseBackend, OtherBackends).
	ChooseBackend func(ctx context.Context, name string, log *slog.Logger) (firewall.Backend, error)
	OtherBackends func(ctx context.Context, b firewall.Backend) []firewall.Backend
}

// DefaultSystem is the real host.
func DefaultSystem() *System {
	return &System{
		StateDir:             "/run/relayfw",
		PersistentDir:        "/var/lib/relayfw",
		TorEtcDir:            "/etc/tor",
		TorShareDir:          "/usr/share/tor",
		ProcRoot:             "/proc",
		ResolvedUpstreamConf: "/run/systemd/resolve/resolv.conf",
	}
}

// orDefault is sys, or the real host when sys is nil.
func orDefault(sys *System) *System {
	if sys == nil {
		return DefaultSystem()
	}
	return sys
}

func (s *System) lookupUID(name string) (uint32, error) {
	if s.LookupUID != nil {
		return s.LookupUID(name)
	}
	return LookupSystemUID(name)
}

func (s *System) lookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if s.LookupNetIP != nil {
		return s.LookupNetIP(ctx, network, host)
	}
	return net.DefaultResolver.LookupNetIP(ctx, network, host)
}

func (s *System) dnsWait() time.Duration {
	if s.DNSWait > 0 {
		return s.DNSWait
	}
	return 3 * time.Second
}

func (s *System) trustedOwner(uid uint32) bool {
	if s.TrustedOwner != nil {
		return s.TrustedOwner(uid)
	}
	return uid == 0 || int(uid) == os.Geteuid()
}

func (s *System) chooseBackend(ctx context.Context, name string, log *slog.Logger) (firewall.Backend, error) {
	if s.ChooseBackend != nil {
		return s.ChooseBackend(ctx, name, log)
	}
	return ChooseBackend(ctx, name, log)
}

func (s *System) otherBackends(ctx context.Context, b firewall.Backend) []firewall.Backend {
	if s.OtherBackends != nil {
		return s.OtherBackends(ctx, b)
	}
	return OtherBackends(ctx, b)
}
