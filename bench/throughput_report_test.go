package bench

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/relayfw/relayfw/internal/digits"
)

// throughputRow compares one measure with relayfw's firewall installed,
// with conntrack alone and with none, medians of rounds; the larger the
// better.
type throughputRow struct {
	backend, measure          string
	unit                      string  // of firewall, conntrack and none, in the table
	scale                     float64 // divides the samples into unit
	firewall, conntrack, none float64
	fwRatio, ctRatio          roundRatio // firewall/none and conntrack/none
	metric                    string     // the ratio's b.ReportMetric unit
}

// roundRatio is a ratio of two states measured in the same rounds: the
// median of the rounds' ratios, and their lowest and highest. A round's
// states run within seconds of each other, so the machine's load, which
// drifts over minutes on a shared host, cancels out of a round's ratio
// better than out of a ratio of medians.
type roundRatio struct{ median, low, high float64 }

func ratioOfRounds(a, b []float64) roundRatio {
	var rs []float64
	for i := range min(len(a), len(b)) {
		rs = append(rs, a[i]/b[i])
	}
	if len(rs) == 0 {
		return roundRatio{}
	}
	return roundRatio{medianF(rs), slices.Min(rs), slices.Max(rs)}
}

func (r roundRatio) String() string {
	return fmt.Sprintf("%.2f (%.2f–%.2f)", r.median, r.low, r.high)
}

// throughputRows are the throughput measures of one backend.
func throughputRows(backend string, flows int, fw, ct, none throughputSamples) []throughputRow {
	row := func(measure, unit string, scale float64, fw, ct, none []float64, metric string) throughputRow {
		return throughputRow{backend, measure, unit, scale, medianF(fw), medianF(ct), medianF(none),
			ratioOfRounds(fw, none), ratioOfRounds(ct, none), metric}
	}
	n := digits.Grouped(flows)
	return []throughputRow{
		row("bulk: one TCP stream to port 443", "Gbit/s", 1e9/8, fw.bulk, ct.bulk, none.bulk, "bulk-fw/none"),
		row("flows: connection setup, "+n+" flows, 64 at a time", "conn/s", 1, fw.setup, ct.setup, none.setup, "setup-fw/none"),
		row("flows: 64-byte request and echo over "+n+" established flows, 64 in flight", "exchanges/s", 1, fw.exchanges, ct.exchanges, none.exchanges, "exchange-fw/none"),
	}
}

// cpuRows are the processor time of one backend's traffic per unit of
// work; the smaller the better.
func cpuRows(backend string, flows int, fw, ct, none throughputSamples) []throughputRow {
	row := func(measure, unit string, scale float64, fw, ct, none []float64, metric string) throughputRow {
		return throughputRow{backend, measure, unit, scale, medianF(fw), medianF(ct), medianF(none),
			ratioOfRounds(fw, none), ratioOfRounds(ct, none), metric}
	}
	n := digits.Grouped(flows)
	return []throughputRow{
		row("bulk: per GB delivered", "ms", 1e-3, fw.bulkCPU, ct.bulkCPU, none.bulkCPU, "bulk-cpu-fw/none"),
		row("flows: per connection set up", "µs", 1e-6, fw.setupCPU, ct.setupCPU, none.setupCPU, "setup-cpu-fw/none"),
		row("flows: per exchange over "+n+" flows", "µs", 1e-6, fw.exchangeCPU, ct.exchangeCPU, none.exchangeCPU, "exchange-cpu-fw/none"),
	}
}

// conntrackRow is what the flows cost the kernel's conntrack on one
// backend, medians of rounds.
type conntrackRow struct {
	backend              string
	flows                int
	entries, entriesNone float64 // conntrack entries the flows added, with the firewall and without
	conntrackBytes       float64 // per flow: nf_conntrack slab objects added × their size
	withExtensions       float64 // per flow: nf_conntrack and kmalloc objects added, firewall minus none in the same round
	objsize              int     // of an nf_conntrack object
}

func conntrackRowOf(backend string, flows int, fw, none throughputSamples) conntrackRow {
	// The kmalloc caches are busy with the whole machine: the difference
	// is taken within each round, the firewall's flows against none's.
	var extensions []float64
	for i := range min(len(fw.withExtensions), len(none.withExtensions)) {
		extensions = append(extensions, fw.withExtensions[i]-none.withExtensions[i])
	}
	return conntrackRow{
		backend:        backend,
		flows:          flows,
		entries:        medianF(fw.entries),
		entriesNone:    medianF(none.entries),
		objsize:        fw.objsize,
		conntrackBytes: medianF(fw.conntrackSlab) / float64(flows),
		withExtensions: medianF(extensions) / float64(flows),
	}
}

