package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/relayfw/relayfw/relays"
)

// consensusShape is what a consensus holds, counted from its text and
// from what relayfw reads of it.
type consensusShape struct {
	Lines                         map[string]int // by keyword, of the ones every entry has
	Relays, Links, Authorities    int
	LeftOut                       int
	ValidAfter, ValidUntil        time.Time
	SizeWithin2p5To4MB, IPv6Third bool
}

func TestMicrodescConsensus(t *testing.T) {
	validAfter := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		seed   uint64
		relays int
		size   bool // whether it is the real size (2.5–4 MB)
	}{
		{"realistic", consensusSeed, realisticRelays, true},
		{"small", 1, 300, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := microdescConsensus(tc.seed, tc.relays, validAfter)
			if again := microdescConsensus(tc.seed, tc.relays, validAfter); again != text {
				t.Fatal("two consensuses of one seed differ")
			}
			if other := microdescConsensus(tc.seed+1, tc.relays, validAfter); other == text {
				t.Fatal("consensuses of two seeds are the same")
			}
			nw, err := relays.ParseNetwork(strings.NewReader(text), relays.Options{})
			if err != nil {
				t.Fatal(err)
			}
			lines := map[string]int{}
			for _, l := range strings.Split(text, "\n") {
				if k, _, _ := strings.Cut(l, " "); strings.Contains(" r a m s v pr w dir-source directory-signature ", " "+k+" ") {
					lines[k]++
				}
			}
			ipv6 := lines["a"]
			got := consensusShape{lines, len(nw.Relays), len(nw.Links), len(nw.Authorities), nw.LeftOutTotal(), nw.ValidAfter, nw.ValidUntil,
				!tc.size || len(text) >= 2_500_000 && len(text) <= 4_000_000, ipv6 > tc.relays/4 && ipv6 < tc.relays*2/5}
			n := tc.relays
			want := consensusShape{
				Lines: map[string]int{"r": n, "a": ipv6, "m": n, "s": n, "v": n, "pr": n, "w": n, "dir-source": 9, "directory-signature": 9},
				// Each relay's IPv4 and IPv6 address, each with its ORPort;
				// the nine authorities' DirPorts besides.
				Relays: n + ipv6, Links: n + ipv6 + 9, Authorities: 9,
				ValidAfter: validAfter, ValidUntil: validAfter.Add(3 * time.Hour),
				SizeWithin2p5To4MB: true, IPv6Third: true,
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("consensus of %d relays, %d bytes (-want +got):\n%s", n, len(text), diff)
			}
		})
	}
}
