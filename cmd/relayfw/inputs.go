package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/relayfw/relayfw/config"
	"github.com/relayfw/relayfw/relays"
	"github.com/relayfw/relayfw/rules"
)

const (
	defaultResolvConf = "/etc/resolv.conf"
	// defaultDataDirectory is where Debian's tor keeps its state (set by
	// /usr/share/tor/tor-service-defaults-torrc, not by torrc).
	defaultDataDirectory = "/var/lib/tor"
)

// inputs is everything a command computes from the torrcs, --policy, the
// config file and the host.
type inputs struct {
	cfg       config.Config
	instances []*torInstance
	// watched are the files and directories the firewall depends on.
	watched []string
}

// loadInputs reads the config file and every tor instance's torrc and
// builds their effective exit policies. Warnings go to the log (stderr).
func loadInputs(cmd *cobra.Command, g *globals) (*inputs, error) {
	in := &inputs{}
	cfg, err := loadConfig(cmd, g)
	if err != nil {
		return nil, err
	}
	in.cfg = cfg
	srcs, err := instanceSources(cmd, g, in)
	if err != nil {
		return nil, err
	}
	facts := hostFacts()
	for _, src := range srcs {
		defaults, lines, err := readInstance(src, &in.watched)
		var fe *rules.FileError
		if errors.As(err, &fe) && fe.Path == src.torrc && errors.Is(err, fs.ErrNotExist) && len(srcs) == 1 &&
			g.policySet(cmd) && !g.torrcSet(cmd) && in.cfg.Torrc == "" && len(in.cfg.Instances) == 0 {
			// --policy alone, on a host without a torrc: an empty torrc.
			lines, err = nil, nil
		}
		if err != nil {
			return nil, err
		}
		t := &torInstance{name: src.name, torrc: src.torrc, defaults: src.defaults, defaultsName: src.defaultsName}
		if t.opts, err = rules.OptionsFromGroups(defaults, lines); err != nil {
			return nil, err
		}
		if g.policySet(cmd) {
			t.opts.ExitPolicy = nil
			if g.policy != "" {
				t.opts.ExitPolicy = []rules.ConfigLine{{Key: "ExitPolicy", Value: g.policy, File: "--policy"}}
			}
		}
		for _, w := range t.opts.Warnings {
			g.log.Warn(w)
		}
		if t.effective, err = rules.EffectivePolicy(t.opts, facts); err != nil {
			return nil, err
		}
		for _, w := range t.effective.Warnings {
			g.log.Warn(w)
		}
		in.instances = append(in.instances, t)
	}
	if err := in.resolveUsers(g); err != nil {
		return nil, err
	}
	return in, nil
}

// loadConfig reads relayfw.toml; the default one is optional.
func loadConfig(cmd *cobra.Command, g *globals) (config.Config, error) {
	cfg, err := config.Load(g.configPath)
	switch {
	case err == nil:
		return cfg, nil
	case errors.Is(err, fs.ErrNotExist) && !g.configSet(cmd):
		return config.Config{}, nil
	}
	return config.Config{}, fmt.Errorf("config: %w", err)
}

// resolveUsers finds each instance's uid. A single torrc without User
// keeps an unscoped exit policy (tor runs as whoever started it); with
// several instances one without User runs as root. Two exit instances of
// one user cannot be told apart in the kernel: that is refused.
func (in *inputs) resolveUsers(g *globals) error {
	owner := map[uint32]*torInstance{}
	for _, t := range in.instances {
		if t.opts.User == "" {
			if len(in.instances) == 1 {
				continue
			}
			if t.isExit() {
				g.log.Warn(fmt.Sprintf("%s has no User: tor runs it as root, so its exit policy applies to root's sockets", t.describe()))
			}
			root := uint32(0)
			t.uid = &root
		} else {
			uid, err := lookupUID(t.opts.User)
			if err != nil {
				at := t.opts.Origin["user"]
				return &rules.SyntaxError{File: at.File, Line: at.Line,
					Err: fmt.Errorf("user %q (option User) does not exist on this host (tor refuses to start: \"Error setting configured user\")", t.opts.User)}
			}
			t.uid = &uid
		}
		if !t.isExit() {
			continue
		}
		if other, dup := owner[*t.uid]; dup {
			return &exitError{code: exitDataErr, err: fmt.Errorf("%s and %s exit as the same user: the kernel cannot tell their exit traffic apart; give each instance its own User (tor-instance-create does)",
				other.describe(), t.describe())}
		}
		owner[*t.uid] = t
	}
	return nil
}

// ruleInstances are the instances as the compiler sees them.
func (in *inputs) ruleInstances() []rules.Instance {
	out := make([]rules.Instance, 0, len(in.instances))
	for _, t := range in.instances {
		out = append(out, rules.Instance{Name: t.name, Policy: t.effective.Policy, UID: t.uid, User: t.opts.User, ExitSources: t.opts.OutboundBindExit})
	}
	return out
}

// ruleset compiles every instance's policy and the host's needs.
func (in *inputs) ruleset(g *globals) (rules.Ruleset, rules.Host) {
	h := in.host(g)
	return rules.CompileInstances(in.ruleInstances(), h), h
}

// hostFacts gathers the host's interface addresses and a resolver for
// host names given as Address.
func hostFacts() rules.HostFacts {
	var facts rules.HostFacts
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				facts.InterfaceAddrs = append(facts.InterfaceAddrs, p.Addr())
			}
		}
	}
	facts.LookupHost = func(name string) ([]netip.Addr, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return net.DefaultResolver.LookupNetIP(ctx, "ip", name)
	}
	return facts
}

