package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/relayfw/relayfw/host"
	"github.com/relayfw/relayfw/internal/digits"
)

// scopeTitles say whose conntrack figures status shows.
var scopeTitles = map[string]string{
	host.ScopeHost:           "the host's",
	host.ScopeNamespace:      "this network namespace's count against the host-wide limit",
	host.ScopeNamespaceLimit: "this network namespace's count and limit",
}

// conntrackLines are status's conntrack line and its warnings.
func conntrackLines(c *host.ConntrackStatus) []string {
	if c == nil {
		return nil
	}
	if !c.Loaded {
		return []string{"conntrack:  " + c.Note}
	}
	var parts []string
	figures := "? entries"
	switch {
	case c.Entries != nil && c.Max != nil && *c.Max > 0:
		figures = fmt.Sprintf("%s of %s entries (%d%%)", digits.Grouped(*c.Entries), digits.Grouped(*c.Max), *c.Entries*100 / *c.Max)
	case c.Entries != nil && c.Max != nil:
		figures = digits.Grouped(*c.Entries) + " entries (no limit)"
	case c.Entries != nil:
		figures = digits.Grouped(*c.Entries) + " entries of an unknown limit"
	case c.Max != nil:
		figures = "? of " + digits.Grouped(*c.Max) + " entries"
	}
	if s := scopeTitles[c.Scope]; s != "" {
		figures += ", " + s
	}
	parts = append(parts, figures)
	var sysctls []string
	if t := c.EstablishedTimeout; t != nil {
		s := "established timeout " + seconds(*t)
		if *t == host.ConntrackDefaultEstablished {
			s += " (the kernel's default)"
		}
		sysctls = append(sysctls, s)
	}
	if l := c.TCPLoose; l != nil {
		sysctls = append(sysctls, map[bool]string{true: "tcp_loose 1", false: "tcp_loose 0"}[*l])
	}
	if b := c.Buckets; b != nil {
		sysctls = append(sysctls, digits.Grouped(*b)+" hash buckets")
	}
	if len(sysctls) > 0 {
		parts = append(parts, strings.Join(sysctls, ", "))
	}
	if c.Drops != nil {
		var d []string
		for _, k := range host.ConntrackDropKinds {
			d = append(d, fmt.Sprintf("%s %s", k, digits.Grouped(c.Drops[k])))
		}
		parts = append(parts, "kernel counters: "+strings.Join(d, ", "))
	}
	if c.Note != "" {
		parts = append(parts, c.Note)
	}
	lines := []string{"conntrack:  " + strings.Join(parts, "; ")}
	for _, w := range c.Warnings {
		lines = append(lines, "  warning: "+w)
	}
	return lines
}

// seconds says a sysctl's seconds in the largest unit that divides them.
func seconds(s uint64) string {
	for _, u := range []struct {
		n    uint64
		name string
	}{{86400, "day"}, {3600, "hour"}, {60, "minute"}} {
		if s >= u.n && s%u.n == 0 {
			if s == u.n {
				return "1 " + u.name
			}
			return fmt.Sprintf("%d %ss", s/u.n, u.name)
		}
	}
	return fmt.Sprintf("%d s", s)
}

// writeConntrackMetrics writes the conntrack series; none when conntrack
// is not loaded, and no drops when the kernel's statistics could not be
// read.
func writeConntrackMetrics(b *strings.Builder, c *host.ConntrackStatus) {
	if c == nil || !c.Loaded {
		return
	}
	gauge := func(name, help string, v *uint64) {
		if v != nil {
			metricHeader(b, name, "gauge", help)
			fmt.Fprintf(b, "%s %d\n", name, *v)
		}
	}
	gauge("relayfw_conntrack_entries", "Connection tracking entries in use (in a network namespace other than the host's: that namespace's).", c.Entries)
	gauge("relayfw_conntrack_max", "The connection tracking table's limit, nf_conntrack_max (0: none; in a network namespace the host's, which each namespace may fill).", c.Max)
	if c.Drops != nil {
		metricHeader(b, "relayfw_conntrack_drops_total", "counter", "The kernel's conntrack statistics summed over CPUs, by kind: drop (packets dropped: no entry could be made, the table full), early_drop (entries of connections not yet established evicted to make room), insert_failed (entries that could not be inserted).")
		for _, k := range host.ConntrackDropKinds {
			fmt.Fprintf(b, "relayfw_conntrack_drops_total{kind=%q} %d\n", k, c.Drops[k])
		}
	}
}

// warnConntrack logs the conntrack warnings after an apply: the firewall
// it installed tracks every connection.
func warnConntrack(cmd *cobra.Command, g *globals) {
	for _, w := range g.sys.Conntrack(cmd.Context()).Warnings {
		g.log.Warn(w)
	}
}
