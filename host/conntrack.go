package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ti-mo/conntrack"
)

// ConntrackStatus is the kernel's connection tracking table as status and
// metrics report it. relayfw's firewall is stateful: every exit
// connection, relay link and inbound connection of the host holds an
// entry, and when the table is full the kernel drops the packets of new
// connections ("nf_conntrack: table full, dropping packet"). relayfw only
// reads these figures; it never changes a sysctl (docs/conntrack.md says
// how to size them).
type ConntrackStatus struct {
	// Loaded is false when the kernel tracks no connections here
	// (nf_conntrack is not loaded): then there are no figures, and Note
	// says so.
	Loaded bool `json:"loaded"`
	// Entries are the entries in use and Max the limit
	// (nf_conntrack_count, nf_conntrack_max; 0 is no limit).
	Entries *uint64 `json:"entries,omitempty"`
	Max     *uint64 `json:"max,omitempty"`
	// Scope says whose figures these are: ScopeHost, ScopeNamespace (this
	// network namespace's count against the host-wide limit),
	// ScopeNamespaceLimit (a kernel that gives the namespace a limit of its
	// own), or "" when relayfw cannot tell.
	Scope string `json:"scope,omitempty"`
	// Source is where Entries and Max come from: "netlink" (the kernel's
	// conntrack statistics) or "proc" (/proc/sys/net/netfilter, when the
	// statistics cannot be read).
	Source string `json:"source,omitempty"`
	// Drops are the kernel's conntrack statistics, summed over the CPUs,
	// by kind (ConntrackDropKinds); absent when they cannot be read.
	Drops map[string]uint64 `json:"drops,omitempty"`
	// Buckets is the hash table's size (nf_conntrack_buckets, the
	// module's hashsize).
	Buckets *uint64 `json:"buckets,omitempty"`
	// EstablishedTimeout is nf_conntrack_tcp_timeout_established, in
	// seconds: how long an established TCP connection that sends nothing
	// keeps its entry.
	EstablishedTimeout *uint64 `json:"tcp_timeout_established,omitempty"`
	// TCPLoose is nf_conntrack_tcp_loose: whether the kernel picks up a
	// TCP connection it has no entry for in the middle of its stream.
	TCPLoose *bool `json:"tcp_loose,omitempty"`
	// Warnings say what an operator should change (ConntrackWarnings).
	Warnings []string `json:"warnings,omitempty"`
	// Note says why figures are missing.
	Note string `json:"note,omitempty"`
}

// Scopes of ConntrackStatus.
const (
	ScopeHost           = "host"
	ScopeNamespace      = "namespace"
	ScopeNamespaceLimit = "namespace-limit"
)

// ConntrackDropKinds are the kernel's counters relayfw reports, as
// conntrack -S names them: drop counts packets dropped because no entry
// could be made for them (the table was full and nothing could be
// evicted); early_drop counts entries of connections not yet established
// (not "assured") that were evicted to make room for new ones; insert_failed counts
// entries that could not be inserted (a clash of two packets of one new
// connection; their packet is dropped unless the kernel resolves it).
var ConntrackDropKinds = []string{"drop", "early_drop", "insert_failed"}

// ConntrackDefaultEstablished is the kernel's default
// nf_conntrack_tcp_timeout_established: 5 days.
const ConntrackDefaultEstablished = 5 * 24 * 3600

// ConntrackSuggestedEstablished is what relayfw suggests instead: 2
// hours (ConntrackWarnings says why).
const ConntrackSuggestedEstablished = 2 * 3600

// conntrackFullPercent is the share of the limit from which relayfw warns.
const conntrackFullPercent = 80

// ConntrackCounters are the kernel's conntrack statistics (over netlink):
// the entries in use, the limit, and the drop counters summed over CPUs.
type ConntrackCounters struct {
	Entries, Max uint64
	Drops        map[string]uint64
}

// conntrackSource reads the kernel's conntrack statistics.
type conntrackSource func(ctx context.Context) (ConntrackCounters, error)

// conntrackStatsWait bounds the netlink query: the kernel answers at once,
// but status must never hang.
const conntrackStatsWait = 2 * time.Second

