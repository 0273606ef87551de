// Package monitoring holds relayfw's Prometheus alert rules
// (relayfw-alerts.yml) and their promtool unit tests
// (relayfw-alerts.test.yml); docs/alerts.md explains them. Its tests run
// promtool on both files and check that the rules and the test inputs
// use only series and labels relayfw really writes, as Prometheus stores
// them after scraping node_exporter's textfile collector.
package monitoring

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/relayfw/relayfw/host"
	"github.com/relayfw/relayfw/ruleset"
)

const (
	rulesFile = "relayfw-alerts.yml"
	testsFile = "relayfw-alerts.test.yml"
	// everySeries is relayfw metrics' output for a status with every
	// series present, a golden file of cmd/relayfw's tests
	// (TestMetricsEverySeries): it changes only with writeMetrics.
	everySeries = "../cmd/relayfw/testdata/metrics-every-series.prom"
)

// promtool finds promtool. Missing, it skips the test loudly (go test
// prints no skip reason without -v, so it also writes to stderr); in CI
// (CI set, as .ci/run does), where scripts/setup installs Debian's
// prometheus package, it fails instead.
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err == nil {
		return path
	}
	const why = "promtool not found: the alert rules are NOT checked (apt-get install --no-install-recommends prometheus, or run scripts/setup)"
	if os.Getenv("CI") != "" {
		t.Fatal(why)
	}
	fmt.Fprintf(os.Stderr, "\n*** monitoring: %s ***\n\n", why)
	t.Skip("SKIPPED: " + why)
	return ""
}

// TestPromtoolCheckRules: the rules parse, their PromQL is valid and
// promtool's linter has nothing to say.
func TestPromtoolCheckRules(t *testing.T) {
	out, err := exec.Command(promtool(t), "check", "rules", rulesFile).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules %s: %v\n%s", rulesFile, err, out)
	}
}

// TestPromtoolTestRules runs the unit tests of every alert.
func TestPromtoolTestRules(t *testing.T) {
	out, err := exec.Command(promtool(t), "test", "rules", testsFile).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules %s: %v\n%s", testsFile, err, out)
	}
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type testFile struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name        string `yaml:"name"`
		InputSeries []struct {
			Series string `yaml:"series"`
		} `yaml:"input_series"`
		AlertRuleTest []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func alertRules(t *testing.T) []rule {
	t.Helper()
	var f ruleFile
	readYAML(t, rulesFile, &f)
	var rules []rule
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	if len(rules) == 0 {
		t.Fatalf("%s: no rules", rulesFile)
	}
	return rules
}

// targetLabels are the labels Prometheus gives every series it scrapes
// from node_exporter.
var targetLabels = []string{"instance", "job"}

// nodeSeries are the node_exporter series the rules may use beside
// relayfw's, with their labels as scraped (sorted).
var nodeSeries = map[string][]string{
	"up":                          {"instance", "job"},
	"node_textfile_mtime_seconds": {"file", "instance", "job"},
}

// optionalLabels are labels relayfw writes on some samples of a series
// only: why is on the last change when it is a rollback.
var optionalLabels = map[string][]string{
	"relayfw_last_change_timestamp_seconds": {"why"},
}

// labelValues are the values of relayfw's labels that have a closed set
// of them; a rule matching another value would never match.
var labelValues = map[string][]string{
	"change": {host.ChangeApplied, host.ChangePending, host.ChangeConfirmed,
		host.ChangeRolledBack, host.ChangeFallback, host.ChangeRemoved},
	"why":   {host.RollbackDeadline, host.RollbackCommand, host.RollbackFailure},
	"kind":  host.ConntrackDropKinds,
	"cause": ruleset.InboundCauses,
}

