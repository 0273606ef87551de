package bench

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// operatorRow compares one of relayfw's operations with a peer: a median
// each, their ratio, and the target for that ratio (0: none).
type operatorRow struct {
	workload, backend, operation string
	relayfw                      time.Duration // 0: the row times the peer alone
	peer                         string
	peerMedian                   time.Duration
	target                       float64
	metric                       string // the ratio's b.ReportMetric unit
}

func (r operatorRow) ratio() float64 { return float64(r.relayfw) / float64(r.peerMedian) }

// ratioText is the ratio in the table: "—" for a row of the peer alone.
func (r operatorRow) ratioText() string {
	if r.relayfw == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", r.ratio())
}

// verdict says whether the row meets its target.
func (r operatorRow) verdict() string {
	switch {
	case r.target == 0 || r.relayfw == 0:
		return "—"
	case r.ratio() <= r.target:
		return "met"
	default:
		return "not met"
	}
}

// rows are the comparisons the issue sets targets for, and the ones it
// does not that show where the time goes.
func (o *operatorRun) rows(w operatorWorkload) []operatorRow {
	m := func(op string) time.Duration { return median(o.times[op]) }
	load, readBack, linear := "`nft -f` of relayfw's print", "`nft list table inet relayfw`", "linear ruleset, `nft -f`"
	if !o.nftables {
		load = "`ipset restore` + `iptables-restore` + `ip6tables-restore` of relayfw's print"
		readBack = "`iptables-save` + `ip6tables-save` + `ipset save`"
		linear = "linear ruleset, `iptables-restore` + `ip6tables-restore`"
	}
	// The targets the issue sets for nftables alone.
	nftTarget := func(t float64) float64 {
		if o.nftables {
			return t
		}
		return 0
	}
	freshTarget := 0.0
	if w.entries == 0 {
		freshTarget = nftTarget(0.8)
	}
	row := func(op, metric string, relayfw time.Duration, peer string, peerMedian time.Duration, target float64) operatorRow {
		return operatorRow{w.label, o.label, op, relayfw, peer, peerMedian, target, metric}
	}
	rows := []operatorRow{
		row("fresh apply", "fresh/print-load", m("fresh-apply"), load, m("print-load"), freshTarget),
		row("no-op re-apply", "noop/fresh", m("noop-apply"), "relayfw's fresh apply", m("fresh-apply"), 0.5),
		row("check", "check/print-load", m("check"), load, m("print-load"), nftTarget(0.5)),
		row("status", "status/print-load", m("status"), load, m("print-load"), nftTarget(0.5)),
		row("check", "check/read-back", m("check"), readBack, m("read-back"), nftTarget(1)),
		row("status", "status/read-back", m("status"), readBack, m("read-back"), nftTarget(1)),
		row("refresh (consensus unchanged)", "refresh/print-load", m("refresh"), load, m("print-load"), 0),
	}
	if w.entries > 0 {
		target := 0.0
		if w.entries >= 10000 {
			target = map[bool]float64{true: 0.6, false: 1}[o.nftables]
		}
		rows = append(rows, row("fresh apply", "fresh/linear", m("fresh-apply"), linear, m("linear-load"), target))
	}
	return append(rows, row("(tor's judgement alone)", "", 0, "`tor --verify-config` of the torrc", m("tor-verify"), 0))
}

// report reports every median and ratio as a metric, and logs the rows.
func (o *operatorRun) report(rows []operatorRow) {
	for _, op := range slices.Sorted(maps.Keys(o.times)) {
		o.b.ReportMetric(float64(median(o.times[op]).Microseconds())/1000, op+"-ms")
	}
	for _, r := range rows {
		if r.metric != "" {
			o.b.ReportMetric(r.ratio(), r.metric)
		}
	}
	logTable(o.b, fmt.Sprintf("medians of %d", len(o.times["fresh-apply"])), rows)
}

// logTable logs a table of rows under a title.
func logTable(b *testing.B, title string, rows []operatorRow) {
	logWhole(b, title, markdownTable(rows))
}

// logWhole logs text under a title. go test cuts a benchmark's log after
// ten lines unless -v streams it: without -v the text goes to the
// standard output too, whole.
func logWhole(b *testing.B, title, text string) {
	b.Logf("%s:\n%s", title, text)
	if !testing.Verbose() {
		fmt.Printf("%s, %s:\n%s\n", b.Name(), title, text)
	}
}

// markdownTable is the rows as a Markdown table.
func markdownTable(rows []operatorRow) string {
	var b strings.Builder
	b.WriteString("| workload | backend | operation | relayfw median | peer | peer median | ratio | target | verdict |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, r := range rows {
		relayfw, target := "—", "—"
		if r.relayfw != 0 {
			relayfw = formatDuration(r.relayfw)
		}
		if r.target != 0 {
			target = fmt.Sprintf("≤ %.1f", r.target)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.workload, r.backend, r.operation, relayfw, r.peer, formatDuration(r.peerMedian), r.ratioText(), target, r.verdict())
	}
	return b.String()
}

// formatDuration is d in milliseconds, or seconds from 10 s.
func formatDuration(d time.Duration) string {
	if d >= 10*time.Second {
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}
