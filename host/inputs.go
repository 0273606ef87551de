package host

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/relayfw/relayfw/config"
	"github.com/relayfw/relayfw/exitpolicy"
	"github.com/relayfw/relayfw/internal/phase"
	"github.com/relayfw/relayfw/relays"
	"github.com/relayfw/relayfw/ruleset"
	"github.com/relayfw/relayfw/torconf"
)

const (
	defaultResolvConf = "/etc/resolv.conf"
	// defaultDataDirectory is where Debian's tor keeps its state (set by
	// /usr/share/tor/tor-service-defaults-torrc, not by torrc).
	defaultDataDirectory = "/var/lib/tor"
)

// Options are what the caller (relayfw's flags, or a provisioning
// program) says about where the inputs are.
type Options struct {
	// Torrcs are the torrcs to read, one tor instance each; none: the
	// config's [[instance]] tables or torrc, else Debian's layout.
	Torrcs []string
	// DefaultsTorrc, when not nil, is tor's --defaults-torrc for every
	// torrc ("" for none); nil: Debian's defaults for Debian's torrcs.
	DefaultsTorrc *string
	// Policy, when not nil, replaces the torrcs' ExitPolicy lines.
	Policy *string
	// Config is relayfw.toml (LoadConfig).
	Config config.Config
	// ConfigPath is where Config came from, for Paths.
	ConfigPath string
	// ReadOnly callers (a dry run, an explanation) are not told about
	// what does not change their answer, such as a missing consensus.
	ReadOnly bool
	// Log receives warnings; nil discards them.
	Log *slog.Logger
	// Now is the time a consensus's age is measured at; nil: time.Now.
	Now func() time.Time
	// Tor has tor judge each instance's configuration (FindTor); the zero
	// value does not ask tor and says nothing of it.
	Tor TorJudge
	// System is the host the inputs are read on; nil: DefaultSystem.
	System *System
	// TorrcsOnly reads the tor instances alone (their torrcs, users and
	// tor's judgement), for what needs no firewall (an exit policy, the
	// files to watch): the host's resolvers, each instance's cached
	// consensus and allow.extra's host names are not read, and Ruleset
	// and Host must not be called.
	TorrcsOnly bool
}

// Inputs is everything relayfw computes from the torrcs, the exit policy,
// relayfw.toml and the host.
type Inputs struct {
	opts      Options
	sys       *System
	cfg       config.Config
	Instances []*Instance
	// watched are the files and directories the firewall depends on.
	watched []string
	// dnsDeadline ends every host-name lookup of this run: set by the
	// first one, System.DNSWait later.
	dnsDeadline time.Time
	// host is what the host gives the firewall, read by Load (hostRead).
	host     ruleset.Host
	hostRead bool
	// extraNames counts allow.extra's host names, extraUnresolved those
	// that did not resolve.
	extraNames, extraUnresolved int
	// consensus is what became of each instance's cached consensus.
	consensus []ConsensusState
}

// newInputs are the inputs of opts, nothing read yet.
func newInputs(opts Options) *Inputs {
	return &Inputs{opts: opts, sys: orDefault(opts.System), cfg: opts.Config}
}

// lookupHost resolves a host name within the run's DNS deadline.
func (in *Inputs) lookupHost(ctx context.Context, name string) ([]netip.Addr, error) {
	if in.dnsDeadline.IsZero() {
		in.dnsDeadline = time.Now().Add(in.sys.dnsWait())
	}
	ctx, cancel := context.WithDeadline(ctx, in.dnsDeadline)
	defer cancel()
	return in.sys.lookupNetIP(ctx, "ip", name)
}

// Config is the relayfw.toml the inputs were read with.
func (in *Inputs) Config() config.Config { return in.cfg }

func (in *Inputs) log() *slog.Logger {
	if in.opts.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return in.opts.Log
}

