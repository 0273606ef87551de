package bench

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// consensusOf writes a microdesc consensus of n relays on the benchmarking
// range 198.18.0.0/15 (no packet is sent to them); shift moves a tenth of
// them elsewhere, as an hour of churn would.
func consensusOf(n, shift int) string {
	var b strings.Builder
	b.WriteString("network-status-version 3 microdesc\nvote-status consensus\n")
	base := netip.MustParseAddr("198.18.0.1").As4()
	for i := 0; i < n; i++ {
		j := i
		if i%10 == 0 {
			j += shift
		}
		a := netip.AddrFrom4([4]byte{base[0], base[1] + byte(j/65536%2), byte(j / 256 % 256), byte(j % 256)})
		fmt.Fprintf(&b, "r relay%d AAAAAAAAAAAAAAAAAAAAAAAAAAA 2026-11-25 11:00:00 %s %d 0\ns Fast Running Valid\n", i, a, 443+i%3*8558)
	}
	return b.String()
}

// BenchmarkRefresh times relayfw refresh of a 10,000-relay consensus
// against a full apply of the same change, per backend.
func BenchmarkRefresh(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("SKIPPED: needs root for a network namespace")
	}
	dir := b.TempDir()
	bin := buildRelayfw(b, dir)
	data := filepath.Join(dir, "tordata")
	if err := os.MkdirAll(data, 0o755); err != nil {
		b.Fatal(err)
	}
	cfg := filepath.Join(dir, "relayfw.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("data_directory = %q\n[allow]\nresolvers = [\"192.0.2.53\"]\n", data)), 0o600); err != nil {
		b.Fatal(err)
	}
	const relays = 10000
	consensus := [2]string{consensusOf(relays, 0), consensusOf(relays, 50000)}
	write := func(i int) {
		if err := os.WriteFile(filepath.Join(data, "cached-microdesc-consensus"), []byte(consensus[i]), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	ns := newBenchNS(b, "rfwbenchref")

	const rounds = 7
	for _, backend := range []string{"nftables", "iptables"} {
		b.Run("backend="+backend+fmt.Sprintf("/relays=%d", relays), func(b *testing.B) {
			flags := []string{"--backend", backend, "--torrc", "../examples/torrc", "--config", cfg}
			run := func(args ...string) time.Duration {
				start := time.Now()
				out, err := exec.Command(bin, append(flags, args...)...).CombinedOutput()
				d := time.Since(start)
				if err != nil {
					b.Fatalf("%v: %v\n%s", args, err, out)
				}
				return d
			}
			var refresh, apply []time.Duration
			for i := 0; i < b.N; i++ {
				inNS(b, ns, func() {
					write(0)
					run("apply")
					for r := 0; r < rounds; r++ {
						write((r + 1) % 2)
						refresh = append(refresh, run("refresh"))
						write(r % 2)
						apply = append(apply, run("apply"))
					}
					run("remove")
				})
			}
			mr, ma := median(refresh), median(apply)
			b.ReportMetric(float64(mr.Microseconds())/1000, "refresh-ms")
			b.ReportMetric(float64(ma.Microseconds())/1000, "apply-ms")
			b.ReportMetric(float64(mr)/float64(ma), "refresh/apply-ratio")
			b.Logf("%s, %d relays, 10%% churn: refresh %v, full apply %v (ratio %.2f, medians of %d)", backend, relays, mr, ma, float64(mr)/float64(ma), len(refresh))
		})
	}
}
