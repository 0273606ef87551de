package bench

import (
	"testing"
	"time"
)

func TestOperatorRowVerdict(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name           string
		relayfw, peer  time.Duration
		target         float64
		verdict, ratio string
	}{
		{"under the target", 80 * ms, 100 * ms, 0.8, "met", "0.80"},
		{"over the target", 81 * ms, 100 * ms, 0.8, "not met", "0.81"},
		{"no target", 300 * ms, 100 * ms, 0, "—", "3.00"},
		{"peer alone", 0, 100 * ms, 0, "—", "—"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := operatorRow{relayfw: tc.relayfw, peerMedian: tc.peer, target: tc.target}
			if got := r.verdict(); got != tc.verdict {
				t.Errorf("verdict %q, want %q", got, tc.verdict)
			}
			if got := r.ratioText(); got != tc.ratio {
				t.Errorf("ratio %q, want %q", got, tc.ratio)
			}
		})
	}
}
