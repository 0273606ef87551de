package main

import (
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/host"
)

// TestMetricsEverySeries renders a status in which every series relayfw
// can write is present (two tor instances, a rolled-back last change,
// the inbound protection, conntrack with its statistics) into
// testdata/metrics-every-series.prom. The alert rules in monitoring/ are
// checked against this file, so a series renamed or dropped here fails
// their test; and every series in it must be named in relayfw metrics'
// help, and every relayfw_ name in the help must be in it, so a new
// series cannot be left out of the file or the manual.
func TestMetricsEverySeries(t *testing.T) {
	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	age, rejected := int64(1800), 0
	u := func(v uint64) *uint64 { return &v }
	st := &host.Status{
		Consensus: []host.ConsensusState{{Instance: "198.51.100.10_443", State: host.ConsensusRead, AgeSeconds: &age},
			{Instance: "default", State: host.ConsensusRead, AgeSeconds: &age}},
		Published: []host.PublishedState{{Instance: "198.51.100.10_443", InConsensus: true, Summary: "accept 80,443", PortsRejected: &rejected},
			{Instance: "default", InConsensus: true, Summary: "accept 80,443", PortsRejected: &rejected}},
		RunningTor: []host.RunningTor{{Instance: "198.51.100.10_443", Asked: true, Matches: true},
			{Instance: "default", Asked: true}},
		Backend: "nftables", Installed: true, InSync: true, LastApply: &at,
		Config:     host.ConfigStatus{Valid: true},
		LastChange: &host.Change{Kind: host.ChangeRolledBack, Why: host.RollbackDeadline, At: at, LastRollback: &at},
		Rules:      map[string]firewall.Counter{"exit4": {Packets: 10, Bytes: 600}},
		Inbound: &host.InboundStatus{NewConnections: 40, Trusted: 5,
			Drops:   map[string]uint64{"blocked": 7, "minute": 1, "hour": 0, "conns": 2},
			Blocked: []firewall.Block{{Source: netip.MustParsePrefix("203.0.113.7/32"), ExpiresSeconds: 100}}},
		Conntrack: &host.ConntrackStatus{Loaded: true, Entries: u(1000), Max: u(262144),
			Drops: map[string]uint64{"drop": 0, "early_drop": 0, "insert_failed": 0}},
	}
	var b strings.Builder
	if err := writeMetrics(&b, st); err != nil {
		t.Fatal(err)
	}
	golden(t, "testdata/metrics-every-series.prom", b.String())

	var written []string
	for line := range strings.Lines(b.String()) {
		if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
			written = append(written, strings.Fields(name)[0])
		}
	}
	help := newMetricsCommand(&globals{}).Long
	named := slices.Compact(slices.Sorted(slices.Values(regexp.MustCompile(`relayfw_[a-z_]+[a-z]`).FindAllString(help, -1))))
	slices.Sort(written)
	if diff := cmp.Diff(named, written); diff != "" {
		t.Errorf("series named in relayfw metrics' help (-) and written for a status with every series (+) differ:\n%s", diff)
	}
}