// Load reads every tor instance's configuration and builds their
// effective exit policies, then (unless opts.TorrcsOnly) what the host
// gives the firewall: its resolvers, the users of a local resolver and of
// apt, each instance's cached consensus, the inbound protection's
// endpoints, allow.extra's host names resolved. Everything is read here,
// once: Ruleset and Host only compute. Warnings go to opts.Log.
func Load(ctx context.Context, opts Options) (*Inputs, error) {
	in := newInputs(opts)
	end := phase.Start(ctx, "read torrcs")
	srcs, err := in.instanceSources()
	if err != nil {
		return nil, err
	}
	facts := in.hostFacts(ctx)
	for _, src := range srcs {
		t, err := in.loadInstance(src, len(srcs) == 1, facts)
		if err != nil {
			return nil, err
		}
		in.Instances = append(in.Instances, t)
	}
	if err := in.resolveUsers(); err != nil {
		return nil, err
	}
	end()
	// tor's judgement last: relayfw's own errors name the line and say
	// what to change.
	end = phase.Start(ctx, "tor verify-config", "instances", len(in.Instances))
	if err := in.judgeByTor(ctx); err != nil {
		return nil, err
	}
	end()
	in.warnRootLinks()
	if !opts.TorrcsOnly {
		end = phase.Start(ctx, "read host")
		in.host, in.hostRead = in.readHost(ctx), true
		end()
	}
	return in, nil
}

// loadInstance reads one instance's defaults file and torrc and builds its
// effective exit policy; single says it is the only one.
func (in *Inputs) loadInstance(src instanceSource, single bool, facts exitpolicy.HostFacts) (*Instance, error) {
	opts := in.opts
	defaults, lines, template, err := in.readInstance(src)
	var fe *torconf.FileError
	missing := false
	if errors.As(err, &fe) && fe.Path == src.torrc && errors.Is(err, fs.ErrNotExist) && single &&
		opts.Policy != nil && len(opts.Torrcs) == 0 && in.cfg.Torrc == "" && len(in.cfg.Instances) == 0 {
		// A policy alone, on a host without a torrc: an empty torrc.
		lines, err, missing = nil, nil, true
	}
	if err != nil {
		return nil, err
	}
	t := &Instance{Name: src.name, Torrc: src.torrc, Defaults: src.defaults, defaultsName: src.defaultsName, template: template,
		lines: append(slices.Clip(defaults), lines...), torrcMissing: missing}
	if t.Options, err = torconf.OptionsFromGroups(defaults, lines); err != nil {
		return nil, err
	}
	if opts.Policy != nil {
		t.Options.ExitPolicy = nil
		if *opts.Policy != "" {
			t.Options.ExitPolicy = []torconf.ConfigLine{{Key: "ExitPolicy", Value: *opts.Policy, File: "--policy"}}
		}
		t.lines = append(slices.DeleteFunc(t.lines, func(l torconf.ConfigLine) bool { return l.Key == "ExitPolicy" }), t.Options.ExitPolicy...)
	}
	for _, w := range t.Options.Warnings {
		in.log().Warn(w)
	}
	if t.Effective, err = exitpolicy.FromOptions(t.Options, facts); err != nil {
		return nil, err
	}
	for _, w := range t.Effective.Warnings {
		in.log().Warn(w)
	}
	return t, nil
}

// DefaultConfig is relayfw.toml when there is none: every allowance on,
// the backend auto.
func DefaultConfig() config.Config { return config.Config{} }

