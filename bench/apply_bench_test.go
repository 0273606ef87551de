// Package bench measures relayfw against its peers in the same run: apply
// versus `nft -f` of relayfw's own printed ruleset, in one network
// namespace, interleaved and repeated, reporting medians and ratios.
//
//	sudo go test ./bench -run XXX -bench Apply -benchtime 1x
package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/relayfw/relayfw/internal/netnstest"
)

// torrcWithEntries is the example exit policy preceded by n single-host
// rejects, as an operator's block list would be.
func torrcWithEntries(n int) string {
	var b strings.Builder
	b.WriteString("ExitRelay 1\nORPort 443\nAddress 203.0.113.10\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "ExitPolicy reject %d.%d.%d.%d:*\n", 11+i/62500, i/250%250, i%250, 1+i%200)
	}
	b.WriteString("ExitPolicy accept *:21-23,accept *:53,accept *:80,accept *:110,accept *:143,accept *:443,accept *:992-993,accept *:995,reject *:*\n")
	return b.String()
}

// inNS runs f on a thread switched into the namespace; commands started by
// f inherit it.
func inNS(b *testing.B, ns netns.NsHandle, f func()) {
	if err := netnstest.Do(ns, func() error { f(); return nil }); err != nil {
		b.Fatal(err)
	}
}

// timedIn runs a command with the environment env and stdin from a file
// ("": none), and returns how long it took, from start to exit; it must
// succeed.
func timedIn(b *testing.B, env []string, stdin, name string, args ...string) time.Duration {
	cmd := exec.Command(name, args...)
	cmd.Env = env
	if stdin != "" {
		f, err := os.Open(stdin)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		cmd.Stdin = f
	}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start)
	if err != nil {
		b.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return d
}

func timed(b *testing.B, name string, args ...string) time.Duration {
	return timedIn(b, os.Environ(), "", name, args...)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// newBenchNS creates an empty network namespace for the benchmark and
// deletes it when the benchmark ends.
func newBenchNS(b *testing.B, prefix string) netns.NsHandle {
	name := fmt.Sprintf("%s%d", prefix, os.Getpid())
	var ns netns.NsHandle
	err := netnstest.Restoring(func() (err error) {
		ns, err = netns.NewNamed(name) // switches this thread into it
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	// relayfw's files for the namespace go with it.
	cookie, cookieErr := netnstest.Cookie(ns)
	b.Cleanup(func() {
		_ = netns.DeleteNamed(name)
		ns.Close()
		if cookieErr == nil {
			netnstest.RemoveStateFiles(cookie)
		}
	})
	return ns
}

// buildRelayfw builds the relayfw binary into dir.
func buildRelayfw(b *testing.B, dir string) string {
	bin := filepath.Join(dir, "relayfw")
	build := exec.Command("go", "build", "-o", bin, "../cmd/relayfw")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// writeConfig writes a relayfw.toml with a fixed resolver, and time for
// tor to judge a block list of 50,000 entries (about 30 s).
func writeConfig(b *testing.B, dir string) string {
	cfg := filepath.Join(dir, "relayfw.toml")
	if err := os.WriteFile(cfg, []byte("[allow]\nresolvers = [\"192.0.2.53\"]\n[tor]\nverify_timeout = \"5m\"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	return cfg
}

func BenchmarkApply(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("SKIPPED: needs root for a network namespace")
	}
	dir := b.TempDir()
	bin := buildRelayfw(b, dir)
	nftBin, err := exec.LookPath("nft")
	if err != nil {
		b.Fatal("nft not found: bash scripts/setup")
	}
	cfg := writeConfig(b, dir)
	ns := newBenchNS(b, "rfwbench")

	const rounds = 7
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			torrc := filepath.Join(dir, fmt.Sprintf("torrc-%d", n))
			if err := os.WriteFile(torrc, []byte(torrcWithEntries(n)), 0o600); err != nil {
				b.Fatal(err)
			}
			flags := []string{"--backend", "nftables", "--torrc", torrc, "--config", cfg}
			printed, err := exec.Command(bin, append(flags, "print", "--format", "nft")...).Output()
			if err != nil {
				b.Fatal(err)
			}
			script := filepath.Join(dir, fmt.Sprintf("ruleset-%d.nft", n))
			if err := os.WriteFile(script, printed, 0o600); err != nil {
				b.Fatal(err)
			}
			var relayfw, nft, noop []time.Duration
			for i := 0; i < b.N; i++ {
				inNS(b, ns, func() {
					for r := 0; r < rounds; r++ {
						// Interleave the peers so machine noise hits both.
						timed(b, nftBin, "flush", "ruleset")
						nft = append(nft, timed(b, nftBin, "-f", script))
						timed(b, nftBin, "flush", "ruleset")
						relayfw = append(relayfw, timed(b, bin, append(flags, "apply")...))
						noop = append(noop, timed(b, bin, append(flags, "apply")...))
					}
				})
			}
			mr, mn, mo := median(relayfw), median(nft), median(noop)
			b.ReportMetric(float64(mr.Microseconds())/1000, "relayfw-apply-ms")
			b.ReportMetric(float64(mn.Microseconds())/1000, "nft-f-ms")
			b.ReportMetric(float64(mo.Microseconds())/1000, "noop-apply-ms")
			b.ReportMetric(float64(mr)/float64(mn), "apply/nft-ratio")
			b.Logf("entries=%d set elements=%d: relayfw apply %v, nft -f %v (ratio %.2f), no-op re-apply %v (medians of %d)",
				n, strings.Count(string(printed), " . "), mr, mn, float64(mr)/float64(mn), mo, len(relayfw))
		})
	}
}