// scrapedSeries reads the series relayfw writes and returns their label
// names (sorted) as Prometheus stores them: node_exporter's textfile
// collector passes relayfw's labels through unchanged, and Prometheus,
// with the default honor_labels: false, renames a scraped label that
// collides with a target label to exported_<name> (relayfw's tor
// instance label `instance` becomes exported_instance) and adds the
// target labels.
func scrapedSeries(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(everySeries)
	if err != nil {
		t.Fatalf("%v (go test ./cmd/relayfw -run TestMetricsEverySeries -update writes it)", err)
	}
	sample := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$`)
	pair := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
	labels := map[string][]string{}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSuffix(line, "\n")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := sample.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("%s: not a sample: %q", everySeries, line)
		}
		name := m[1]
		names := slices.Clone(targetLabels)
		for _, p := range pair.FindAllStringSubmatch(m[2], -1) {
			l := p[1]
			if slices.Contains(targetLabels, l) {
				l = "exported_" + l
			}
			names = append(names, l)
			if want, ok := labelValues[l]; ok && !slices.Contains(want, p[2]) {
				t.Errorf("%s: %s{%s=%q}: the test knows only %v", everySeries, name, l, p[2], want)
			}
		}
		slices.Sort(names)
		if have, ok := labels[name]; ok && !slices.Equal(have, names) {
			t.Fatalf("%s: %s has labels %v and %v", everySeries, name, have, names)
		}
		labels[name] = names
	}
	if len(labels) == 0 {
		t.Fatalf("%s: no samples", everySeries)
	}
	for name, ls := range nodeSeries {
		labels[name] = ls
	}
	return labels
}

var (
	selectorRE = regexp.MustCompile(`\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})`)
	seriesRE   = regexp.MustCompile(`\b((?:relayfw|node)_[a-zA-Z0-9_]*|up)\b`)
	matcherRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"`)
	groupingRE = regexp.MustCompile(`\b(?:by|without|on|ignoring)\s*\(([^)]*)\)`)
	templateRE = regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)
	simpleAlts = regexp.MustCompile(`^[a-z_ ]+(\|[a-z_ ]+)*$`)
)

// checkSeries reports what in one PromQL expression or series selector
// is not a series relayfw (or node_exporter) writes with these labels
// and values, and returns the labels of the series it names.
func checkSeries(t *testing.T, where, expr string, labels map[string][]string) []string {
	t.Helper()
	var have []string
	for _, m := range seriesRE.FindAllStringSubmatch(expr, -1) {
		ls, ok := labels[m[1]]
		if !ok {
			t.Errorf("%s: %s is not a series relayfw metrics writes (%s) nor one of node_exporter's the rules know", where, m[1], everySeries)
			continue
		}
		have = append(have, ls...)
	}
	for _, sel := range selectorRE.FindAllStringSubmatch(expr, -1) {
		ls, ok := labels[sel[1]]
		if !ok {
			continue // reported above, or a function such as rate
		}
		for _, m := range matcherRE.FindAllStringSubmatch(sel[2], -1) {
			label, op, value := m[1], m[2], m[3]
			if !slices.Contains(ls, label) {
				t.Errorf("%s: %s has no label %s as Prometheus stores it (it has %v)", where, sel[1], label, ls)
				continue
			}
			known, ok := labelValues[label]
			if !ok {
				continue // an open set: host names, tor instances, versions
			}
			var want []string
			switch {
			case op == "=" || op == "!=":
				want = []string{value}
			case simpleAlts.MatchString(value):
				want = strings.Split(value, "|")
			default:
				t.Errorf("%s: %s{%s%s%q}: match relayfw's labels by value or by a|b", where, sel[1], label, op, value)
			}
			for _, v := range want {
				if !slices.Contains(known, v) {
					t.Errorf("%s: %s{%s=%q}: relayfw writes no such %s (it writes %v)", where, sel[1], label, v, label, known)
				}
			}
		}
	}
	return have
}