// LoadConfig reads relayfw.toml; with optional, a missing file is an
// empty configuration.
// relayfw.toml must be root's (see UnsafeFileError) whatever it says:
// whoever could write it could set strict_modes = false.
func (s *System) LoadConfig(path string, optional bool) (config.Config, error) {
	data, unsafe, err := s.readTrusted(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && optional:
		return config.Config{}, nil
	case err != nil:
		return config.Config{}, fmt.Errorf("config: %w", err)
	case unsafe != nil:
		return config.Config{}, fmt.Errorf("config %s: %w", ShowPath(path), unsafe)
	}
	cfg, err := config.Parse(path, data)
	if err != nil {
		return config.Config{}, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

// resolveUsers finds each instance's uid. A single torrc without User
// keeps an unscoped exit policy (tor runs as whoever started it); with
// several instances one without User runs as root. Two exit instances of
// one user cannot be told apart in the kernel: that is refused.
func (in *Inputs) resolveUsers() error {
	owner := map[uint32]*Instance{}
	for _, t := range in.Instances {
		if t.Options.User == "" {
			if len(in.Instances) == 1 {
				continue
			}
			if t.IsExit() {
				in.log().Warn(fmt.Sprintf("%s has no User: tor runs it as root, so its exit policy applies to root's sockets", t.Describe()))
			}
			root := uint32(0)
			t.UID = &root
		} else {
			uid, err := in.sys.lookupUID(t.Options.User)
			if err != nil {
				at := t.Options.Origin["user"]
				return &torconf.SyntaxError{File: at.File, Line: at.Line,
					Err: fmt.Errorf("user %q (option User) does not exist on this host (tor refuses to start: \"Error setting configured user\")", t.Options.User)}
			}
			t.UID = &uid
		}
		if !t.IsExit() {
			continue
		}
		if other, dup := owner[*t.UID]; dup {
			return &torconf.SyntaxError{File: t.Torrc, Err: fmt.Errorf("%s and %s exit as the same user: the kernel cannot tell their exit traffic apart; give each instance its own User (tor-instance-create does)",
				other.Describe(), t.Describe())}
		}
		owner[*t.UID] = t
	}
	return nil
}

// ruleInstances are the instances as the compiler sees them.
func (in *Inputs) ruleInstances() []ruleset.Instance {
	out := make([]ruleset.Instance, 0, len(in.Instances))
	for _, t := range in.Instances {
		out = append(out, ruleset.Instance{Name: t.Name, Policy: t.Effective.Policy, UID: t.UID, User: t.Options.User, ExitSources: t.Options.OutboundBindExit})
	}
	return out
}

// Ruleset compiles every instance's policy and the host's needs, as Load
// read them; it reads nothing.
func (in *Inputs) Ruleset() (ruleset.Ruleset, ruleset.Host) {
	h := in.Host()
	return ruleset.CompileInstances(in.ruleInstances(), h), h
}

// hostFacts gathers the addresses of the host's interfaces that are up and
// running, and a resolver for host names given as Address.
func (in *Inputs) hostFacts(ctx context.Context) exitpolicy.HostFacts {
	var facts exitpolicy.HostFacts
	ifaces, _ := net.Interfaces()
	for _, ifc := range ifaces {
		// tor's interface list (get_interface_address6_list) skips
		// interfaces that are not both up and running.
		if ifc.Flags&(net.FlagUp|net.FlagRunning) != net.FlagUp|net.FlagRunning {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				facts.InterfaceAddrs = append(facts.InterfaceAddrs, p.Addr())
			}
		}
	}
	facts.LookupHost = func(name string) ([]netip.Addr, error) { return in.lookupHost(ctx, name) }
	return facts
}

// Host is the compiler's view of what the host must keep reaching, as
// Load read it.
func (in *Inputs) Host() ruleset.Host {
	if !in.hostRead {
		panic("host: Inputs.Host or Ruleset of inputs loaded with TorrcsOnly")
	}
	return in.host
}

// readHost reads what the host must keep reaching.
func (in *Inputs) readHost(ctx context.Context) ruleset.Host {
	allow := in.cfg.Allow
	h := ruleset.Host{
		DHCP: config.On(allow.DHCP),
		NTP:  config.On(allow.NTP),
		Ping: config.On(allow.Ping),
		NDP:  config.On(allow.NDP),
	}
	if config.On(allow.DNS) {
		if len(allow.Resolvers) > 0 {
			for _, r := range allow.Resolvers {
				h.Resolvers = append(h.Resolvers, netip.MustParseAddr(r))
			}
		} else {
			var rs []netip.Addr
			for _, path := range in.resolvConfFiles() {
				found, err := readResolvers(path)
				if err != nil {
					in.log().Warn(fmt.Sprintf("no DNS allowance: %v", err))
				}
				rs = append(rs, found...)
			}
			h.Resolvers = in.withResolvedUpstreams(rs, in.sys.ResolvedUpstreamConf)
		}
		end := phase.Start(ctx, "local resolver")
		h.LocalResolver = in.localResolverAllowance(h.Resolvers)
		end()
	}
	h.Updates = in.updatesAllowance()
	end := phase.Start(ctx, "read consensus")
	nw := in.network()
	end("links", len(nw.Links))
	h.RelayLinks = nw.Links
	h.RelayLinkUsers = in.relayLinkUsers()
	h.PrivateRelayLinks = slices.ContainsFunc(in.Instances, func(t *Instance) bool { return t.Options.TestingTorNetwork })
	h.Inbound = in.inbound(ctx, nw)
	h.Extra = in.resolveExtra(ctx)
	h.LogRejectsPerMinute = in.cfg.Log.RejectsPerMinute
	return h
}

// ExtraNames says how many host names allow.extra has and how many of
// them did not resolve when Load read them.
func (in *Inputs) ExtraNames() (names, unresolved int) {
	return in.extraNames, in.extraUnresolved
}

// resolveExtra turns allow.extra into allowances: host names are
// resolved now, within the run's DNS deadline (one that does not resolve
// is left out, with a warning, rather than keeping the whole firewall
// from being applied), users looked up.
func (in *Inputs) resolveExtra(ctx context.Context) []ruleset.Allowance {
	var out []ruleset.Allowance
	for _, e := range in.cfg.Allow.Extra {
		a := ruleset.Allowance{Name: e.Name, Proto: e.Proto}
		if a.Proto == "" {
			a.Proto = "tcp"
		}
		for _, p := range e.Ports {
			lo, hi, _ := config.ParsePortRange(p) // validated when loaded
			a.Ports = append(a.Ports, ruleset.PortRange{First: lo, Last: hi})
		}
		for _, to := range e.To {
			if p, err := netip.ParsePrefix(to); err == nil {
				a.Dst = append(a.Dst, p)
				continue
			}
			if addr, err := netip.ParseAddr(to); err == nil {
				a.Dst = append(a.Dst, netip.PrefixFrom(addr, addr.BitLen()))
				continue
			}
			in.extraNames++
			addrs, err := in.lookupHost(ctx, to)
			if err != nil {
				in.extraUnresolved++
				in.log().Warn(fmt.Sprintf("allow.extra %s: %q does not resolve (%v); left out", e.Name, to, err))
				continue
			}
			for _, addr := range addrs {
				addr = addr.Unmap()
				a.Dst = append(a.Dst, netip.PrefixFrom(addr, addr.BitLen()))
			}
		}
		if len(e.To) > 0 && len(a.Dst) == 0 {
			continue // nothing to allow: not "anywhere"
		}
		if e.User != "" {
			uid, err := in.sys.lookupUID(e.User)
			if err != nil {
				in.log().Warn(fmt.Sprintf("allow.extra %s: user %q: %v; left out", e.Name, e.User, err))
				continue
			}
			a.UID = &uid
		}
		out = append(out, a)
	}
	return out
}

// UID looks a user up (System.LookupUID): a user name or a numeric uid.
func (s *System) UID(name string) (uint32, error) { return s.lookupUID(name) }

// LookupSystemUID looks a user up in the system's user database.
func LookupSystemUID(name string) (uint32, error) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(n), nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(u.Uid, 10, 32)
	return uint32(n), err
}