// Conntrack reads the kernel's connection tracking figures of this network
// namespace; it never fails: what it cannot read, Note says.
func (s *System) Conntrack(ctx context.Context) *ConntrackStatus {
	return readConntrack(ctx, s.ProcRoot, netlinkConntrack)
}

// netlinkConntrack asks the kernel's conntrack statistics over netlink
// (ctnetlink; the kernel loads nf_conntrack_netlink for it when needed),
// within conntrackStatsWait.
func netlinkConntrack(ctx context.Context) (ConntrackCounters, error) {
	ctx, cancel := context.WithTimeout(ctx, conntrackStatsWait)
	defer cancel()
	type answer struct {
		c   ConntrackCounters
		err error
	}
	done := make(chan answer, 1)
	// The library has no deadline of its own; on a timeout the goroutine
	// ends with the kernel's answer, or with the process.
	go func() {
		c, err := queryConntrack()
		done <- answer{c, err}
	}()
	select {
	case a := <-done:
		return a.c, a.err
	case <-ctx.Done():
		return ConntrackCounters{}, fmt.Errorf("conntrack statistics: %w", ctx.Err())
	}
}

// queryConntrack is one netlink query of the global and per-CPU
// statistics.
func queryConntrack() (ConntrackCounters, error) {
	c, err := conntrack.Dial(nil)
	if err != nil {
		return ConntrackCounters{}, fmt.Errorf("conntrack statistics: %w", err)
	}
	defer c.Close()
	global, err := c.StatsGlobal()
	if err != nil {
		return ConntrackCounters{}, fmt.Errorf("conntrack statistics: %w", err)
	}
	cpus, err := c.Stats()
	if err != nil {
		return ConntrackCounters{}, fmt.Errorf("conntrack statistics per CPU: %w", err)
	}
	return sumConntrack(global, cpus), nil
}

// sumConntrack sums the per-CPU counters. The kernel keeps each as a
// 32-bit number per CPU: a sum that goes down is a wrap, which Prometheus
// reads as a counter reset.
func sumConntrack(global conntrack.StatsGlobal, cpus []conntrack.Stats) ConntrackCounters {
	out := ConntrackCounters{Entries: uint64(global.Entries), Max: uint64(global.MaxEntries), Drops: map[string]uint64{}}
	for _, k := range ConntrackDropKinds {
		out.Drops[k] = 0
	}
	for _, s := range cpus {
		out.Drops["drop"] += uint64(s.Drop)
		out.Drops["early_drop"] += uint64(s.EarlyDrop)
		out.Drops["insert_failed"] += uint64(s.InsertFailed)
	}
	return out
}

// readConntrack is Conntrack with the /proc root and the statistics'
// source given: the sysctls under procRoot/sys/net/netfilter say whether
// conntrack is loaded (it is only asked over netlink then, so that status
// loads no module the firewall did not), the source gives the entries, the
// limit and the drops, and the sysctls stand in for the first two when it
// cannot be read.
func readConntrack(ctx context.Context, procRoot string, source conntrackSource) *ConntrackStatus {
	dir := filepath.Join(procRoot, "sys/net/netfilter")
	count, err := readSysctl(dir, "nf_conntrack_count")
	if errors.Is(err, fs.ErrNotExist) {
		return &ConntrackStatus{Note: "the kernel tracks no connections here (nf_conntrack is not loaded): no figures"}
	}
	st := &ConntrackStatus{Loaded: true, Scope: conntrackScope(procRoot, dir)}
	var notes []string
	if c, serr := source(ctx); serr == nil {
		st.Source, st.Entries, st.Drops = "netlink", &c.Entries, c.Drops
		if c.Max > 0 { // kernels before 4.18 do not say
			st.Max = &c.Max
		}
	} else {
		st.Source = "proc"
		notes = append(notes, serr.Error()+": no drop counters")
		if err == nil {
			st.Entries = &count
		} else {
			notes = append(notes, err.Error())
		}
	}
	if st.Max == nil {
		if m, err := readSysctl(dir, "nf_conntrack_max"); err == nil {
			st.Max = &m
		} else {
			notes = append(notes, err.Error())
		}
	}
	if b, err := readSysctl(dir, "nf_conntrack_buckets"); err == nil {
		st.Buckets = &b
	}
	if t, err := readSysctl(dir, "nf_conntrack_tcp_timeout_established"); err == nil {
		st.EstablishedTimeout = &t
	}
	if l, err := readSysctl(dir, "nf_conntrack_tcp_loose"); err == nil {
		loose := l != 0
		st.TCPLoose = &loose
	}
	st.Note = strings.Join(notes, "; ")
	st.Warnings = ConntrackWarnings(st)
	return st
}

