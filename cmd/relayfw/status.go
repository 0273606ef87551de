package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/relayfw/relayfw/config"
	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/host"
	"github.com/relayfw/relayfw/ruleset"
)

// classTitles name host.StatusClasses as status prints them.
var classTitles = map[string]string{
	ruleset.ClassExit:            "exit accepted",
	ruleset.ClassRelayLink:       "relay link",
	ruleset.ClassHostAllowance:   "host allowance",
	ruleset.ClassEstablished:     "established, related, loopback",
	ruleset.ClassRejectedPolicy:  "rejected by the exit policy (TCP)",
	ruleset.ClassRejectedDefault: "rejected by default (not TCP)",
}

// gatherStatus reads the kernel's state for status and metrics. With
// inputs that cannot be read (a torrc or relayfw.toml with a syntax error,
// a missing %include …) it still reports the kernel (host.GatherStatusInvalid):
// monitoring is never blind. It fails only when the kernel cannot be read
// (not permitted, no backend).
func gatherStatus(cmd *cobra.Command, g *globals) (*host.Status, error) {
	lock, _ := readLock(cmd.Context(), g)
	release := sync.OnceFunc(lock)
	defer release()
	rs, in, inputErr := compileRuleset(cmd, g)
	if inputErr == nil {
		running := askRunningTorLater(cmd.Context(), in) // never fails: says why per instance
		b, err := chooseBackend(cmd.Context(), g, backendChoice(cmd, g, in.Config()))
		if err != nil {
			return nil, err
		}
		// A refused consensus keeps the relay links installed.
		if rs, err = in.WithInstalledLinks(cmd.Context(), b, rs); err != nil {
			return nil, backendError(err)
		}
		st, err := g.sys.GatherStatus(cmd.Context(), b, rs, in.NotExitNote())
		if err != nil {
			return nil, backendError(err)
		}
		st.Consensus = in.Consensus()
		st.Config.Tor = in.TorVerdict()
		st.Published = in.Published()
		release()
		st.RunningTor = running()
		return st, nil
	}
	cfg, err := loadConfig(cmd, g)
	if err != nil {
		cfg = host.DefaultConfig() // relayfw.toml itself is what is invalid
	}
	b, err := reportBackend(cmd, g, cfg)
	if err != nil {
		return nil, err
	}
	st, err := g.sys.GatherStatusInvalid(cmd.Context(), b, inputErr)
	return st, backendError(err)
}

// reportBackend is the backend status reads when the inputs are invalid:
// --backend, else relayfw.toml's (when it could be read), else the one of
// the last apply; with none of these, the one holding relayfw's firewall
// (auto's choice when neither does).
func reportBackend(cmd *cobra.Command, g *globals, cfg config.Config) (firewall.Backend, error) {
	name := backendChoice(cmd, g, cfg)
	b, err := chooseBackend(cmd.Context(), g, name)
	if err != nil || name != "auto" {
		return b, err
	}
	if ok, err := b.Installed(cmd.Context()); err == nil && ok {
		return b, nil
	}
	for _, o := range host.OtherBackends(cmd.Context(), b) {
		if ok, err := o.Installed(cmd.Context()); err == nil && ok {
			return o, nil
		}
	}
	return b, nil
}