// host builds the compiler's view of what the host must keep reaching.
func (in *inputs) host(g *globals) rules.Host {
	allow := in.cfg.Allow
	h := rules.Host{
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
					g.log.Warn(fmt.Sprintf("no DNS allowance: %v", err))
				}
				rs = append(rs, found...)
			}
			h.Resolvers = withResolvedUpstreams(g, rs, resolvedUpstreamConf)
		}
		h.LocalResolver = in.localResolverAllowance(g, h.Resolvers)
	}
	h.Updates = in.updatesAllowance(g)
	h.RelayLinks = in.relayLinks(g)
	h.Extra = in.extraAllowances(g)
	h.LogRejectsPerMinute = in.cfg.Log.RejectsPerMinute
	return h
}

// extraAllowances turns allow.extra into allowances: host names are
// resolved now (one that does not resolve is left out, with a warning,
// rather than keeping the whole firewall from being applied), users
// looked up.
func (in *inputs) extraAllowances(g *globals) []rules.Allowance {
	var out []rules.Allowance
	for _, e := range in.cfg.Allow.Extra {
		a := rules.Allowance{Name: e.Name, Proto: e.Proto}
		if a.Proto == "" {
			a.Proto = "tcp"
		}
		for _, p := range e.Ports {
			lo, hi, _ := config.ParsePortRange(p) // validated when loaded
			a.Ports = append(a.Ports, rules.PortRange{First: lo, Last: hi})
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
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", to)
			cancel()
			if err != nil {
				g.log.Warn(fmt.Sprintf("allow.extra %s: %q does not resolve (%v); left out", e.Name, to, err))
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
			uid, err := lookupUID(e.User)
			if err != nil {
				g.log.Warn(fmt.Sprintf("allow.extra %s: user %q: %v; left out", e.Name, e.User, err))
				continue
			}
			a.UID = &uid
		}
		out = append(out, a)
	}
	return out
}

// lookupUID accepts a user name or a numeric uid. A variable so that the
// golden tests see the same uids on every machine.
var lookupUID = lookupSystemUID

func lookupSystemUID(name string) (uint32, error) {
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
func (in *inputs) resolvConfFiles() []string {
	var out []string
	for _, t := range in.instances {
		path := t.opts.ServerDNSResolvConfFile
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
func (in *inputs) dataDirectory(t *torInstance) string {
	switch {
	case in.cfg.DataDirectory != "" && len(in.instances) == 1:
		return in.cfg.DataDirectory
	case t.opts.DataDirectory != "":
		return t.opts.DataDirectory
	}
	return defaultDataDirectory
}

// relayLinks gathers the relays and directory servers the instances must
// reach: the union of their cached consensuses (a missing one is a
// warning) and their authorities and fallbacks, from the torrcs or tor's
// compiled-in lists.
func (in *inputs) relayLinks(g *globals) []netip.AddrPort {
	anyRelay := slices.ContainsFunc(in.instances, (*torInstance).isRelay)
	var sets []relays.Links
	for _, t := range in.instances {
		if !t.isRelay() && anyRelay {
			continue // a client instance next to relays: nothing of its own
		}
		dir := in.dataDirectory(t)
		consensus, path, err := relays.ReadConsensus(dir)
		if err != nil {
			who := ""
			if len(in.instances) > 1 {
				who = t.describe() + ": "
			}
			msg := fmt.Sprintf("%sno cached consensus in %s (%s); relay links are the directory authorities and fallbacks only",
				who, dir, strings.ReplaceAll(err.Error(), "\n", "; "))
			if g.readOnly {
				g.log.Debug(msg) // apply, check and status say it
			} else {
				g.log.Warn(msg)
			}
		} else {
			g.log.Debug("read consensus", "path", path, "links", len(consensus))
		}
		auth, err := relays.DirServers(t.opts.DirAuthority, "authorities")
		if err != nil {
			g.log.Warn(fmt.Sprintf("DirAuthority: %v", err))
		}
		fallbacks, err := relays.DirServers(t.opts.FallbackDir, "fallbacks")
		if err != nil {
			g.log.Warn(fmt.Sprintf("FallbackDir: %v", err))
		}
		sets = append(sets, consensus, auth, fallbacks)
	}
	return relays.Merge(sets...)
}

// resolvedUpstreamConf lists systemd-resolved's upstream servers.
var resolvedUpstreamConf = "/run/systemd/resolve/resolv.conf"

// withResolvedUpstreams adds, when a resolver is systemd-resolved's stub
// (127.0.0.53), the upstream servers it forwards to: its own traffic
// leaves the host. The loopback rule already covers the stub itself. A
// recursive resolver on loopback is localResolverAllowance's.
func withResolvedUpstreams(g *globals, resolvers []netip.Addr, upstreamConf string) []netip.Addr {
	stub := slices.ContainsFunc(resolvers, func(a netip.Addr) bool { return slices.Contains(systemdResolvedStubs, a.Unmap()) })
	if !stub {
		return resolvers
	}
	upstreams, err := readResolvers(upstreamConf)
	if err != nil {
		g.log.Warn(fmt.Sprintf("the resolver is systemd-resolved's stub, but its upstream servers are unknown (%v): allow them with allow.resolvers", err))
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
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []netip.Addr
	sc := bufio.NewScanner(f)
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