// readSysctl reads one number of /proc/sys (a kernel file: a short read
// is enough; more than a number is refused).
func readSysctl(dir, name string) (uint64, error) {
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf, err := io.ReadAll(io.LimitReader(f, 64))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(buf)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: not a number: %q", name, buf)
	}
	return v, nil
}

// conntrackScope says whose figures this namespace's sysctls give. In the
// host's own network namespace, the host's. In another, the count is the
// namespace's own and the limit the host's: the kernel makes
// nf_conntrack_max read-only outside the host's namespace (a kernel that
// lets a namespace write it gives it a limit of its own). Whether this is
// the host's namespace is PID 1's answer, unless the sysctl is read-only:
// PID 1 of a PID namespace (a container's init) shares the container's
// network namespace. Where PID 1's namespace cannot be read (a sandbox,
// or not root), the sysctl's mode is the kernel's. "" when neither tells.
func conntrackScope(procRoot, dir string) string {
	writable, known := false, false
	if fi, err := os.Stat(filepath.Join(dir, "nf_conntrack_max")); err == nil {
		writable, known = fi.Mode().Perm()&0o222 != 0, true
	}
	same, pidOneKnown := sharesInitNetns(procRoot)
	switch {
	case pidOneKnown:
		if same && (writable || !known) {
			return ScopeHost
		}
	case !known:
		return ""
	case writable:
		return ScopeHost
	}
	if writable {
		return ScopeNamespaceLimit
	}
	return ScopeNamespace
}

// ConntrackWarnings are what an operator of a busy exit should change: a
// table past conntrackFullPercent of its limit, the kernel's default
// established timeout, and a kernel that does not pick up connections
// mid-stream.
func ConntrackWarnings(c *ConntrackStatus) []string {
	if c == nil || !c.Loaded {
		return nil
	}
	var out []string
	if c.Entries != nil && c.Max != nil && *c.Max > 0 && *c.Entries*100 > *c.Max*conntrackFullPercent {
		where := ""
		if c.Scope == ScopeNamespace || c.Scope == ScopeNamespaceLimit {
			where = " in this network namespace"
		}
		out = append(out, fmt.Sprintf("conntrack table %d%% full%s (%d of %d entries): when it is full, the kernel drops the packets of new connections (\"nf_conntrack: table full, dropping packet\"); raise net.netfilter.nf_conntrack_max (and nf_conntrack_buckets) in /etc/sysctl.d, see relayfw's docs/conntrack.md",
			*c.Entries*100 / *c.Max, where, *c.Entries, *c.Max))
	}
	if c.EstablishedTimeout != nil && *c.EstablishedTimeout == ConntrackDefaultEstablished {
		out = append(out, fmt.Sprintf("conntrack keeps an idle established TCP connection for %d s (5 days, the kernel's default): a connection whose peer vanished without closing holds its entry that long, and a busy exit fills the table with dead connections; set net.netfilter.nf_conntrack_tcp_timeout_established = %d (2 hours: tor's own links speak at least every 5 minutes, KeepalivePeriod, and a connection silent for longer that speaks again is picked up mid-stream, nf_conntrack_tcp_loose = 1)",
			ConntrackDefaultEstablished, ConntrackSuggestedEstablished))
	}
	if c.TCPLoose != nil && !*c.TCPLoose {
		out = append(out, "net.netfilter.nf_conntrack_tcp_loose is 0: the kernel no longer picks up a TCP connection it has no entry for in the middle of its stream (relayfw's rules accept that pickup: ct state new, ACK without SYN), so connections older than the firewall and those whose entry expired — the SSH session that ran apply, the connections to tor's ORPorts — are reset when the host sends next, unless the exit policy happens to accept the packet; set it to 1, the kernel's default")
	}
	return out
}
