package bench

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/relayfw/relayfw/exitpolicy"
	"github.com/relayfw/relayfw/internal/netnstest"
)

// BenchmarkScale measures block-list exit policies of N entries (hosts and
// networks, IPv4 and IPv6, then the usual port list) on both backends,
// each against the same entries loaded as a linear ruleset written by hand
// (one rule per policy entry) in the same run:
//
//   - fresh apply: relayfw apply vs nft -f / iptables-restore +
//     ip6tables-restore of the linear ruleset, from an empty namespace;
//
//   - no-op re-apply: relayfw apply of what is installed (the linear
//     peer has no such thing: it reloads);
//
//   - new-connection rate: TCP connects from the relay namespace to a
//     listener in a second namespace on an accepted port, with each
//     firewall installed, as a ratio of the rate without a firewall; and,
//     for scale, the rate with conntrack alone (one "ct state" rule),
//     which every stateful firewall pays.
//
//     sudo go test ./bench -run XXX -bench Scale -benchtime 1x -timeout 60m
//
// RELAYFW_SCALE_SIZES (e.g. "1000,10000") and RELAYFW_SCALE_MODES
// ("nftables,legacy,nft") narrow the run.
func BenchmarkScale(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("SKIPPED: needs root for network namespaces")
	}
	sizes := scaleSizes(b)
	modes := benchModes()
	dir := b.TempDir()
	bin := buildRelayfw(b, dir)
	cfg := writeConfig(b, dir)
	relay := newLinkedNS(b)
	conntrackOnly := filepath.Join(dir, "conntrack-only.nft")
	writeFile(b, conntrackOnly, "table inet ctonly {\n\tchain output {\n\t\ttype filter hook output priority filter; policy accept;\n\t\tct state established,related accept\n\t}\n}\n")

	const rounds = 3
	for _, n := range sizes {
		torrc := filepath.Join(dir, fmt.Sprintf("torrc-%d", n))
		if err := os.WriteFile(torrc, []byte(blockListTorrc(n)), 0o600); err != nil {
			b.Fatal(err)
		}
		entries := policyEntries(b, bin, "--torrc", torrc, "--config", cfg)
		for _, mode := range modes {
			b.Run(fmt.Sprintf("entries=%d/backend=%s", n, mode), func(b *testing.B) {
				peer := newLinearPeer(b, dir, mode, entries)
				backend, env := modeEnv(b, dir, mode)
				flags := []string{"--backend", backend, "--torrc", torrc, "--config", cfg}
				run := func(name string, args ...string) time.Duration {
					return timedIn(b, env, "", name, args...)
				}
				var fresh, linear, noop []time.Duration
				var rateNone, rateConntrack, rateRelayfw, rateLinear []float64
				for i := 0; i < b.N; i++ {
					inNS(b, relay, func() {
						for r := 0; r < rounds; r++ {
							// Interleaved, so machine noise hits every peer.
							peer.reset(run)
							rateNone = append(rateNone, connectRate(b))
							// What any stateful firewall costs: conntrack alone.
							run("nft", "-f", conntrackOnly)
							rateConntrack = append(rateConntrack, connectRate(b))
							run("nft", "delete", "table", "inet", "ctonly")
							linear = append(linear, peer.load(run))
							rateLinear = append(rateLinear, connectRate(b))
							peer.reset(run)
							fresh = append(fresh, run(bin, append(flags, "apply")...))
							noop = append(noop, run(bin, append(flags, "apply")...))
							rateRelayfw = append(rateRelayfw, connectRate(b))
							run(bin, append(flags, "remove")...)
						}
					})
				}
				mf, ml, mo := median(fresh), median(linear), median(noop)
				rn, rc, rr, rl := medianF(rateNone), medianF(rateConntrack), medianF(rateRelayfw), medianF(rateLinear)
				b.ReportMetric(float64(mf.Microseconds())/1000, "apply-ms")
				b.ReportMetric(float64(ml.Microseconds())/1000, "linear-load-ms")
				b.ReportMetric(float64(mf)/float64(ml), "apply/linear")
				b.ReportMetric(float64(mo.Microseconds())/1000, "noop-apply-ms")
				b.ReportMetric(rr/rn, "conn-rate-relayfw/none")
				b.ReportMetric(rl/rn, "conn-rate-linear/none")
				b.ReportMetric(rc/rn, "conn-rate-conntrack/none")
				b.Logf("entries=%d %s: apply %v, linear load %v (ratio %.2f), no-op re-apply %v; connections/s: none %.0f, conntrack only %.0f (%.2f), relayfw %.0f (%.2f), linear %.0f (%.2f) (medians of %d)",
					len(entries), mode, mf, ml, float64(mf)/float64(ml), mo, rn, rc, rc/rn, rr, rr/rn, rl, rl/rn, len(fresh))
			})
		}
	}
}

// scaleSizes are the policy sizes of RELAYFW_SCALE_SIZES, by default
// 1,000 to 100,000 entries.
func scaleSizes(b *testing.B) []int {
	env := os.Getenv("RELAYFW_SCALE_SIZES")
	if env == "" {
		return []int{1000, 10000, 50000, 100000}
	}
	var sizes []int
	for _, f := range strings.Split(env, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			b.Fatal(err)
		}
		sizes = append(sizes, n)
	}
	return sizes
}