// resolvConfFiles are the resolv.conf files the instances' tors read.
func (in *Inputs) resolvConfFiles() []string {
	var out []string
	for _, t := range in.Instances {
		path := t.Options.ServerDNSResolvConfFile
		if path == "" {
			path = defaultResolvConf
		}
		if !slices.Contains(out, path) {
			out = append(out, path)
		}
	}
	return out
}

// dataDirectory is where an instance's tor keeps its cached consensus.
func (in *Inputs) dataDirectory(t *Instance) string {
	switch {
	case in.cfg.DataDirectory != "" && len(in.Instances) == 1:
		return in.cfg.DataDirectory
	case t.Options.DataDirectory != "":
		return t.Options.DataDirectory
	}
	return defaultDataDirectory
}

// network gathers the relays and directory servers the instances must
// reach: the union of their cached consensuses (a missing one is a
// warning) and their authorities and fallbacks, from the torrcs or tor's
// compiled-in lists; and who of them are authorities and relays.
func (in *Inputs) network() relays.Network {
	var sets []relays.Links
	var authorities, relayAddrs []netip.Addr
	in.consensus = nil
	for _, t := range in.linkInstances() {
		consensus := in.readConsensus(t, in.dataDirectory(t))
		private := t.Options.TestingTorNetwork
		auth, refused, err := relays.DirServers(t.Options.DirAuthority, "authorities", private)
		if err != nil {
			in.log().Warn(fmt.Sprintf("DirAuthority: %v", err))
		}
		for _, r := range refused {
			in.log().Warn(fmt.Sprintf("DirAuthority %s: left out", r))
		}
		fallbacks, refused, err := relays.DirServers(t.Options.FallbackDir, "fallbacks", private)
		if err != nil {
			in.log().Warn(fmt.Sprintf("FallbackDir: %v", err))
		}
		for _, r := range refused {
			in.log().Warn(fmt.Sprintf("FallbackDir %s: left out", r))
		}
		sets = append(sets, consensus.Links, auth, fallbacks)
		authorities = append(authorities, auth.Addrs()...)
		// Not the consensus's dir-source lines nor its Authority flags:
		// tor's user writes the consensus, and a trusted source is never
		// limited by the inbound protection.
		relayAddrs = append(relayAddrs, consensus.Relays...)
	}
	return relays.Network{Links: relays.Merge(sets...), Authorities: authorities, Relays: relayAddrs}
}

