package bench

import (
	"fmt"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/relayfw/relayfw/internal/digits"
	"github.com/relayfw/relayfw/internal/netnstest"
)

// BenchmarkOperator measures relayfw as an operator runs it: the built
// binary as a process, with relayfw.toml's defaults but a fixed resolver
// (and for the block lists a longer [tor] verify_timeout), its state where it goes by default (/run/relayfw and /var/lib/relayfw,
// per network namespace), and tor judging the torrc (tor --verify-config),
// as it does wherever tor is installed. The torrc is a Debian relay's:
// User debian-tor, and a DataDirectory of debian-tor's (mode 0700) that
// holds the cached consensus. Everything runs in a network namespace of
// its own.
//
// Workloads: "realistic" is the example exit policy with a consensus of
// the Tor network's size (9,000 relays, about 3 MB); the synthetic block
// lists are N rejects in front of it (tor cannot publish such a policy:
// they stand for block lists), with the same consensus.
//
// Per workload and backend, interleaved and repeated, medians: relayfw's
// fresh apply (after remove and a flush), no-op re-apply, check, refresh
// (consensus unchanged) and status, against loading relayfw's own print
// output (nft -f; ipset restore + iptables-restore + ip6tables-restore),
// reading the installed firewall back (nft list table; iptables-save +
// ip6tables-save + ipset save), and for the block lists a linear ruleset of
// the same entries written by hand. tor --verify-config of the torrc, which
// a command runs unless relayfw remembers tor's verdict, is timed alone.
//
//	sudo go test ./bench -run XXX -bench Operator -benchtime 1x -timeout 120m
//
// tor's check of a 50,000-entry ExitPolicy takes about 30 s in every
// command that runs it: that workload can take up to an hour.
//
// RELAYFW_BENCH_ROUNDS (default 7) sets the rounds; RELAYFW_OPERATOR_WORKLOADS
// ("realistic,1000,10000,50000") and RELAYFW_OPERATOR_MODES ("nftables,
// iptables", the host's default iptables; "legacy" and "nft" choose a mode)
// narrow or widen the run.
func BenchmarkOperator(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("SKIPPED: needs root for a network namespace and tor's DataDirectory")
	}
	rounds := envRounds(b)
	workloads := operatorWorkloads(b)
	modes := operatorModes()
	dir := b.TempDir()
	bin := buildRelayfw(b, dir)
	data := debianTorDataDir(b, microdescConsensus(consensusSeed, realisticRelays, time.Now().UTC().Truncate(time.Hour)))
	emptyDefaults := filepath.Join(dir, "empty-defaults-torrc")
	writeFile(b, emptyDefaults, "")
	ns := newBenchNS(b, "rfwop")

	results := map[string][]operatorRow{}
	var order []string
	for _, w := range workloads {
		torrc, cfg := w.write(b, dir, data)
		for _, mode := range modes {
			name := w.name + "/backend=" + mode
			order = append(order, name)
			b.Run(name, func(b *testing.B) {
				o := newOperatorRun(b, ns, dir, bin, mode, torrc, cfg)
				o.tor = []string{"tor", "--verify-config", "--defaults-torrc", emptyDefaults, "-f", torrc, "--RunAsDaemon", "0"}
				if w.entries > 0 {
					linear := newLinearPeer(b, dir, mode, o.policyEntries())
					o.linear = &linear
				}
				for i := 0; i < b.N; i++ {
					inNS(b, ns, func() {
						for r := 0; r < rounds; r++ {
							o.round()
						}
					})
				}
				rows := o.rows(w)
				o.report(rows)
				results[name] = rows // the last run of this sub-benchmark
			})
		}
	}
	var all []operatorRow
	for _, name := range order {
		all = append(all, results[name]...)
	}
	logTable(b, fmt.Sprintf("relayfw as an operator runs it, medians of %d rounds", rounds), all)
}

// operatorWorkload is an exit policy the benchmark measures.
type operatorWorkload struct {
	name    string // sub-benchmark name
	label   string // in the table
	entries int    // block-list entries; 0 for the realistic policy
}

