package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BenchmarkApplyIptables times relayfw apply --backend iptables against
// ipset restore + iptables-restore + ip6tables-restore --noflush of
// relayfw's own printed sets and rules, in legacy and nf_tables mode, from
// an empty ruleset each time.
func BenchmarkApplyIptables(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("SKIPPED: needs root for a network namespace")
	}
	dir := b.TempDir()
	bin := buildRelayfw(b, dir)
	cfg := writeConfig(b, dir)
	ns := newBenchNS(b, "rfwbenchipt")

	const rounds = 7
	for _, mode := range []string{"legacy", "nft"} {
		pathDir := iptablesModeDir(b, dir, mode)
		env := append(os.Environ(), "PATH="+pathDir+":"+os.Getenv("PATH"))
		run := func(stdin string, name string, args ...string) time.Duration {
			return timedIn(b, env, stdin, name, args...)
		}
		reset := func() {
			for _, fam := range []string{"iptables", "ip6tables"} {
				run("", filepath.Join(pathDir, fam), "-F")
				run("", filepath.Join(pathDir, fam), "-X")
			}
			// With iptables-nft the sets may still be referenced for a
			// moment; the restore scripts do not need them gone.
			_ = exec.Command("ipset", "destroy").Run()
		}
		for _, n := range []int{10, 1000, 10000} {
			b.Run(fmt.Sprintf("mode=%s/entries=%d", mode, n), func(b *testing.B) {
				torrc := filepath.Join(dir, fmt.Sprintf("torrc-%d", n))
				if err := os.WriteFile(torrc, []byte(torrcWithEntries(n)), 0o600); err != nil {
					b.Fatal(err)
				}
				flags := []string{"--backend", "iptables", "--torrc", torrc, "--config", cfg}
				var scripts [3]string
				rulesCount := 0
				for i, format := range []string{"iptables", "ip6tables", "ipset"} {
					out, err := exec.Command(bin, append(flags, "print", "--format", format)...).Output()
					if err != nil {
						b.Fatal(err)
					}
					rulesCount += strings.Count(string(out), "\n-A ")
					scripts[i] = filepath.Join(dir, fmt.Sprintf("%s-%d.rules", format, n))
					if err := os.WriteFile(scripts[i], out, 0o600); err != nil {
						b.Fatal(err)
					}
				}
				var relayfw, restore, noop []time.Duration
				for i := 0; i < b.N; i++ {
					inNS(b, ns, func() {
						for r := 0; r < rounds; r++ {
							reset()
							// The peer loads the same: the relay-link ipsets, then
							// both families' rules.
							restore = append(restore, run(scripts[2], "ipset", "restore")+
								run(scripts[0], filepath.Join(pathDir, "iptables-restore"), "--noflush")+
								run(scripts[1], filepath.Join(pathDir, "ip6tables-restore"), "--noflush"))
							reset()
							relayfw = append(relayfw, run("", bin, append(flags, "apply")...))
							noop = append(noop, run("", bin, append(flags, "apply")...))
						}
					})
				}
				mr, mn, mo := median(relayfw), median(restore), median(noop)
				b.ReportMetric(float64(mr.Microseconds())/1000, "relayfw-apply-ms")
				b.ReportMetric(float64(mn.Microseconds())/1000, "restore-ms")
				b.ReportMetric(float64(mo.Microseconds())/1000, "noop-apply-ms")
				b.ReportMetric(float64(mr)/float64(mn), "apply/restore-ratio")
				b.Logf("mode=%s entries=%d rules=%d: relayfw apply %v, ipset+iptables+ip6tables-restore %v (ratio %.2f), no-op re-apply %v (medians of %d)",
					mode, n, rulesCount, mr, mn, float64(mr)/float64(mn), mo, len(relayfw))
			})
		}
	}
}