// statusLong is status's manual text (relayfw(8)).
const statusLong = `Show the backend, whether relayfw's firewall is installed, whether the
torrcs and relayfw.toml are valid (and accepted by tor), whether the rules
are in sync and the relay links up to date, the last apply, the last
change, and the packet and byte counters per verdict class. Per tor
instance, the consensus relayfw read (read, with its age; missing; or
refused, and why). Per relay instance, what clients believe of its exit
policy ("published:"): the summary in its own microdescriptor, from the
consensus and microdescriptors tor caches in its DataDirectory (no control
port needed), compared with the summary tor would publish for the policy
the firewall enforces, as tor's policy_summarize decides which ports count
for general addresses. Ports the summary accepts that the firewall rejects
are a BadExit risk (clients send streams there, which fail): tor publishes
a new policy with its next descriptor (reload tor), and the next consensus
carries it, so after a change this lags for an hour or more. Ports the
firewall lets out that the summary does not list are harmless. A relay not
in the consensus, or whose microdescriptor tor has not fetched, says so. With [inbound], the protected ports, the counters by
cause and the sources blocked now, with the time left. An open
apply --confirm window ("pending:") and what a rollback would restore;
after an unconfirmed rollback, "rolled back: at T ...": the automatic
applies keep the last good firewall until an operator runs relayfw apply.
On a host where no tor instance exits, a plain note says so.

Per tor instance, the running tor ("running tor: NAME: ..."): "matches"
when the exit policy tor enforces (GETINFO exit-policy/full over its
control socket, as relayfw check asks it) equals relayfw's; "differs"
with how, and "reload tor" or that tor's version differs from relayfw's
model; "not asked" and why (no ControlSocket or ControlPort in the torrc,
such as relayor's "ControlSocket 0"; no CookieAuthentication; a socket
relayfw may not open; tor not running). A control socket that fails or
does not answer within a few seconds never fails status.

The conntrack line: the kernel's connection tracking entries in use and
their limit (in a network namespace other than the host's, the
namespace's count against the host-wide limit, and the line says so),
the established TCP timeout, nf_conntrack_tcp_loose, the hash buckets and
the kernel's drop counters; then a warning when the table is over 80%
full, when the established timeout is the kernel's default of 5 days, and
when nf_conntrack_tcp_loose is 0. relayfw changes none of these sysctls.

The last change is one of applied, pending, confirmed, rolled back (not
confirmed by the deadline, relayfw rollback, or the apply failed),
fallback (boot installed the last good or the minimal firewall) and
removed, with its time. When the other backend holds relayfw objects too,
an "also:" line says so.

--format json has the same, plus the drift, per-rule counters,
also_installed, relay_links_behind, pending, last_change, rolled_back,
consensus, published (per relay instance: in_consensus, summary,
summary6, firewall_summary, firewall_summary6, rejected_by_firewall,
rejected_by_firewall6, not_in_summary, not_in_summary6, ports_rejected,
bad_exit, why), inbound (counters by cause, the blocked sources), exit
(with a note on a host where no tor instance exits), running_tor (per
instance: asked, matches, why, only_tor and only_relayfw with their
totals, order_differs, discovered, advice, tor_version, control) and
conntrack ("loaded", "entries", "max", "scope", "source", "drops",
"buckets", "tcp_timeout_established", "tcp_loose", "warnings"; without
figures when conntrack is not loaded).

Never blind: when a torrc, an %include, a defaults file or relayfw.toml
cannot be read, status still reports the kernel (installed, counters,
other backends, blocked sources; rules named from the firewall relayfw
last installed) and exits 0; the problem is one line, "config: invalid:
..." (what apply prints), in JSON "config": {"valid": false, "error": ...},
and relay links are not compared meanwhile. status fails only when it
cannot read the kernel (exit 77 or 69). Like check and metrics, it waits
(up to 30 s, or --wait when longer) for a change in progress to end rather
than read the kernel in the middle of it, and past that reads anyway.`

func newStatusCommand(g *globals) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the backend, whether the firewall is in sync, counters per verdict class, and the last apply",
		Long:  statusLong,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "text" && format != "json" {
				return usageError(fmt.Errorf("--format %q: want text or json", format))
			}
			st, err := gatherStatus(cmd, g)
			if err != nil {
				return err
			}
			if format == "json" {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			writeStatusText(g.stdout, st)
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	return cmd
}