// inbound is the ORPort protection of [inbound], nil when it is off: the
// relay instances' ORPorts (and DirPorts if asked) where tor listens,
// trusting the authorities, the operator's list and, if asked, every
// relay.
func (in *Inputs) inbound(ctx context.Context, nw relays.Network) *ruleset.Inbound {
	c := in.cfg.Inbound
	if !c.Enabled {
		return nil
	}
	settings, err := c.Settings() // validated when the config was loaded
	if err != nil {
		in.log().Warn(fmt.Sprintf("inbound protection off: %v", err))
		return nil
	}
	if c.SetSize == 0 {
		settings.SetSize = InboundSetSize(memTotal(in.sys.ProcRoot))
	}
	names := map[string]hostAnswer{}
	for _, t := range in.Instances {
		settings.Endpoints = append(settings.Endpoints, in.listenEndpoints(ctx, t, c.DirPorts, names)...)
	}
	settings.Endpoints = ruleset.NormalizeEndpoints(settings.Endpoints)
	if len(settings.Endpoints) == 0 {
		in.log().Warn("inbound protection is enabled, but no tor instance listens on an ORPort: nothing to protect")
		return nil
	}
	trusted := nw.Authorities
	if c.TrustRelays {
		trusted = append(trusted, nw.Relays...)
	}
	for _, a := range trusted {
		settings.Trusted = append(settings.Trusted, netip.PrefixFrom(a, a.BitLen()))
	}
	return &settings
}

// InboundSetSize is the default size of each per-source set of the
// inbound protection for a host with this much memory (bytes; 0:
// unknown), as torutils scales its sets: 256Ki entries, 512Ki from 4 GiB,
// 1Mi from 16 GiB. A guard sees hundreds of thousands of client addresses
// an hour; a full meter stops metering new sources (nftables) or drops
// them (iptables' hashlimit).
func InboundSetSize(mem uint64) uint {
	switch {
	case mem >= 16<<30:
		return 1 << 20
	case mem >= 4<<30:
		return 1 << 19
	}
	return 1 << 18
}

// memTotal is MemTotal of /proc/meminfo in bytes, 0 when unknown.
func memTotal(procRoot string) uint64 {
	data, err := os.ReadFile(filepath.Join(procRoot, "meminfo"))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// withResolvedUpstreams adds, when a resolver is systemd-resolved's stub
// (127.0.0.53), the upstream servers it forwards to: its own traffic
// leaves the host. The loopback rule already covers the stub itself. A
// recursive resolver on loopback is localResolverAllowance's.
func (in *Inputs) withResolvedUpstreams(resolvers []netip.Addr, upstreamConf string) []netip.Addr {
	stub := slices.ContainsFunc(resolvers, func(a netip.Addr) bool { return slices.Contains(systemdResolvedStubs, a.Unmap()) })
	if !stub {
		return resolvers
	}
	upstreams, err := readResolvers(upstreamConf)
	if err != nil {
		in.log().Warn(fmt.Sprintf("the resolver is systemd-resolved's stub, but its upstream servers are unknown (%v): allow them with allow.resolvers", err))
		return resolvers
	}
	for _, u := range upstreams {
		if !u.IsLoopback() && !slices.Contains(resolvers, u) {
			resolvers = append(resolvers, u)
		}
	}
	return resolvers
}

// readResolvers returns the nameserver addresses of a resolv.conf.
func readResolvers(path string) ([]netip.Addr, error) {
	f, _, err := openInput(path, false)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []netip.Addr
	sc := bufio.NewScanner(io.LimitReader(f, maxInputBytes))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			// A scoped address ("fe80::1%eth0") keeps its address part.
			addr, _, _ := strings.Cut(fields[1], "%")
			if a, err := netip.ParseAddr(addr); err == nil {
				out = append(out, a)
			}
		}
	}
	return out, sc.Err()
}