// TestRulesUseWhatRelayfwWrites: every series, label and label value
// the rules name is one relayfw metrics writes, as Prometheus stores it
// when it scrapes node_exporter; so is every label a rule groups by or
// an annotation shows. A series renamed in cmd/relayfw changes the
// golden file there and fails this test until the rules follow.
func TestRulesUseWhatRelayfwWrites(t *testing.T) {
	labels := scrapedSeries(t)
	for _, r := range alertRules(t) {
		where := rulesFile + ": " + r.Alert
		have := checkSeries(t, where, r.Expr, labels)
		for _, g := range groupingRE.FindAllStringSubmatch(r.Expr, -1) {
			for l := range strings.SplitSeq(g[1], ",") {
				if l = strings.TrimSpace(l); l != "" && !slices.Contains(have, l) {
					t.Errorf("%s: groups by %s, which none of its series has (they have %v)", where, l, slices.Compact(slices.Sorted(slices.Values(have))))
				}
			}
		}
		for key, text := range r.Annotations {
			for _, m := range templateRE.FindAllStringSubmatch(text, -1) {
				if !slices.Contains(have, m[1]) {
					t.Errorf("%s: annotation %s shows $labels.%s, which its series do not have (they have %v)", where, key, m[1], slices.Compact(slices.Sorted(slices.Values(have))))
				}
			}
		}
	}
}

// TestTestInputsAreScrapes: the unit tests feed the series as Prometheus
// stores them, so an alert tested green is green on real scrapes.
func TestTestInputsAreScrapes(t *testing.T) {
	labels := scrapedSeries(t)
	var f testFile
	readYAML(t, testsFile, &f)
	for _, tc := range f.Tests {
		for _, in := range tc.InputSeries {
			where := fmt.Sprintf("%s: test %q: series %s", testsFile, tc.Name, in.Series)
			name, _, _ := strings.Cut(in.Series, "{")
			ls, ok := labels[name]
			if !ok {
				t.Errorf("%s: relayfw metrics writes no %s", where, name)
				continue
			}
			checkSeries(t, where, in.Series, labels)
			var got []string
			for _, m := range matcherRE.FindAllStringSubmatch(in.Series, -1) {
				got = append(got, m[1])
			}
			slices.Sort(got)
			required := slices.DeleteFunc(slices.Clone(ls), func(l string) bool { return slices.Contains(optionalLabels[name], l) })
			if !isSubset(got, ls) || !isSubset(required, got) {
				t.Errorf("%s: labels %v, but Prometheus stores %s with %v (%v optional)", where, got, name, ls, optionalLabels[name])
			}
		}
	}
}

// TestEveryAlertTested: every alert has a severity and a summary and
// description to act on, and its unit tests see it both fire and not.
func TestEveryAlertTested(t *testing.T) {
	var f testFile
	readYAML(t, testsFile, &f)
	if !slices.Equal(f.RuleFiles, []string{rulesFile}) {
		t.Errorf("%s tests %v, want [%s]", testsFile, f.RuleFiles, rulesFile)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range f.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, r := range alertRules(t) {
		if r.Alert == "" {
			t.Errorf("%s: a recording rule (%s); this file holds alerts only", rulesFile, r.Expr)
			continue
		}
		if !slices.Contains([]string{"critical", "warning", "info"}, r.Labels["severity"]) {
			t.Errorf("%s: %s: severity %q, want critical, warning or info", rulesFile, r.Alert, r.Labels["severity"])
		}
		if r.Annotations["summary"] == "" || !strings.Contains(r.Annotations["description"], "relayfw") {
			t.Errorf("%s: %s: wants a summary and a description that names the relayfw command to run", rulesFile, r.Alert)
		}
		if !fires[r.Alert] {
			t.Errorf("%s: no test where %s fires", testsFile, r.Alert)
		}
		if !quiet[r.Alert] {
			t.Errorf("%s: no test where %s does not fire", testsFile, r.Alert)
		}
	}
}

func isSubset(small, big []string) bool {
	for _, s := range small {
		if !slices.Contains(big, s) {
			return false
		}
	}
	return true
}
