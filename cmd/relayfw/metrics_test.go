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
// with counters, a last apply and the inbound protection.
func TestMetricsGolden(t *testing.T) {
	applied := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	age := int64(5400)
	st := &host.Status{
		Consensus: []host.ConsensusState{{Instance: "default", State: host.ConsensusRead, AgeSeconds: &age},
			{Instance: "b", State: host.ConsensusRefused}},
		Backend: "nftables", Installed: true, InSync: true, RelayLinksBehind: 3, LastApply: &applied,
		Rules: map[string]firewall.Counter{"exit4": {Packets: 10, Bytes: 600}, "reject": {Packets: 2, Bytes: 120}},
		Inbound: &host.InboundStatus{NewConnections: 40, Trusted: 5,
			Drops:   map[string]uint64{"blocked": 7, "minute": 1, "hour": 0, "conns": 2},
			Blocked: []firewall.Block{{Source: netip.MustParsePrefix("203.0.113.7/32"), ExpiresSeconds: 100}}},
	}
	var b strings.Builder
	if err := writeMetrics(&b, st); err != nil {
		t.Fatal(err)
	}
	golden(t, "testdata/metrics.prom", b.String())
}
