package exitpolicy

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// removeRedundanciesLiteral is tor's exit_policy_remove_redundancies
// ported loop for loop (steps two and three, the quadratic ones): the
// reference the indexed version must equal.
func removeRedundanciesLiteral(dest []Entry) []Entry {
	dest = dropAfterCatchAll(dest) // step one is linear in tor too
	for i := 0; i < len(dest)-1; i++ {
		for j := i + 1; j < len(dest); j++ {
			if covers(dest[i], dest[j]) {
				dest = append(dest[:j], dest[j+1:]...)
				j--
			}
		}
	}
	for i := 0; i < len(dest)-1; i++ {
		for j := i + 1; j < len(dest); j++ {
			if dest[i].Action != dest[j].Action {
				if intersects(dest[i], dest[j]) {
					break
				}
			} else if covers(dest[j], dest[i]) {
				dest = append(dest[:i], dest[i+1:]...)
				i--
				break
			}
		}
	}
	return dest
}

func TestRemoveRedundanciesMatchesTor(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for round := 0; round < 3000; round++ {
		// Few distinct prefixes and ports, so entries nest, repeat and
		// cover each other often.
		var parts []string
		for i := 0; i < 1+r.IntN(40); i++ {
			action := []string{"accept", "reject"}[r.IntN(2)]
			addr := []string{"*4", "*6", "10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3", "11.0.0.0/8",
				"[2001:db8::]/32", "[2001:db8::1]", "[2001:db8:1::]/48", "0.0.0.0/1", "128.0.0.0/1", "10.1.2.3/31"}[r.IntN(13)]
			port := []string{"*", "80", "443", "1-1024", "80-443", "22", "1-65535", "1000-2000"}[r.IntN(8)]
			parts = append(parts, fmt.Sprintf("%s %s:%s", action, addr, port))
		}
		text := ""
		for i, p := range parts {
			if i > 0 {
				text += ","
			}
			text += p
		}
		entries, _, err := Parse(text)
		if err != nil {
			t.Fatal(err)
		}
		want := removeRedundanciesLiteral(entries)
		got := removeRedundancies(append([]Entry(nil), entries...))
		str := func(es []Entry) []string {
			var out []string
			for _, e := range es {
				out = append(out, e.String())
			}
			return out
		}
		if diff := cmp.Diff(str(want), str(got)); diff != "" {
			t.Fatalf("%s\n(-tor +relayfw):\n%s", text, diff)
		}
	}
}