// writeStatusText is status's text format.
func writeStatusText(w io.Writer, st *host.Status) {
	fmt.Fprintf(w, "backend:    %s\n", st.Backend)
	fmt.Fprintf(w, "installed:  %v\n", st.Installed)
	for _, o := range st.AlsoInstalled {
		fmt.Fprintf(w, "also:       relayfw objects in %s too (relayfw apply keeps one firewall; relayfw remove removes both)\n", o)
	}
	fmt.Fprintf(w, "config:     %s\n", configLine(st.Config))
	if st.InSync {
		fmt.Fprintf(w, "in sync:    yes\n")
	} else if !st.Config.Valid {
		fmt.Fprintf(w, "in sync:    %s\n", invalidSyncLine(st))
	} else {
		fmt.Fprintf(w, "in sync:    no (%d differences; see relayfw check)\n", len(st.Drift))
	}
	if !st.Config.Valid {
		fmt.Fprintf(w, "relay links: not compared with the cached consensus while the config is invalid\n")
	} else if st.RelayLinksBehind > 0 {
		fmt.Fprintf(w, "relay links: %d behind the cached consensus (relayfw refresh)\n", st.RelayLinksBehind)
	} else {
		fmt.Fprintf(w, "relay links: up to date\n")
	}
	for _, c := range st.Consensus {
		who := ""
		if len(st.Consensus) > 1 {
			who = c.Instance + ": "
		}
		fmt.Fprintf(w, "consensus:  %s%s\n", who, c.Summary())
	}
	for _, line := range runningTorStatusLines(st.RunningTor) {
		fmt.Fprintln(w, line)
	}
	writePublished(w, st.Published)
	if st.Note != "" {
		fmt.Fprintf(w, "exit:       no — %s\n", st.Note)
	}
	if p := st.Pending; p != nil {
		fmt.Fprintf(w, "pending:    apply --confirm until %s (in %s): relayfw confirm keeps it; otherwise it rolls back to %s\n",
			p.Deadline.Format(time.RFC3339), time.Until(p.Deadline).Round(time.Second), p.Restores)
	}
	if st.LastApply != nil {
		fmt.Fprintf(w, "last apply: %s\n", st.LastApply.Format(time.RFC3339))
	} else {
		fmt.Fprintf(w, "last apply: unknown\n")
	}
	for _, line := range lastChangeLines(st) {
		fmt.Fprintln(w, line)
	}
	fmt.Fprintf(w, "counters:\n")
	for _, c := range host.StatusClasses {
		v := st.Classes[c]
		fmt.Fprintf(w, "  %-36s %12d packets %14d bytes\n", classTitles[c], v.Packets, v.Bytes)
	}
	writeInboundStatus(w, st.Inbound)
	for _, line := range conntrackLines(st.Conntrack) {
		fmt.Fprintln(w, line)
	}
}