// blockListTorrc is an IPv4 and IPv6 exit whose policy is n block-list
// entries (hosts and networks of both families, public addresses the
// benchmark never sends to) in front of the usual port list.
func blockListTorrc(n int) string {
	r := rand.New(rand.NewPCG(uint64(n), 7))
	var b strings.Builder
	b.WriteString("ExitRelay 1\nIPv6Exit 1\nORPort 443\nAddress 203.0.113.10\n")
	seen := map[string]bool{}
	for len(seen) < n {
		var e string
		switch k := r.IntN(20); {
		case k < 12:
			e = fmt.Sprintf("reject %d.%d.%d.%d:*", 11+r.IntN(80), r.IntN(256), r.IntN(256), 1+r.IntN(254))
		case k < 14:
			e = fmt.Sprintf("reject %d.%d.%d.0/24:*", 11+r.IntN(80), r.IntN(256), r.IntN(256))
		case k < 19:
			e = fmt.Sprintf("reject6 [2a0%x:%x:%x::%x]:*", r.IntN(16), r.IntN(65536), r.IntN(65536), 1+r.IntN(65535))
		default:
			e = fmt.Sprintf("reject6 [2a0%x:%x:%x::]/48:*", r.IntN(16), r.IntN(65536), r.IntN(65536))
		}
		if !seen[e] {
			seen[e] = true
			fmt.Fprintf(&b, "ExitPolicy %s\n", e)
		}
	}
	b.WriteString("ExitPolicy accept *:21-23,accept *:53,accept *:80,accept *:110,accept *:143,accept *:443,accept *:992-993,accept *:995,reject *:*\n")
	return b.String()
}

// policyEntries is the effective exit policy relayfw computes from a
// torrc, as entries.
func policyEntries(b *testing.B, bin string, flags ...string) []exitpolicy.Entry {
	policy, err := exec.Command(bin, append(flags, "policy")...).Output()
	if err != nil {
		b.Fatal(err)
	}
	entries, _, err := exitpolicy.Parse(strings.ReplaceAll(strings.TrimSpace(string(policy)), "\n", ","))
	if err != nil {
		b.Fatal(err)
	}
	return entries
}

// linearPeer is the hand-written ruleset: loopback and established first,
// as relayfw's, then one rule per exit-policy entry for TCP, in policy
// order, then reject.
type linearPeer struct {
	mode  string
	loads [][]string // commands that load it: nft -f, or both restores
	reset func(run func(string, ...string) time.Duration)
}

func (p linearPeer) load(run func(string, ...string) time.Duration) time.Duration {
	var d time.Duration
	for _, l := range p.loads {
		d += run(l[0], l[1:]...)
	}
	return d
}

func newLinearPeer(b *testing.B, dir, mode string, entries []exitpolicy.Entry) linearPeer {
	verdict := func(a exitpolicy.Action) string {
		if a == exitpolicy.Accept {
			return "accept"
		}
		return "reject with tcp reset"
	}
	ports := func(e exitpolicy.Entry, sep string) string {
		if e.PortMin <= 1 && e.PortMax == 65535 {
			return ""
		}
		if e.PortMin == e.PortMax {
			return fmt.Sprint(e.PortMin)
		}
		return fmt.Sprintf("%d%s%d", e.PortMin, sep, e.PortMax)
	}
	if mode == "nftables" {
		var t strings.Builder
		t.WriteString("table inet linear\ndelete table inet linear\ntable inet linear {\n\tchain output {\n\t\ttype filter hook output priority filter; policy accept;\n")
		t.WriteString("\t\toif \"lo\" accept\n\t\tct state established,related accept\n")
		for _, e := range entries {
			ip := "ip"
			if e.IPv6() {
				ip = "ip6"
			}
			t.WriteString("\t\tmeta l4proto tcp")
			if e.Bits > 0 {
				fmt.Fprintf(&t, " %s daddr %s", ip, e.Network())
			} else {
				fmt.Fprintf(&t, " meta nfproto %s", map[bool]string{false: "ipv4", true: "ipv6"}[e.IPv6()])
			}
			if p := ports(e, "-"); p != "" {
				fmt.Fprintf(&t, " tcp dport %s", p)
			}
			fmt.Fprintf(&t, " counter %s\n", verdict(e.Action))
		}
		t.WriteString("\t\tmeta l4proto tcp counter reject with tcp reset\n\t\tcounter reject with icmpx admin-prohibited\n\t}\n}\n")
		f := filepath.Join(dir, fmt.Sprintf("linear-%d.nft", len(entries)))
		writeFile(b, f, t.String())
		return linearPeer{mode: mode, loads: [][]string{{"nft", "-f", f}},
			reset: func(run func(string, ...string) time.Duration) { run("nft", "flush", "ruleset") }}
	}
	var loads [][]string
	for _, v6 := range []bool{false, true} {
		var t strings.Builder
		t.WriteString("*filter\n:LINEAR - [0:0]\n-A OUTPUT -j LINEAR\n-A LINEAR -o lo -j ACCEPT\n-A LINEAR -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n")
		for _, e := range entries {
			if e.IPv6() != v6 {
				continue
			}
			t.WriteString("-A LINEAR")
			if e.Bits > 0 {
				fmt.Fprintf(&t, " -d %s", e.Network())
			}
			t.WriteString(" -p tcp")
			if p := ports(e, ":"); p != "" {
				fmt.Fprintf(&t, " -m tcp --dport %s", p)
			}
			if e.Action == exitpolicy.Accept {
				t.WriteString(" -j ACCEPT\n")
			} else {
				t.WriteString(" -j REJECT --reject-with tcp-reset\n")
			}
		}
		t.WriteString("-A LINEAR -p tcp -j REJECT --reject-with tcp-reset\n")
		if v6 {
			t.WriteString("-A LINEAR -j REJECT --reject-with icmp6-adm-prohibited\nCOMMIT\n")
		} else {
			t.WriteString("-A LINEAR -j REJECT --reject-with icmp-admin-prohibited\nCOMMIT\n")
		}
		f := filepath.Join(dir, fmt.Sprintf("linear-%d-%s-%v.rules", len(entries), mode, v6))
		writeFile(b, f, t.String())
		loads = append(loads, []string{map[bool]string{false: "iptables-restore", true: "ip6tables-restore"}[v6], f})
	}
	return linearPeer{mode: mode, loads: loads, reset: func(run func(string, ...string) time.Duration) {
		for _, fam := range []string{"iptables", "ip6tables"} {
			run(fam, "-F")
			run(fam, "-X")
		}
		run("ipset", "destroy")
	}}
}

