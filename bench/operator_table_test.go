package bench

import (
	"testing"
	"time"
)

func TestThousands(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want string
	}{
		{0, "0"}, {999, "999"}, {1000, "1,000"}, {9000, "9,000"}, {50000, "50,000"}, {1234567, "1,234,567"},
	} {
		if got := thousands(tc.n); got != tc.want {
			t.Errorf("thousands(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

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
