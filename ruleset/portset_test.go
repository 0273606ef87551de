package ruleset

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

// portSetStringByPort is portSet.String port by port, as it was before it
// skipped whole words.
func portSetStringByPort(s portSet) string {
	var parts []string
	for p := 1; p <= 65535; p++ {
		if !s.has(p) {
			continue
		}
		q := p
		for q+1 <= 65535 && s.has(q+1) {
			q++
		}
		if q == p {
			parts = append(parts, strconv.Itoa(p))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", p, q))
		}
		p = q
	}
	return strings.Join(parts, ",")
}

// TestPortSetString: word by word, the same text as port by port, for
// ranges at and across word edges and random sets (fixed seed).
func TestPortSetString(t *testing.T) {
	sets := [][]PortRange{
		nil,
		{{1, 1}}, {{63, 64}}, {{64, 127}}, {{63, 128}}, {{65535, 65535}}, {{65472, 65535}},
		{{1, 65535}}, {{0, 65535}}, {{21, 23}, {53, 53}, {80, 80}, {443, 443}, {992, 993}},
		{{1, 63}, {65, 65535}},
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 200 {
		var rs []PortRange
		for range rng.IntN(20) {
			first := uint16(rng.IntN(65536))
			last := first + uint16(rng.IntN(300))
			if last < first {
				last = 65535
			}
			rs = append(rs, PortRange{first, last})
		}
		sets = append(sets, rs)
	}
	for _, rs := range sets {
		var s portSet
		for _, r := range rs {
			s.add(r)
		}
		want := portSetStringByPort(s)
		if want == "1-65535" && !s.has(0) {
			want = "every port"
		}
		if got := s.String(); got != want {
			t.Fatalf("%v: %q, port by port %q", rs, got, want)
		}
	}
}