// write writes the workload's torrc (with User debian-tor and the
// DataDirectory data, as on a Debian relay) and relayfw.toml.
func (w operatorWorkload) write(b *testing.B, dir, data string) (torrc, cfg string) {
	var policy string
	settings := "[allow]\nresolvers = [\"192.0.2.53\"]\n"
	if w.entries == 0 {
		example, err := os.ReadFile("../examples/torrc")
		if err != nil {
			b.Fatal(err)
		}
		policy = string(example)
	} else {
		policy = blockListTorrc(w.entries)
		// tor checks a long ExitPolicy slowly (some 20 s at 50,000
		// entries, near the default 30 s): such an operator raises it.
		settings += "[tor]\nverify_timeout = \"5m\"\n"
	}
	torrc = filepath.Join(dir, "torrc-"+w.name)
	writeFile(b, torrc, fmt.Sprintf("User debian-tor\nDataDirectory %s\n%s", data, policy))
	cfg = filepath.Join(dir, "relayfw-"+w.name+".toml")
	writeFile(b, cfg, settings)
	return torrc, cfg
}

// operatorWorkloads are the workloads of RELAYFW_OPERATOR_WORKLOADS:
// "realistic" and block-list sizes, all four by default.
func operatorWorkloads(b *testing.B) []operatorWorkload {
	names := "realistic,1000,10000,50000"
	if env := os.Getenv("RELAYFW_OPERATOR_WORKLOADS"); env != "" {
		names = env
	}
	var ws []operatorWorkload
	for _, f := range strings.Split(names, ",") {
		f = strings.TrimSpace(f)
		if f == "realistic" {
			ws = append(ws, operatorWorkload{"realistic", "realistic: example policy, " + digits.Grouped(realisticRelays) + "-relay consensus", 0})
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			b.Fatalf("RELAYFW_OPERATOR_WORKLOADS: %q is neither realistic nor a number of entries", f)
		}
		ws = append(ws, operatorWorkload{fmt.Sprintf("blocklist=%d", n), "synthetic block list (tor cannot publish such a policy), " + digits.Grouped(n) + " entries", n})
	}
	return ws
}

// operatorModes are the backends of RELAYFW_OPERATOR_MODES: nftables and
// iptables in the host's default mode unless it says otherwise.
func operatorModes() []string {
	if env := os.Getenv("RELAYFW_OPERATOR_MODES"); env != "" {
		return strings.Split(env, ",")
	}
	return []string{"nftables", "iptables"}
}

// envRounds is RELAYFW_BENCH_ROUNDS, 7 by default.
func envRounds(b *testing.B) int {
	env := os.Getenv("RELAYFW_BENCH_ROUNDS")
	if env == "" {
		return 7
	}
	n, err := strconv.Atoi(env)
	if err != nil || n < 1 {
		b.Fatalf("RELAYFW_BENCH_ROUNDS=%q: want a number of rounds", env)
	}
	return n
}

// debianTorDataDir is a DataDirectory as Debian's tor keeps it: owned by
// debian-tor, mode 0700, the consensus debian-tor's too. tor checks it as
// debian-tor, who must reach it: it is not below the benchmark's own
// temporary directory (mode 0700).
func debianTorDataDir(b *testing.B, consensus string) string {
	u, err := osuser.Lookup("debian-tor")
	if err != nil {
		b.Fatalf("%v: install tor (bash scripts/setup)", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	parent, err := os.MkdirTemp("", "relayfw-bench-tordata-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(parent) })
	data := filepath.Join(parent, "tor")
	file := filepath.Join(data, "cached-microdesc-consensus")
	for _, step := range []error{
		os.Chmod(parent, 0o755),
		os.Mkdir(data, 0o700),
		os.WriteFile(file, []byte(consensus), 0o600),
		os.Chown(file, uid, gid),
		os.Chown(data, uid, gid),
	} {
		if step != nil {
			b.Fatal(step)
		}
	}
	return data
}

// cleanupNS removes relayfw's firewall from ns when a sub-benchmark ends,
// even one that failed half-way.
func cleanupNS(b *testing.B, ns netns.NsHandle, env []string, bin string, flags []string) {
	b.Cleanup(func() {
		_ = netnstest.Do(ns, func() error {
			cmd := exec.Command(bin, append(flags, "remove")...)
			cmd.Env = env
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Errorf("relayfw remove: %v\n%s", err, out)
			}
			return nil
		})
	})
}