// logThroughput logs the tables (logWhole).
func logThroughput(b *testing.B, title string, rates, cpu []throughputRow, memory []conntrackRow) {
	logWhole(b, title, "Rates, the higher the better:\n\n"+throughputTable(rates)+
		"\nProcessor time (loadgen, the receiving side, ksoftirqd) per unit of work, the lower the better:\n\n"+throughputTable(cpu)+
		"\nConntrack:\n\n"+conntrackTable(memory))
}

// throughputTable is the rows as a Markdown table.
func throughputTable(rows []throughputRow) string {
	var b strings.Builder
	b.WriteString("| backend | measure | relayfw's firewall | conntrack only | none | firewall/none (rounds' range) | conntrack only/none (rounds' range) |\n| --- | --- | --- | --- | --- | --- | --- |\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s %s | %s %s | %s %s | %s | %s |\n", r.backend, r.measure,
			formatRate(r.firewall/r.scale), r.unit, formatRate(r.conntrack/r.scale), r.unit, formatRate(r.none/r.scale), r.unit, r.fwRatio, r.ctRatio)
	}
	return b.String()
}

// conntrackTable is the conntrack rows as a Markdown table.
func conntrackTable(rows []conntrackRow) string {
	var b strings.Builder
	b.WriteString("| backend | flows | conntrack entries added (none) | nf_conntrack objects added × objsize, per flow | nf_conntrack and kmalloc objects added per flow, firewall − none |\n| --- | --- | --- | --- | --- |\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s (%s) | %.0f B (objsize %d B) | %.0f B |\n", r.backend, digits.Grouped(r.flows),
			digits.Grouped(int(r.entries)), digits.Grouped(int(r.entriesNone)), r.conntrackBytes, r.objsize, r.withExtensions)
	}
	return b.String()
}

// formatRate is x with three significant digits at most, in thousands
// from 10,000.
func formatRate(x float64) string {
	switch {
	case x >= 10000:
		return digits.Grouped(int(x + 0.5))
	case x >= 100:
		return fmt.Sprintf("%.0f", x)
	case x >= 10:
		return fmt.Sprintf("%.1f", x)
	default:
		return fmt.Sprintf("%.2f", x)
	}
}

// slabinfo is /proc/slabinfo: by cache, the objects in use and their
// size.
type slabinfo map[string]slabCache

type slabCache struct{ active, objsize int }

// bytes is the bytes of a cache's objects in use.
func (s slabinfo) bytes(cache string) float64 {
	c := s[cache]
	return float64(c.active) * float64(c.objsize)
}

// conntrackAndKmalloc is the bytes of the objects in use of nf_conntrack
// and of the kmalloc caches, where conntrack's extensions of an entry
// (its counters, timestamps, event cache, ...) are allocated. The other
// caches (sockets, files, dentries) hold the same for the flows with a
// firewall as without, but are busier with the rest of the machine.
func (s slabinfo) conntrackAndKmalloc() float64 {
	var t float64
	for name, c := range s {
		if name == "nf_conntrack" || strings.HasPrefix(name, "kmalloc-") {
			t += float64(c.active) * float64(c.objsize)
		}
	}
	return t
}

func readSlabinfo(b *testing.B) slabinfo {
	data, err := os.ReadFile("/proc/slabinfo")
	if err != nil {
		b.Fatal(err)
	}
	s, err := parseSlabinfo(string(data))
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// parseSlabinfo reads slabinfo version 2.1: after the two header lines,
// "name active_objs num_objs objsize ...".
func parseSlabinfo(text string) (slabinfo, error) {
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "slabinfo - version: 2.") {
		return nil, fmt.Errorf("/proc/slabinfo: not version 2: %.40q", text)
	}
	s := slabinfo{}
	for _, line := range lines[2:] {
		f := strings.Fields(line)
		if len(f) < 4 {
			return nil, fmt.Errorf("/proc/slabinfo: %q: too few fields", line)
		}
		active, err1 := strconv.Atoi(f[1])
		objsize, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("/proc/slabinfo: %q: active objects and size are not numbers", line)
		}
		c := s[f[0]]
		// Caches can share a name (one per memory cgroup): add them up.
		s[f[0]] = slabCache{c.active + active, objsize}
	}
	return s, nil
}