func newMetricsCommand(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "metrics",
		Short: "Print the counters in Prometheus text format, or write them atomically with --output",
		Long: `Print relayfw's counters in the Prometheus text exposition format (series
relayfw_*). With --output FILE, write them to FILE atomically (a temporary
file renamed over it), for node_exporter's textfile collector, e.g.
--output /var/lib/prometheus/node-exporter/relayfw.prom.

The series: relayfw_packets_total and relayfw_bytes_total (by class and
rule), relayfw_installed, relayfw_config_valid, relayfw_in_sync (the
rules), relayfw_relay_links_behind, relayfw_consensus_age_seconds (by
instance), relayfw_tor_published_ports_rejected (by instance: ports the
relay's published exit-policy summary accepts that the firewall rejects,
the BadExit risk; absent while the summary is unknown, as status says),
relayfw_last_apply_timestamp_seconds,
relayfw_last_change_timestamp_seconds (by change and why),
relayfw_last_rollback_timestamp_seconds (absent when never),
relayfw_tor_policy_matches (by instance: 1 when the running tor's exit
policy equals relayfw's, 0 when not; absent for an instance tor cannot be
asked about, see relayfw status) and relayfw_info; with [inbound], relayfw_inbound_new_connections_total,
relayfw_inbound_trusted_total, relayfw_inbound_drops_total (by cause:
blocked, minute, hour, conns) and relayfw_inbound_blocked. While the
kernel tracks connections: relayfw_conntrack_entries,
relayfw_conntrack_max and relayfw_conntrack_drops_total (by kind: drop,
early_drop, insert_failed; summed over CPUs, absent when the kernel's
statistics cannot be read).

As status, metrics is never blind: when a torrc, an %include, a defaults
file or relayfw.toml cannot be read, it still reports the kernel and exits
0, with relayfw_config_valid 0 and relayfw_in_sync 0
(relayfw_relay_links_behind is then absent). Alert on
relayfw_config_valid == 0, relayfw_in_sync == 0 or
relayfw_tor_policy_matches == 0.

relayfw-metrics.timer writes the file every minute; its service runs in
the group debian-tor, which may open tor@default's control socket.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := gatherStatus(cmd, g)
			if err != nil {
				return err
			}
			if !st.Config.Valid {
				g.log.Warn("config invalid (relayfw_config_valid 0): " + st.Config.Error)
			}
			if output == "" {
				return writeMetrics(g.stdout, st)
			}
			tmp, err := os.CreateTemp(filepath.Dir(output), "."+filepath.Base(output)+".*")
			if err != nil {
				return &exitError{code: exitCantCreate, err: fmt.Errorf("metrics: %w", err)}
			}
			defer os.Remove(tmp.Name())
			if err := writeMetrics(tmp, st); err != nil {
				tmp.Close()
				return &exitError{code: exitCantCreate, err: fmt.Errorf("metrics %s: %w", tmp.Name(), err)}
			}
			if err := tmp.Chmod(0o644); err != nil {
				tmp.Close()
				return &exitError{code: exitCantCreate, err: fmt.Errorf("metrics: %w", err)}
			}
			if err := tmp.Close(); err != nil {
				return &exitError{code: exitCantCreate, err: fmt.Errorf("metrics %s: %w", tmp.Name(), err)}
			}
			if err := os.Rename(tmp.Name(), output); err != nil {
				return &exitError{code: exitCantCreate, err: fmt.Errorf("metrics: %w", err)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&output, "output", "", "write to this file atomically instead of stdout")
	return cmd
}

// writePublished is status's and check's lines on what clients believe
// of each relay instance's exit policy.
func writePublished(w io.Writer, published []host.PublishedState) {
	for _, p := range published {
		for _, line := range p.Lines() {
			fmt.Fprintf(w, "published:  %s: %s\n", p.Instance, line)
		}
	}
}

// writeInboundStatus is status's inbound section.
func writeInboundStatus(w io.Writer, in *host.InboundStatus) {
	if in == nil {
		fmt.Fprintf(w, "inbound:    off\n")
		return
	}
	fmt.Fprintf(w, "inbound:    %s\n", in.Summary)
	fmt.Fprintf(w, "  new connections %d, trusted %d; refused: blocked source %d, over the minute rate %d, over the hour rate %d, too many at once %d\n",
		in.NewConnections, in.Trusted, in.Drops["blocked"], in.Drops["minute"], in.Drops["hour"], in.Drops["conns"])
	fmt.Fprintf(w, "  blocked now: %d", len(in.Blocked))
	for i, b := range in.Blocked {
		if i == 10 {
			fmt.Fprintf(w, " … (status --format json lists all)")
			break
		}
		sep := ", "
		if i == 0 {
			sep = ": "
		}
		fmt.Fprintf(w, "%s%s (%s left)", sep, b.Source, b.Left())
	}
	fmt.Fprintf(w, "\n")
}

// metricHeader writes a series' HELP and TYPE lines.
func metricHeader(b *strings.Builder, name, typ, help string) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

// writeMetrics writes the Prometheus text format.
func writeMetrics(w io.Writer, st *host.Status) error {
	var b strings.Builder
	header := func(name, typ, help string) { metricHeader(&b, name, typ, help) }
	one := func(name, typ, help string, v uint64) {
		header(name, typ, help)
		fmt.Fprintf(&b, "%s %d\n", name, v)
	}
	boolean := func(v bool) uint64 {
		if v {
			return 1
		}
		return 0
	}
	names := make([]string, 0, len(st.Rules))
	for n := range st.Rules {
		names = append(names, n)
	}
	slices.Sort(names)
	header("relayfw_packets_total", "counter", "Packets matched by relayfw's rules.")
	for _, n := range names {
		fmt.Fprintf(&b, "relayfw_packets_total{class=%q,rule=%q} %d\n", st.RuleClass(n), n, st.Rules[n].Packets)
	}
	header("relayfw_bytes_total", "counter", "Bytes matched by relayfw's rules.")
	for _, n := range names {
		fmt.Fprintf(&b, "relayfw_bytes_total{class=%q,rule=%q} %d\n", st.RuleClass(n), n, st.Rules[n].Bytes)
	}
	one("relayfw_installed", "gauge", "Whether relayfw's firewall is installed.", boolean(st.Installed))
	one("relayfw_in_sync", "gauge", "Whether the installed rules equal the ones compiled from torrc (relay links apart).", boolean(st.InSync))
	one("relayfw_config_valid", "gauge", "Whether the torrcs, their includes and defaults files and relayfw.toml could be read (0: relayfw status says why; relayfw_in_sync is 0 meanwhile).", boolean(st.Config.Valid))
	if st.Config.Valid { // the consensus is found through the inputs
		one("relayfw_relay_links_behind", "gauge", "Relay links the cached consensus and the kernel disagree on (relayfw refresh).", uint64(st.RelayLinksBehind))
	}
	if ages := slices.DeleteFunc(slices.Clone(st.Consensus), func(c host.ConsensusState) bool { return c.AgeSeconds == nil }); len(ages) > 0 {
		header("relayfw_consensus_age_seconds", "gauge", "Time since the valid-after of the tor instance's cached consensus (none while it is missing or refused).")
		for _, c := range ages {
			fmt.Fprintf(&b, "relayfw_consensus_age_seconds{instance=%q} %d\n", c.Instance, *c.AgeSeconds)
		}
	}
	writeRunningTorMetrics(&b, st.RunningTor)
	if known := slices.DeleteFunc(slices.Clone(st.Published), func(p host.PublishedState) bool { return !p.Known() }); len(known) > 0 {
		header("relayfw_tor_published_ports_rejected", "gauge", "Ports the relay's published exit-policy summary (its microdescriptor in tor's cached consensus) accepts that the firewall rejects for general addresses: clients send streams there (BadExit risk). Absent while unknown.")
		for _, p := range known {
			fmt.Fprintf(&b, "relayfw_tor_published_ports_rejected{instance=%q} %d\n", p.Instance, *p.PortsRejected)
		}
	}
	if st.LastApply != nil {
		one("relayfw_last_apply_timestamp_seconds", "gauge", "When relayfw last applied.", uint64(st.LastApply.Unix()))
	}
	if c := st.LastChange; c != nil {
		header("relayfw_last_change_timestamp_seconds", "gauge", "When relayfw last changed the firewall; change is applied, pending, confirmed, rolled back (why: deadline, rollback, failure), fallback or removed.")
		if c.Why != "" {
			fmt.Fprintf(&b, "relayfw_last_change_timestamp_seconds{change=%q,why=%q} %d\n", c.Kind, c.Why, c.At.Unix())
		} else {
			fmt.Fprintf(&b, "relayfw_last_change_timestamp_seconds{change=%q} %d\n", c.Kind, c.At.Unix())
		}
		if c.LastRollback != nil {
			one("relayfw_last_rollback_timestamp_seconds", "gauge", "When relayfw's firewall was last rolled back (not confirmed by the deadline, relayfw rollback, or a failed apply).", uint64(c.LastRollback.Unix()))
		}
	}
	if in := st.Inbound; in != nil {
		one("relayfw_inbound_new_connections_total", "counter", "New connections to the ORPorts the inbound protection looked at.", in.NewConnections)
		one("relayfw_inbound_trusted_total", "counter", "New connections from trusted sources (authorities, relays, the operator's list).", in.Trusted)
		header("relayfw_inbound_drops_total", "counter", "New connections refused, by cause: blocked (source blocked), minute and hour (over a rate: blocked from now), conns (too many at once).")
		for _, c := range ruleset.InboundCauses {
			fmt.Fprintf(&b, "relayfw_inbound_drops_total{cause=%q} %d\n", c, in.Drops[c])
		}
		one("relayfw_inbound_blocked", "gauge", "Sources blocked now.", uint64(len(in.Blocked)))
	}
	writeConntrackMetrics(&b, st.Conntrack)
	header("relayfw_info", "gauge", "The backend in use.")
	fmt.Fprintf(&b, "relayfw_info{backend=%q,version=%q} 1\n", st.Backend, version)
	_, err := io.WriteString(w, b.String())
	return err
}

// configLine is status's config line: "valid", or "invalid: " and the line
// every other command prints.
func configLine(c host.ConfigStatus) string {
	switch {
	case c.Valid && c.Tor != "":
		return "valid (" + c.Tor + ")"
	case c.Valid:
		return "valid"
	}
	return "invalid: " + c.Error
}

// invalidSyncLine is status's in-sync line while the config is invalid:
// nothing can be compiled to compare with, so not in sync; the kernel is
// compared with what relayfw last installed.
func invalidSyncLine(st *host.Status) string {
	const why = "no, the config is invalid"
	switch {
	case !st.Installed:
		return why
	case len(st.Drift) > 0:
		return fmt.Sprintf("%s, and the kernel has %d differences from the firewall relayfw last installed (status --format json lists them)", why, len(st.Drift))
	}
	return why + " (the kernel holds what relayfw last installed)"
}

// whyTitles say why a rollback happened.
var whyTitles = map[string]string{
	host.RollbackDeadline: "not confirmed by the deadline",
	host.RollbackCommand:  "relayfw rollback",
	host.RollbackFailure:  "the apply failed; what it changed was restored",
}

// lastChangeLines are status's lines on the last change, the last
// rollback and an unconfirmed rollback the automatic applies keep to.
func lastChangeLines(st *host.Status) []string {
	var lines []string
	if c := st.LastChange; c != nil {
		line := fmt.Sprintf("last change: %s at %s", c.Kind, c.At.Format(time.RFC3339))
		if w := whyTitles[c.Why]; w != "" {
			line += " (" + w + ")"
		} else if c.Why != "" {
			line += " (" + c.Why + ")"
		}
		if c.Kind == host.ChangePending && c.Window != "" {
			line += ", window until " + c.Window
		}
		if c.Detail != "" {
			line += ": " + c.Detail
		}
		lines = append(lines, line)
		if r := c.LastRollback; r != nil && (c.Kind != host.ChangeRolledBack || !r.Equal(c.At)) {
			lines = append(lines, "last rollback: "+r.Format(time.RFC3339))
		}
	}
	if r := st.RolledBack; r != nil {
		why := whyTitles[r.Why]
		if why == "" {
			why = r.Why
		}
		lines = append(lines, fmt.Sprintf("rolled back: at %s (%s); the torrc still holds that change: since then the automatic applies (boot, relayfw-reapply) keep the last good firewall, until an operator runs relayfw apply",
			r.At.Format(time.RFC3339), why))
	}
	return lines
}