func writeFile(b *testing.B, path, text string) {
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		b.Fatal(err)
	}
}

// benchModes are the backends a benchmark runs: nftables, and iptables in
// legacy and nf_tables mode; RELAYFW_SCALE_MODES ("nftables,legacy,nft")
// narrows them.
func benchModes() []string {
	if env := os.Getenv("RELAYFW_SCALE_MODES"); env != "" {
		return strings.Split(env, ",")
	}
	return []string{"nftables", "legacy", "nft"}
}

// modeEnv is relayfw's --backend for a mode and the environment it runs
// in: for an iptables mode, a PATH whose iptables* are that mode's.
func modeEnv(b *testing.B, dir, mode string) (backend string, env []string) {
	if mode == "nftables" {
		return "nftables", os.Environ()
	}
	return "iptables", append(os.Environ(), "PATH="+iptablesModeDir(b, dir, mode)+":"+os.Getenv("PATH"))
}

// iptablesModeDir is a directory of iptables* links to one mode's tools.
func iptablesModeDir(b *testing.B, dir, mode string) string {
	pathDir := filepath.Join(dir, "bin-"+mode)
	if err := os.MkdirAll(pathDir, 0o755); err != nil {
		b.Fatal(err)
	}
	for _, fam := range []string{"iptables", "ip6tables"} {
		for _, suffix := range []string{"", "-save", "-restore"} {
			target, err := exec.LookPath(fam + "-" + mode + suffix)
			if err != nil {
				b.Fatal(err)
			}
			_ = os.Symlink(target, filepath.Join(pathDir, fam+suffix))
		}
	}
	return pathDir
}

// serverAddr is the listener in the server namespace; the relay reaches it
// over a veth link, on a port the exit policy accepts.
var serverAddr = netip.MustParseAddrPort("198.51.100.2:443")

// newLinkedNS makes the relay namespace (where firewalls are installed)
// and a server namespace with a TCP listener, joined by veth.
func newLinkedNS(b *testing.B) netns.NsHandle {
	relay := newBenchNS(b, "rfwscale")
	server := newBenchNS(b, "rfwscalesrv")
	if err := netnstest.Veth(relay, server, []string{"198.51.100.1/30"}, []string{"198.51.100.2/30"}); err != nil {
		b.Fatal(err)
	}
	for _, ns := range []netns.NsHandle{relay, server} {
		h, err := netlink.NewHandleAt(ns)
		if err != nil {
			b.Fatal(err)
		}
		err = netnstest.LinkUp(h, "lo")
		h.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
	var l net.Listener
	if err := netnstest.Do(server, func() (err error) {
		l, err = net.Listen("tcp", serverAddr.String())
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return relay
}

// connectRate opens connections to the server, one after another, for a
// fixed count, and returns connections per second. Each closes with a
// reset (linger 0), so no TIME_WAIT piles up across rounds.
func connectRate(b *testing.B) float64 {
	const conns = 3000
	d := net.Dialer{Timeout: 2 * time.Second}
	start := time.Now()
	for i := 0; i < conns; i++ {
		c, err := d.Dial("tcp", serverAddr.String())
		if err != nil {
			b.Fatalf("connect %d: %v", i, err)
		}
		_ = c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
	return conns / time.Since(start).Seconds()
}

func medianF(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
