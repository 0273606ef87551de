package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/relayfw/relayfw/host"
)

func u64(v uint64) *uint64 { return &v }
func boolp(v bool) *bool   { return &v }

// sizedConntrack is a namespace's conntrack at the kernel's defaults, with
// its warning.
func sizedConntrack() *host.ConntrackStatus {
	return &host.ConntrackStatus{Loaded: true, Entries: u64(1234), Max: u64(262144), Scope: host.ScopeNamespace, Source: "netlink",
		Drops:   map[string]uint64{"drop": 12, "early_drop": 3456, "insert_failed": 0},
		Buckets: u64(262144), EstablishedTimeout: u64(432000), TCPLoose: boolp(true),
		Warnings: []string{"conntrack keeps an idle established TCP connection for 432000 s (5 days, the kernel's default): …"}}
}

// TestConntrackLines: status's conntrack line says the figures and whose
// they are, then one line per warning; without conntrack, that it is not
// loaded and nothing else.
func TestConntrackLines(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    *host.ConntrackStatus
		want []string
	}{
		{"none gathered", nil, nil},
		{"not loaded", &host.ConntrackStatus{Note: "the kernel tracks no connections here (nf_conntrack is not loaded): no figures"},
			[]string{"conntrack:  the kernel tracks no connections here (nf_conntrack is not loaded): no figures"}},
		{"a namespace at the kernel's defaults", sizedConntrack(), []string{
			"conntrack:  1,234 of 262,144 entries (0%), this network namespace's count against the host-wide limit; established timeout 5 days (the kernel's default), tcp_loose 1, 262,144 hash buckets; kernel counters: drop 12, early_drop 3,456, insert_failed 0",
			"  warning: conntrack keeps an idle established TCP connection for 432000 s (5 days, the kernel's default): …"}},
		{"the host, from /proc", &host.ConntrackStatus{Loaded: true, Entries: u64(900), Max: u64(1000), Scope: host.ScopeHost, Source: "proc",
			EstablishedTimeout: u64(7200), TCPLoose: boolp(false), Note: "conntrack statistics: operation not permitted: no drop counters",
			Warnings: []string{"conntrack table 90% full …", "net.netfilter.nf_conntrack_tcp_loose is 0: …"}}, []string{
			"conntrack:  900 of 1,000 entries (90%), the host's; established timeout 2 hours, tcp_loose 0; conntrack statistics: operation not permitted: no drop counters",
			"  warning: conntrack table 90% full …",
			"  warning: net.netfilter.nf_conntrack_tcp_loose is 0: …"}},
		{"no limit, scope unknown", &host.ConntrackStatus{Loaded: true, Entries: u64(5), Max: u64(0), EstablishedTimeout: u64(90)},
			[]string{"conntrack:  5 entries (no limit); established timeout 90 s"}},
		{"a limit of the namespace's own, no count", &host.ConntrackStatus{Loaded: true, Max: u64(65536), Scope: host.ScopeNamespaceLimit},
			[]string{"conntrack:  ? of 65,536 entries, this network namespace's count and limit"}},
	} {
		if diff := cmp.Diff(tc.want, conntrackLines(tc.c)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
}

func TestSeconds(t *testing.T) {
	for s, want := range map[uint64]string{432000: "5 days", 86400: "1 day", 7200: "2 hours", 3600: "1 hour", 120: "2 minutes", 90: "90 s", 0: "0 s"} {
		if got := seconds(s); got != want {
			t.Errorf("seconds(%d) = %q, want %q", s, got, want)
		}
	}
}

// TestConntrackMetrics: the conntrack series, every drop kind; none of
// them without conntrack, and no drops without the kernel's statistics.
func TestConntrackMetrics(t *testing.T) {
	metrics := func(c *host.ConntrackStatus) string {
		var b strings.Builder
		if err := writeMetrics(&b, &host.Status{Backend: "nftables", Config: host.ConfigStatus{Valid: true}, Conntrack: c}); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	got := metrics(sizedConntrack())
	for _, want := range []string{
		"# TYPE relayfw_conntrack_entries gauge\nrelayfw_conntrack_entries 1234\n",
		"# TYPE relayfw_conntrack_max gauge\nrelayfw_conntrack_max 262144\n",
		"# TYPE relayfw_conntrack_drops_total counter\n" +
			"relayfw_conntrack_drops_total{kind=\"drop\"} 12\n" +
			"relayfw_conntrack_drops_total{kind=\"early_drop\"} 3456\n" +
			"relayfw_conntrack_drops_total{kind=\"insert_failed\"} 0\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("metrics lack %q:\n%s", want, got)
		}
	}
	fromProc := sizedConntrack()
	fromProc.Source, fromProc.Drops = "proc", nil
	got = metrics(fromProc)
	if !strings.Contains(got, "\nrelayfw_conntrack_entries 1234\n") || strings.Contains(got, "relayfw_conntrack_drops_total") {
		t.Errorf("without the kernel's statistics, want the entries and no drops:\n%s", got)
	}
	for _, c := range []*host.ConntrackStatus{nil, {Note: "not loaded"}} {
		if got := metrics(c); strings.Contains(got, "relayfw_conntrack") {
			t.Errorf("conntrack series without conntrack:\n%s", got)
		}
	}
}

// TestConntrackStatusJSON: status --format json has the conntrack object
// with its figures by name.
func TestConntrackStatusJSON(t *testing.T) {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	if err := enc.Encode(&host.Status{Backend: "nftables", Conntrack: sizedConntrack()}); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Conntrack map[string]any `json:"conntrack"`
	}
	if err := json.Unmarshal([]byte(b.String()), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"loaded": true, "entries": 1234.0, "max": 262144.0, "scope": "namespace", "source": "netlink",
		"drops":   map[string]any{"drop": 12.0, "early_drop": 3456.0, "insert_failed": 0.0},
		"buckets": 262144.0, "tcp_timeout_established": 432000.0, "tcp_loose": true,
		"warnings": []any{"conntrack keeps an idle established TCP connection for 432000 s (5 days, the kernel's default): …"}}
	if diff := cmp.Diff(want, got.Conntrack); diff != "" {
		t.Errorf("conntrack (-want +got):\n%s", diff)
	}
}
