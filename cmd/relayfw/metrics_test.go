package main

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/host"
)

// TestMetricsGolden: the Prometheus text a node_exporter textfile
// collector reads is a contract; testdata/metrics.prom is it for a status
// with counters, a last apply, a last change after a rollback and the
// inbound protection, and testdata/metrics-invalid.prom for the same
// kernel while the config is invalid.
func TestMetricsGolden(t *testing.T) {
	applied := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	rolledBack := applied.Add(-time.Hour)
	age := int64(5400)
	rejected := 1
	status := func() *host.Status {
		return &host.Status{
			Consensus: []host.ConsensusState{{Instance: "default", State: host.ConsensusRead, AgeSeconds: &age},
				{Instance: "b", State: host.ConsensusRefused}},
			Published: []host.PublishedState{{Instance: "default", InConsensus: true, Summary: "accept 80,443,8080", PortsRejected: &rejected},
				{Instance: "b", Why: "not in the cached consensus (new relay, or not yet published)"}},
			Backend: "nftables", Installed: true, InSync: true, RelayLinksBehind: 3, LastApply: &applied,
			Config:     host.ConfigStatus{Valid: true},
			LastChange: &host.Change{Kind: host.ChangeApplied, At: applied, LastRollback: &rolledBack},
			Rules:      map[string]firewall.Counter{"exit4": {Packets: 10, Bytes: 600}, "reject": {Packets: 2, Bytes: 120}},
			Inbound: &host.InboundStatus{NewConnections: 40, Trusted: 5,
				Drops:   map[string]uint64{"blocked": 7, "minute": 1, "hour": 0, "conns": 2},
				Blocked: []firewall.Block{{Source: netip.MustParsePrefix("203.0.113.7/32"), ExpiresSeconds: 100}}},
		}
	}
	invalid := status()
	invalid.InSync, invalid.RelayLinksBehind, invalid.Consensus, invalid.Published = false, 0, nil, nil // no inputs: no consensus read
	invalid.Config = host.ConfigStatus{Error: `torrc /etc/tor/torrc:3: unknown option "ExitPolcy"`}
	invalid.LastChange = &host.Change{Kind: host.ChangeRolledBack, Why: host.RollbackDeadline, At: rolledBack, LastRollback: &rolledBack}
	for file, st := range map[string]*host.Status{"testdata/metrics.prom": status(), "testdata/metrics-invalid.prom": invalid} {
		var b strings.Builder
		if err := writeMetrics(&b, st); err != nil {
			t.Fatal(err)
		}
		golden(t, file, b.String())
	}
}

// TestMetricsWithoutRecords: a host that never recorded a change (first
// run, or an older relayfw) has no last-change or last-rollback series.
func TestMetricsWithoutRecords(t *testing.T) {
	var b strings.Builder
	if err := writeMetrics(&b, &host.Status{Backend: "nftables", Config: host.ConfigStatus{Valid: true}}); err != nil {
		t.Fatal(err)
	}
	for _, absent := range []string{"relayfw_last_change_timestamp_seconds", "relayfw_last_rollback_timestamp_seconds", "relayfw_last_apply_timestamp_seconds",
		"relayfw_tor_published_ports_rejected"} {
		if strings.Contains(b.String(), absent) {
			t.Errorf("%s without a record:\n%s", absent, b.String())
		}
	}
	if !strings.Contains(b.String(), "\nrelayfw_config_valid 1\n") {
		t.Errorf("no relayfw_config_valid 1:\n%s", b.String())
	}
}
