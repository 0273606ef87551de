package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// testConsensus lists one relay, on net's link address, which probes never
// target: the relay-link rules must not blur the exit policy's verdicts.
const testConsensus = "network-status-version 3 microdesc\nvote-status consensus\n" +
	"r linkrelay AAAAAAAAAAAAAAAAAAAAAAAAAAA 2026-11-25 11:00:00 198.51.100.2 9001 0\ns Fast Running Valid\n"

// testConfig is relayfw.toml for the tests; the data directory (holding
// a consensus) is appended by writeTestConfig.
const testConfig = "[allow]\nresolvers = [\"198.51.100.2\"]\n"

// writeTestConfig writes relayfw.toml and a tor data directory with the
// consensus into dir, readable by anyone, and returns the config path.
func writeTestConfig(t *testing.T, dir, consensus string, extra ...string) string {
	t.Helper()
	data := filepath.Join(dir, "tordata")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "cached-microdesc-consensus"), []byte(consensus), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "relayfw.toml")
	text := fmt.Sprintf("data_directory = %q\n%s%s", data, testConfig, strings.Join(extra, ""))
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// torDataDir makes a DataDirectory for a tor run as user, as tor wants it
// (owned by that user, mode 0700: tor --verify-config, which relayfw runs,
// refuses a torrc whose User cannot use its DataDirectory), holding the
// cached consensus when it is not "".
func torDataDir(t *testing.T, user, consensus string) string {
	t.Helper()
	u, err := osuser.Lookup(user)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	// tor checks the directory as user, who must reach it: not below a
	// test's own temporary directory (mode 0700).
	data := filepath.Join(reachableTempDir(t, "relayfw-tordata-"), user)
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if consensus != "" {
		file := filepath.Join(data, "cached-microdesc-consensus")
		if err := os.WriteFile(file, []byte(consensus), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(file, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(data, uid, gid); err != nil {
		t.Fatal(err)
	}
	return data
}

// backend is one firewall backend (and iptables mode) the suite runs
// against; every one must pass the same tests.
type backend struct {
	name string // subtest name
	flag string // --backend
	mode string // iptables mode: "legacy" or "nft"; "" for nftables
}

var backends = []backend{
	{"nftables", "nftables", ""},
	{"iptables-legacy", "iptables", "legacy"},
	{"iptables-nft", "iptables", "nft"},
}

// iptablesPath returns a PATH under which iptables, ip6tables and their
// save/restore tools are the given mode's, as on a host whose
// alternatives point there.
func iptablesPath(t *testing.T, mode string) string {
	t.Helper()
	dir := t.TempDir()
	for _, fam := range []string{"iptables", "ip6tables"} {
		for _, suffix := range []string{"", "-save", "-restore"} {
			target := requireCommand(t, fam+"-"+mode+suffix)
			if err := os.Symlink(target, filepath.Join(dir, fam+suffix)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir + ":" + os.Getenv("PATH")
}

// env is the environment relayfw and the iptables tools run with for
// this backend.
func (b backend) env(t *testing.T) []string {
	if b.mode == "" {
		return nil
	}
	return append(os.Environ(), "PATH="+iptablesPath(t, b.mode))
}

// runFunc runs relayfw in the relay namespace with the backend's
// environment.
type runFunc func(args ...string) (code int, stdout, stderr string)

func (b backend) runner(t *testing.T, tn *testNet) runFunc {
	env := b.env(t)
	return func(args ...string) (int, string, string) {
		t.Helper()
		return relayfwEnv(t, tn.relay, env, args...)
	}
}

// runnerIn is relayfwIn with the backend's environment env.
func (b backend) runnerIn(env []string) func(t *testing.T, ns string, args ...string) (int, string, string) {
	return func(t *testing.T, ns string, args ...string) (int, string, string) {
		t.Helper()
		return relayfwEnv(t, ns, env, args...)
	}
}

// relayfwIn runs relayfw in a namespace.
func relayfwIn(t *testing.T, ns string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return relayfwEnv(t, ns, nil, args...)
}

// relayfwEnv runs relayfw in a namespace with an environment (nil: ours).
func relayfwEnv(t *testing.T, ns string, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, relayfwBin}, args...)...)
	cmd.Env = env
	return runCmd(t, cmd)
}

// relayInputs writes a torrc (or uses path) and a config with a fixed
// resolver, and returns relayfw's input flags.
func relayInputs(t *testing.T, backend, torrc string) []string {
	t.Helper()
	dir := t.TempDir()
	path := torrc
	if !strings.HasPrefix(torrc, "/") && !strings.HasPrefix(torrc, "..") {
		path = filepath.Join(dir, "torrc")
		if err := os.WriteFile(path, []byte(torrc), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The resolver is net's link address, which probes never target: DNS
	// to it is a host allowance, not the exit policy's decision.
	cfg := writeTestConfig(t, dir, testConsensus)
	return []string{"--backend", backend, "--torrc", path, "--config", cfg}
}

func mustApply(t *testing.T, run runFunc, flags []string) {
	t.Helper()
	code, out, errOut := run(append(flags, "apply")...)
	if code != 0 {
		t.Fatalf("apply: exit %d: %s%s", code, out, errOut)
	}
}

func TestBackends(t *testing.T) {
	requireRoot(t)
	for _, backend := range backends {
		t.Run(backend.name, func(t *testing.T) {
			t.Parallel() // each backend in its own namespaces
			t.Run("ExamplePolicy", func(t *testing.T) { testExamplePolicy(t, backend) })
			t.Run("KernelEqualsModel", func(t *testing.T) { testKernelEqualsModel(t, backend) })
			t.Run("IdempotentDriftRemove", func(t *testing.T) { testIdempotentDriftRemove(t, backend) })
			t.Run("EstablishedSessionSurvives", func(t *testing.T) { testEstablishedSurvives(t, backend) })
			t.Run("NotPermitted", func(t *testing.T) { testNotPermitted(t, backend) })
			t.Run("RelayLinksAndRefresh", func(t *testing.T) { testRelayLinks(t, backend) })
			t.Run("HostKeepsWorking", func(t *testing.T) { testHostKeepsWorking(t, backend) })
			t.Run("ExitSource", func(t *testing.T) { testExitSource(t, backend) })
			t.Run("ExtraAllowanceByUser", func(t *testing.T) { testExtraAllowance(t, backend) })
			t.Run("StatusAndMetrics", func(t *testing.T) { testStatusAndMetrics(t, backend) })
			t.Run("InstancesByUser", func(t *testing.T) { testInstancesByUser(t, backend) })
			t.Run("SecondBackendReplacesFirst", func(t *testing.T) { testSecondBackend(t, backend) })
			t.Run("LocalResolverByUser", func(t *testing.T) { testLocalResolver(t, backend) })
			t.Run("UpdatesForApt", func(t *testing.T) { testUpdatesForApt(t, backend) })
			t.Run("DryRun", func(t *testing.T) { testDryRun(t, backend) })
			t.Run("NonExitSaidPlainly", func(t *testing.T) { testNonExit(t, backend) })
		})
	}
}

// testExamplePolicy: with examples/torrc, TCP to 80/443/22/993 connects and
// to 25/6881/9001 is refused at once, over IPv4 and IPv6.
func testExamplePolicy(t *testing.T, b backend) {
	tn := newTestNet(t)
	run := b.runner(t, tn)
	flags := relayInputs(t, b.flag, "../examples/torrc")
	// Before apply everything connects: the network works.
	for _, dst := range []string{"203.0.113.5", "2001:db8:1::5"} {
		if o, _ := tn.probe(t, netip.MustParseAddr(dst), 25); o != connected {
			t.Fatalf("before apply, %s:25 %s; the test network is broken", dst, o)
		}
	}
	mustApply(t, run, flags)
	for _, dst := range []string{"203.0.113.5", "2001:db8:1::5"} {
		addr := netip.MustParseAddr(dst)
		for _, port := range []uint16{80, 443, 22, 993} {
			if o, _ := tn.probe(t, addr, port); o != connected {
				t.Errorf("%s port %d: %s, want connected", dst, port, o)
			}
		}
		for _, port := range []uint16{25, 6881, 9001} {
			o, took := tn.probe(t, addr, port)
			if o != refused || took > time.Second {
				t.Errorf("%s port %d: %s after %v, want refused at once", dst, port, o, took)
			}
		}
	}
}

// modelVerdicts asks `relayfw explain` (the model, no kernel) for targets.
func modelVerdicts(t *testing.T, tn *testNet, flags []string, targets []netip.AddrPort) []string {
	t.Helper()
	args := append(append([]string{}, flags...), "explain", "--format", "json")
	for _, tg := range targets {
		args = append(args, tg.String())
	}
	code, out, errOut := relayfwIn(t, tn.relay, args...)
	if code != 0 {
		t.Fatalf("explain: exit %d: %s", code, errOut)
	}
	var verdicts []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e struct{ Verdict string }
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatal(err)
		}
		verdicts = append(verdicts, e.Verdict)
	}
	if len(verdicts) != len(targets) {
		t.Fatalf("explain gave %d verdicts for %d targets", len(verdicts), len(targets))
	}
	return verdicts
}

// probeTargets draws destinations from the test ranges: documentation
// prefixes and the private addresses net holds, never the link itself.
func probeTargets(r *rand.Rand, n int, v6 bool) []netip.AddrPort {
	var out []netip.AddrPort
	for len(out) < n {
		var a netip.Addr
		if v6 {
			switch r.IntN(4) {
			case 0:
				a = netip.MustParseAddr("fc00::5")
			case 1:
				a = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, byte(r.IntN(4)), 0, 0, 0, 0, 0, 0, 0, 0, byte(1 + r.IntN(250))})
			case 2:
				a = netip.AddrFrom16([16]byte{0x3f, 0xff, byte(r.IntN(16)), byte(r.IntN(256)), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(1 + r.IntN(250))})
			default:
				a = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(r.IntN(256)), byte(r.IntN(256)), 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(5 + r.IntN(250))})
			}
		} else {
			switch r.IntN(5) {
			case 0:
				a = netip.MustParseAddr([]string{"10.1.2.3", "192.168.1.1", "172.16.5.5"}[r.IntN(3)])
			case 1:
				a = netip.AddrFrom4([4]byte{192, 0, 2, byte(r.IntN(256))})
			case 2:
				a = netip.AddrFrom4([4]byte{198, 51, 100, byte(4 + r.IntN(252))}) // not the /30 link
			default:
				a = netip.AddrFrom4([4]byte{203, 0, 113, byte(r.IntN(256))})
			}
		}
		port := uint16(1 + r.IntN(65535))
		if r.IntN(2) == 0 {
			port = []uint16{21, 22, 25, 53, 80, 110, 119, 143, 443, 445, 563, 993, 995, 1024, 6667, 6881, 8080, 9001}[r.IntN(18)]
		}
		out = append(out, netip.AddrPortFrom(a, port))
	}
	return out
}

// testKernelEqualsModel: on random destinations, the kernel's verdict
// (connected or refused) equals ExitPolicy.Verdict, for several policies.
func testKernelEqualsModel(t *testing.T, b backend) {
	policies := []struct{ name, torrc string }{
		{"example", "../examples/torrc"},
		{"default", "ExitRelay 1\nIPv6Exit 1\nAddress 203.0.113.10\nORPort 443\n"},
		{"reduced", "ExitRelay 1\nReducedExitPolicy 1\nORPort 443\n"},
		{"ipv6-exit", "ExitRelay 1\nIPv6Exit 1\nExitPolicyRejectPrivate 0\nORPort 443\n" +
			"ExitPolicy reject 203.0.113.0/25:*,accept 203.0.113.0/24:1-1024,accept 192.0.2.0/24:443,reject 198.51.100.128/26:80\n" +
			"ExitPolicy accept 10.0.0.0/8:22,accept *4:80,reject6 [2001:db8:1:2::]/64:*,accept6 [2001:db8:1::]/48:*\n" +
			"ExitPolicy accept6 [3fff::]/24:20-25,accept6 [fc00::]/7:443,reject *:*\n"},
		// A block list of public hosts and networks (installed, never
		// probed) around entries on the probed ranges, with over a hundred
		// port classes: past the iptables backend's class ipsets.
		{"large", largePolicyTorrc(20000, 120)},
	}
	const perFamily = 500
	r := rand.New(rand.NewPCG(testSeed(t, "RELAYFW_PROBE_SEED", 99), 99))
	tn := newTestNet(t)
	run := b.runner(t, tn)
	for _, pol := range policies {
		t.Run(pol.name, func(t *testing.T) {
			flags := relayInputs(t, b.flag, pol.torrc)
			mustApply(t, run, flags)
			targets := append(probeTargets(r, perFamily, false), probeTargets(r, perFamily, true)...)
			want := modelVerdicts(t, tn, flags, targets)
			accepted := 0
			for i, tg := range targets {
				o, _ := tn.probe(t, tg.Addr(), tg.Port())
				wantOutcome := refused
				if want[i] == "accept" {
					wantOutcome = connected
					accepted++
				}
				if o != wantOutcome {
					t.Errorf("%s: kernel %s, model %s", tg, o, want[i])
				}
			}
			t.Logf("%d probes, %d accepted by the policy", len(targets), accepted)
			if accepted == 0 || accepted == len(targets) {
				t.Errorf("probes are one-sided (%d of %d accepted); the test would not tell", accepted, len(targets))
			}
		})
	}
}

// largePolicyTorrc is an IPv4 and IPv6 exit whose policy starts with
// blocks of public hosts and networks in both families (these are only
// installed, never probed) mixed with classes entries on the ranges
// the tests probe, each with ports of its own, then the example's port list.
func largePolicyTorrc(blocks, classes int) string {
	r := rand.New(rand.NewPCG(uint64(blocks), uint64(classes)))
	var b strings.Builder
	b.WriteString("ExitRelay 1\nIPv6Exit 1\nORPort 443\nAddress 203.0.113.10\n")
	every := max(blocks/max(classes, 1), 1)
	for i := 0; i < blocks; i++ {
		if k := i / every; i%every == 0 && k < classes {
			// A probed address with a port of its own: a class of its own.
			fmt.Fprintf(&b, "ExitPolicy accept 203.0.113.%d:%d\n", k%256, 1000+k)
			if k%10 == 0 {
				fmt.Fprintf(&b, "ExitPolicy reject6 [2001:db8:1:%x::]/64:%d-443\n", k/10%4, 20+k%5)
			}
			continue
		}
		switch r.IntN(10) {
		case 0:
			fmt.Fprintf(&b, "ExitPolicy reject %d.%d.%d.0/24:*\n", 11+r.IntN(80), r.IntN(256), r.IntN(256))
		case 1:
			fmt.Fprintf(&b, "ExitPolicy reject6 [2a0%x:%x:%x::]/48:*\n", r.IntN(16), r.IntN(65536), r.IntN(65536))
		case 2, 3:
			fmt.Fprintf(&b, "ExitPolicy reject6 [2a0%x:%x:%x::%x]:*\n", r.IntN(16), r.IntN(65536), r.IntN(65536), 1+r.IntN(65535))
		default:
			fmt.Fprintf(&b, "ExitPolicy reject %d.%d.%d.%d:*\n", 11+r.IntN(80), r.IntN(256), r.IntN(256), 1+r.IntN(254))
		}
	}
	b.WriteString("ExitPolicy accept *:21-23,accept *:53,accept *:80,accept *:110,accept *:143,accept *:443,accept *:992-993,accept *:995,reject *:*\n")
	return b.String()
}

var countersRE = regexp.MustCompile(`counter packets \d+ bytes \d+|\[\d+:\d+\]`)

// listRuleset is nft's view of the namespace's whole ruleset.
func listRuleset(t *testing.T, ns string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list ruleset: %v\n%s", err, out)
	}
	return countersRE.ReplaceAllString(string(out), "counter")
}

// snapshot is everything installed in the namespace as the backend's
// tools see it, without counters and timestamps.
func (b backend) snapshot(t *testing.T, ns string, env []string) string {
	t.Helper()
	if b.mode == "" {
		return listRuleset(t, ns)
	}
	var all strings.Builder
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		cmd := exec.Command("ip", "netns", "exec", ns, tool)
		cmd.Env = env
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if !strings.HasPrefix(l, "#") {
				all.WriteString(countersRE.ReplaceAllString(l, "[0:0]") + "\n")
			}
		}
	}
	return all.String()
}

// shell runs a backend tool (nft, iptables, ...) in the namespace.
func shell(t *testing.T, ns string, env []string, stdin string, args ...string) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
}

// foreignSetup installs what an admin, Docker and fail2ban would have.
func (b backend) foreignSetup(t *testing.T, ns string, env []string) {
	t.Helper()
	if b.mode == "" {
		shell(t, ns, nil, `table inet filter {
	chain input {
		type filter hook input priority filter; policy accept;
		tcp dport 22 counter accept comment "admin ssh"
	}
}
table ip docker {
	chain DOCKER-USER {
		return
	}
}
`, "nft", "-f", "-")
		return
	}
	shell(t, ns, env, `*filter
:DOCKER-USER - [0:0]
:f2b-sshd - [0:0]
-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd
-A OUTPUT -d 192.0.2.99/32 -m comment --comment "admin: backup host" -j ACCEPT
-A DOCKER-USER -j RETURN
-A f2b-sshd -s 203.0.113.66/32 -j REJECT --reject-with icmp-port-unreachable
-A f2b-sshd -j RETURN
COMMIT
`, "iptables-restore", "--noflush")
	shell(t, ns, env, "*filter\n:f2b-sshd - [0:0]\n-A f2b-sshd -j RETURN\nCOMMIT\n", "ip6tables-restore", "--noflush")
}

// handEdit is a change an admin makes by hand, and what check must say
// (exit 1, drift; or 3 when only the relay links differ).
type handEdit struct {
	name string
	args []string // command in the namespace
	want string
	code int // 0: 1
}

func (b backend) handEdits() []handEdit {
	if b.mode == "" {
		return []handEdit{
			// The foreign rule shown as a rule, as the admin wrote it.
			{"added rule", []string{"nft", "add rule inet relayfw output tcp dport 25 accept"}, "unexpected rule (handle", 0},
			{"added rule shown", []string{"nft", "add rule inet relayfw output tcp dport 26 accept"}, ": tcp dport 26 accept (not generated by relayfw)", 0},
			// A relay link the consensus lacks: refresh removes it, as it does
			// a relay that left the consensus.
			{"added element", []string{"nft", "add element inet relayfw relays4 { 203.0.113.99 . 25 }"}, "0 to add, 1 to remove", 3},
			{"port added to a class", []string{"nft", "add element inet relayfw exit4_c0 { 25 }"}, "set exit4_c0: 1 unexpected elements, e.g. 25", 0},
			{"map element changed", []string{"nft", "delete element inet relayfw exit4 { 203.0.113.11-255.255.255.255 }; add element inet relayfw exit4 { 203.0.113.11-255.255.255.255 : accept }"}, "map exit4: 1 unexpected elements, e.g. 203.0.113.11-255.255.255.255 : accept", 0},
			{"deleted map", []string{"nft", "flush chain inet relayfw output; delete map inet relayfw exit6"}, "map exit6 is missing", 0},
			{"deleted table", []string{"nft", "delete table inet relayfw"}, "not installed", 0},
		}
	}
	return []handEdit{
		{"added rule", []string{"iptables", "-A", "RELAYFW-OUTPUT", "-p", "tcp", "--dport", "25", "-j", "ACCEPT"}, ": -A RELAYFW-OUTPUT -p tcp -m tcp --dport 25 -j ACCEPT", 0},
		{"deleted rule", []string{"ip6tables", "-D", "RELAYFW-OUTPUT", "1"}, "ip6tables: missing rule 1", 0},
		{"jump removed", []string{"iptables", "-D", "OUTPUT", "-j", "RELAYFW-OUTPUT"}, "does not jump", 0},
		{"class set entry deleted", []string{"sh", "-c", "ipset del $(ipset list -n | grep '^relayfw-exit4_c0-') 203.0.113.10"}, "entries missing", 0},
		{"rule above the jump", []string{"ip6tables", "-I", "OUTPUT", "1", "-d", "2001:db8::99", "-j", "ACCEPT"}, "not the first", 0},
	}
}

// testIdempotentDriftRemove: apply twice is a no-op the second time, check
// sees hand edits, remove leaves what others installed as it was.
func testIdempotentDriftRemove(t *testing.T, b backend) {
	tn := newTestNet(t)
	run := b.runner(t, tn)
	env := b.env(t)
	flags := relayInputs(t, b.flag, "../examples/torrc")
	b.foreignSetup(t, tn.relay, env)
	before := b.snapshot(t, tn.relay, env)

	if code, out, errOut := run(append(flags, "check")...); code != 1 || !strings.Contains(out, "not installed") {
		t.Fatalf("check before apply: exit %d, %q %q; want 1, not installed", code, out, errOut)
	}
	if code, out, errOut := run(append(flags, "apply", "--detailed-exitcode")...); code != 2 || !strings.HasPrefix(out, "applied:") {
		t.Fatalf("first apply: exit %d, %q %q; want 2 and \"applied:\"", code, out, errOut)
	}
	afterFirst := b.snapshot(t, tn.relay, env)
	if code, out, _ := run(append(flags, "apply", "--detailed-exitcode")...); code != 0 || !strings.HasPrefix(out, "in sync, nothing changed") {
		t.Fatalf("second apply: exit %d, %q; want 0 and no change", code, out)
	}
	if afterSecond := b.snapshot(t, tn.relay, env); afterSecond != afterFirst {
		t.Fatalf("the no-op apply changed the kernel:\n%s", cmp.Diff(afterFirst, afterSecond))
	}
	if code, out, _ := run(append(flags, "check")...); code != 0 {
		t.Fatalf("check after apply: exit %d: %s", code, out)
	}
	for _, line := range strings.Split(before, "\n") {
		if line != "" && !strings.Contains(afterFirst, line) && !strings.HasPrefix(line, "*") && !strings.HasPrefix(line, ":") {
			t.Errorf("apply changed a foreign rule: %q is gone", line)
		}
	}

	for _, e := range b.handEdits() {
		shell(t, tn.relay, env, "", e.args...)
		wantCode := e.code
		if wantCode == 0 {
			wantCode = 1
		}
		code, out, _ := run(append(flags, "check")...)
		if code != wantCode || !strings.Contains(out, e.want) {
			t.Errorf("%s: check exit %d, %q; want %d mentioning %q", e.name, code, out, wantCode, e.want)
		}
		if code, out, errOut := run(append(flags, "apply", "--detailed-exitcode")...); code != 2 {
			t.Fatalf("%s: re-apply exit %d %q %q; want 2", e.name, code, out, errOut)
		}
		if code, out, _ := run(append(flags, "check")...); code != 0 {
			t.Fatalf("%s: check after re-apply: exit %d %q", e.name, code, out)
		}
		if e.name == "rule above the jump" {
			// The admin's own rule stays; relayfw only moved its jump.
			shell(t, tn.relay, env, "", "ip6tables", "-D", "OUTPUT", "-d", "2001:db8::99", "-j", "ACCEPT")
		}
	}

	if code, out, _ := run(append(flags, "remove")...); code != 0 || !strings.HasPrefix(out, "removed") {
		t.Fatalf("remove: exit %d %q", code, out)
	}
	if after := b.snapshot(t, tn.relay, env); after != before {
		t.Fatalf("remove did not restore the foreign ruleset byte for byte:\n%s", cmp.Diff(before, after))
	}
	if code, out, _ := run(append(flags, "remove")...); code != 0 || !strings.HasPrefix(out, "nothing to remove") {
		t.Fatalf("second remove: exit %d %q", code, out)
	}
}

// testEstablishedSurvives: an inbound session open before apply (the
// operator's SSH) keeps working when the host speaks first afterwards.
func testEstablishedSurvives(t *testing.T, b backend) {
	tn := newTestNet(t)
	run := b.runner(t, tn)
	flags := relayInputs(t, b.flag, "../examples/torrc")
	l, err := listenInNS(tn.relay, fmt.Sprintf("%s:2222", tn.relayAddr4))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan error, 1)
	var server net.Conn
	go func() {
		c, err := l.Accept()
		if err == nil {
			server = c
		}
		accepted <- err
	}()
	client, err := dialInNS(tn.net, fmt.Sprintf("%s:2222", tn.relayAddr4), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	exchange := func(stage string) {
		t.Helper()
		_ = client.SetDeadline(time.Now().Add(3 * time.Second))
		// The host speaks first, as sshd does after a command runs.
		if _, err := server.Write([]byte(stage)); err != nil {
			t.Fatalf("%s: relay write: %v", stage, err)
		}
		buf := make([]byte, len(stage))
		if _, err := io.ReadFull(client, buf); err != nil || string(buf) != stage {
			t.Fatalf("%s: the client did not get the relay's bytes: %q %v", stage, buf, err)
		}
		if _, err := client.Write([]byte(stage)); err != nil {
			t.Fatalf("%s: client write: %v", stage, err)
		}
		_ = server.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.ReadFull(server, buf); err != nil || string(buf) != stage {
			t.Fatalf("%s: the relay did not get the client's bytes: %v", stage, err)
		}
	}
	exchange("before")
	mustApply(t, run, flags)
	exchange("after-apply")
	exchange("still")
}

// testNotPermitted: without CAP_NET_ADMIN, apply exits 77 with one line
// and changes nothing.
func testNotPermitted(t *testing.T, b backend) {
	requireCommand(t, "setpriv")
	tn := newTestNet(t)
	env := b.env(t)
	// The unprivileged user must be able to read its inputs: the refusal
	// has to come from the kernel, not from a file permission.
	dir := reachableTempDir(t, "relayfw-noperm-")
	torrc, err := os.ReadFile("../examples/torrc")
	if err != nil {
		t.Fatal(err)
	}
	// With a User, nothing warns (a tor without one gives root the relay
	// links): the refusal is the only line.
	torrc = append(torrc, "User daemon\nDataDirectory "+torDataDir(t, "daemon", "")+"\n"...)
	if err := os.WriteFile(filepath.Join(dir, "torrc"), torrc, 0o644); err != nil {
		t.Fatal(err)
	}
	writeTestConfig(t, dir, testConsensus)
	flags := []string{"--backend", b.flag, "--torrc", filepath.Join(dir, "torrc"), "--config", filepath.Join(dir, "relayfw.toml")}
	before := b.snapshot(t, tn.relay, env)
	args := append([]string{"netns", "exec", tn.relay, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		"--inh-caps=-all", "--bounding-set=-all", relayfwBin}, append(flags, "apply")...)
	cmd := exec.Command("ip", args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 77 {
		t.Fatalf("apply without CAP_NET_ADMIN: %v %q; want exit 77", err, out)
	}
	if strings.Count(string(out), "\n") != 1 {
		t.Errorf("want one line, got %q", out)
	}
	if after := b.snapshot(t, tn.relay, env); after != before {
		t.Fatalf("a refused apply changed the kernel:\n%s", cmp.Diff(before, after))
	}
}

// consensusWith is a microdesc consensus listing relays at addr:orport.
func consensusWith(relays ...string) string {
	var b strings.Builder
	b.WriteString("network-status-version 3 microdesc\nvote-status consensus\n")
	for i, r := range relays {
		ap := netip.MustParseAddrPort(r)
		fmt.Fprintf(&b, "r relay%d AAAAAAAAAAAAAAAAAAAAAAAAAA%d 2026-11-25 11:00:00 ", i, i%10)
		if ap.Addr().Is4() {
			fmt.Fprintf(&b, "%s %d 0\n", ap.Addr(), ap.Port())
		} else {
			fmt.Fprintf(&b, "198.51.100.2 9001 0\na %s\n", ap)
		}
		b.WriteString("s Fast Running Valid\n")
	}
	return b.String()
}

// chainState is the backend's rules without the relay-link sets' content.
func (b backend) chainState(t *testing.T, ns string, env []string) string {
	t.Helper()
	if b.mode == "" {
		out, err := exec.Command("ip", "netns", "exec", ns, "nft", "-a", "list", "chain", "inet", "relayfw", "output").CombinedOutput()
		if err != nil {
			t.Fatalf("nft list chain: %v\n%s", err, out)
		}
		return countersRE.ReplaceAllString(string(out), "counter")
	}
	return b.snapshot(t, ns, env)
}

// testRelayLinks: relays of the consensus are reachable on their ORPorts
// by tor's user (daemon here) whatever the exit policy says, nothing else
// is, and refresh changes that without touching the rules.
func testRelayLinks(t *testing.T, b backend) {
	requireCommand(t, "setpriv")
	tn := newTestNet(t)
	run := b.runner(t, tn)
	env := b.env(t)
	dir := t.TempDir()
	cfg := writeTestConfig(t, dir, consensusWith("203.0.113.11:9001", "203.0.113.13:6881", "[2001:db8:1::11]:9001"))
	flags := []string{"--backend", b.flag, "--torrc", exampleTorrcAs(t, dir, "daemon"), "--config", cfg}
	mustApply(t, run, flags)

	expect := func(stage string, want map[string]outcome) {
		t.Helper()
		for dst, w := range want {
			if got := reaches(t, tn.relay, "daemon", dst); got != (w == connected) {
				t.Errorf("%s: tor's user to %s: connected=%v, want %s", stage, dst, got, w)
			}
		}
	}
	// The example policy rejects 9001 and 6881: only relay links reach them.
	expect("after apply", map[string]outcome{
		"203.0.113.11:9001": connected, "203.0.113.99:9001": refused,
		"203.0.113.13:6881": connected, "203.0.113.14:6881": refused, "203.0.113.11:6881": refused,
		"[2001:db8:1::11]:9001": connected, "[2001:db8:1::99]:9001": refused,
	})
	// They are tor's links: root does not get them.
	if o, _ := tn.probe(t, netip.MustParseAddr("203.0.113.11"), 9001); o != refused {
		t.Errorf("root to the relay link 203.0.113.11:9001: %s, want refused", o)
	}
	before := b.chainState(t, tn.relay, env)

	// The consensus changes: .11 leaves, .99 joins.
	if err := os.WriteFile(filepath.Join(dir, "tordata", "cached-microdesc-consensus"),
		[]byte(consensusWith("203.0.113.99:9001", "203.0.113.13:6881", "[2001:db8:1::11]:9001")), 0o644); err != nil {
		t.Fatal(err)
	}
	// Between the consensus and the refresh (the command relayfw-consensus.path
	// runs): the rules are in sync, the links behind; check exits 3.
	if code, out, _ := run(append(flags, "check")...); code != 3 || !strings.Contains(out, "1 to add, 1 to remove") {
		t.Errorf("check after the consensus changed: exit %d %q, want 3 and the counts", code, out)
	}
	var st struct {
		InSync           bool `json:"in_sync"`
		RelayLinksBehind int  `json:"relay_links_behind"`
	}
	if code, out, errOut := run(append(flags, "status", "--format", "json")...); code != 0 || json.Unmarshal([]byte(out), &st) != nil || !st.InSync || st.RelayLinksBehind != 2 {
		t.Errorf("status between consensus and refresh: exit %d %+v %s %s", code, st, out, errOut)
	}
	if code, out, _ := run(append(flags, "metrics")...); code != 0 || !strings.Contains(out, "\nrelayfw_relay_links_behind 2\n") || !strings.Contains(out, "\nrelayfw_in_sync 1\n") {
		t.Errorf("metrics between consensus and refresh: exit %d\n%s", code, out)
	}
	if code, out, _ := run(append(flags, "explain", "203.0.113.99:9001")...); code != 0 || !strings.Contains(out, "not yet in the kernel") {
		t.Errorf("explain of a relay the kernel lacks: exit %d %q", code, out)
	}
	code, out, errOut := run(append(flags, "refresh")...)
	if code != 0 || !strings.Contains(out, "1 added, 1 removed") {
		t.Fatalf("refresh: exit %d %q %q; want 1 added, 1 removed", code, out, errOut)
	}
	expect("after refresh", map[string]outcome{
		"203.0.113.11:9001": refused, "203.0.113.99:9001": connected,
		"203.0.113.13:6881": connected, "[2001:db8:1::11]:9001": connected,
	})
	if after := b.chainState(t, tn.relay, env); after != before {
		t.Errorf("refresh touched the rules:\n%s", cmp.Diff(before, after))
	}
	if code, out, _ := run(append(flags, "check")...); code != 0 {
		t.Errorf("check after refresh: exit %d %q", code, out)
	}
	if code, out, _ := run(append(flags, "refresh")...); code != 0 || !strings.Contains(out, "0 added, 0 removed") {
		t.Errorf("second refresh: exit %d %q", code, out)
	}
}

// testHostKeepsWorking: with the firewall applied, DNS over UDP reaches the
// configured resolver (and UDP elsewhere is refused), and IPv6 neighbour
// discovery still works after the neighbour cache is flushed.
func testHostKeepsWorking(t *testing.T, b backend) {
	tn := newTestNet(t)
	run := b.runner(t, tn)
	flags := relayInputs(t, b.flag, "../examples/torrc") // resolver: 198.51.100.2
	// A test resolver in net: echoes every datagram on 198.51.100.2:53 and :5353.
	for _, port := range []int{53, 5353} {
		serveUDP(t, tn.net, fmt.Sprintf("198.51.100.2:%d", port), func(q []byte) []byte { return q })
	}
	mustApply(t, run, flags)

	query := func(port int) error {
		var c net.Conn
		if err := inNS(tn.relay, func() (err error) {
			c, err = net.Dial("udp", fmt.Sprintf("198.51.100.2:%d", port))
			return err
		}); err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("dns?")); err != nil {
			return err
		}
		buf := make([]byte, 16)
		_, err := c.Read(buf)
		return err
	}
	if err := query(53); err != nil {
		t.Errorf("DNS over UDP to the resolver: %v", err)
	}
	if err := query(5353); err == nil {
		t.Errorf("UDP to port 5353 got an answer through the firewall")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("UDP to port 5353 timed out; want an ICMP reject at once")
	}

	// IPv6: forget the neighbour, then ping across the link.
	requireCommand(t, "ping")
	shell(t, tn.relay, nil, "", "ip", "-6", "neigh", "flush", "dev", "veth0")
	out, err := exec.Command("ip", "netns", "exec", tn.relay, "ping", "-6", "-c", "1", "-W", "3", tn.netAddr6.String()).CombinedOutput()
	if err != nil {
		neigh, _ := exec.Command("ip", "netns", "exec", tn.relay, "ip", "-6", "neigh").CombinedOutput()
		t.Errorf("ping across the link after a neighbour flush: %v\n%s\nneighbours: %s", err, out, neigh)
	}
}

// testExitSource: with OutboundBindAddressExit, the exit policy applies to
// packets from that address only; the host's other traffic meets only the
// relay-link and host rules.
func testExitSource(t *testing.T, b backend) {
	tn := newTestNet(t)
	run := b.runner(t, tn)
	// A second relay address, routed back by net.
	other := netip.MustParseAddr("198.51.100.250")
	shell(t, tn.relay, nil, "", "ip", "addr", "add", other.String()+"/32", "dev", "veth0")
	shell(t, tn.net, nil, "", "ip", "route", "add", other.String()+"/32", "dev", "veth1")
	torrc, err := os.ReadFile("../examples/torrc")
	if err != nil {
		t.Fatal(err)
	}
	flags := relayInputs(t, b.flag, string(torrc)+"OutboundBindAddressExit "+tn.relayAddr4.String()+"\n")
	mustApply(t, run, flags)
	dialFrom := func(src netip.Addr, dst string) outcome {
		var c net.Conn
		err := inNS(tn.relay, func() (err error) {
			d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
			c, err = d.Dial("tcp", dst)
			return err
		})
		switch {
		case err == nil:
			c.Close()
			return connected
		case errors.Is(err, syscall.ECONNREFUSED):
			return refused
		}
		t.Fatalf("dial %s from %s: %v", dst, src, err)
		return ""
	}
	for _, tc := range []struct {
		src  netip.Addr
		dst  string
		want outcome
	}{
		{tn.relayAddr4, "203.0.113.5:80", connected}, // exit traffic, policy accepts
		{tn.relayAddr4, "203.0.113.5:25", refused},   // exit traffic, policy rejects
		{other, "203.0.113.5:80", refused},           // not exit traffic: no exit policy for it
		{other, "198.51.100.2:9001", connected},      // relay link (testConsensus); no User: tor's user is root
	} {
		if got := dialFrom(tc.src, tc.dst); got != tc.want {
			t.Errorf("from %s to %s: %s, want %s", tc.src, tc.dst, got, tc.want)
		}
	}
}

// testExtraAllowance: an allow.extra entry with a user lets that user's
// sockets reach what the exit policy rejects, and nobody else's.
func testExtraAllowance(t *testing.T, b backend) {
	requireCommand(t, "setpriv")
	tn := newTestNet(t)
	run := b.runner(t, tn)
	dir := t.TempDir()
	cfg := writeTestConfig(t, dir, testConsensus, `
[[allow.extra]]
name = "nobody"
proto = "tcp"
to = ["203.0.113.0/25", "2001:db8:1::/48"]
ports = ["6881-6890", "25"]
user = "65534"
`)
	flags := []string{"--backend", b.flag, "--torrc", "../examples/torrc", "--config", cfg}
	mustApply(t, run, flags)
	connectAs := func(uid string, host string, port int) bool {
		script := fmt.Sprintf("exec 3<>/dev/tcp/%s/%d", host, port)
		cmd := exec.Command("ip", "netns", "exec", tn.relay, "setpriv", "--reuid="+uid, "--regid="+uid, "--clear-groups", "bash", "-c", script)
		return cmd.Run() == nil
	}
	for _, tc := range []struct {
		uid, host string
		port      int
		want      bool
	}{
		{"65534", "203.0.113.5", 6881, true},
		{"65534", "203.0.113.5", 25, true},
		{"65534", "2001:db8:1::5", 6885, true},
		{"65534", "203.0.113.200", 6881, false}, // outside the prefix
		{"65534", "203.0.113.5", 6891, false},   // outside the ports
		{"0", "203.0.113.5", 6881, false},       // another user: the exit policy decides
		{"65533", "2001:db8:1::5", 25, false},
	} {
		if got := connectAs(tc.uid, tc.host, tc.port); got != tc.want {
			t.Errorf("uid %s to %s port %d: connected=%v, want %v", tc.uid, tc.host, tc.port, got, tc.want)
		}
	}
	if code, out, _ := run(append(flags, "check")...); code != 0 {
		t.Errorf("check: exit %d %q", code, out)
	}
}

// TestLockSerializes: while another relayfw holds the namespace's lock,
// apply fails at once with exit 75 and changes nothing, or waits with
// --wait.
func TestLockSerializes(t *testing.T) {
	requireRoot(t)
	tn := newTestNet(t)
	flags := relayInputs(t, "nftables", "../examples/torrc")
	// relayfw names a namespace's lock by the namespace's cookie.
	var cookie uint64
	if err := inNS(tn.relay, func() error {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	lock := fmt.Sprintf("/run/relayfw/lock-netns%d", cookie)
	if err := os.MkdirAll("/run/relayfw", 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(lock, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	before := listRuleset(t, tn.relay)
	code, out, errOut := relayfwIn(t, tn.relay, append(flags, "apply")...)
	if code != 75 || out != "" || !strings.Contains(errOut, "another relayfw") {
		t.Fatalf("apply while locked: exit %d %q %q; want 75", code, out, errOut)
	}
	if after := listRuleset(t, tn.relay); after != before {
		t.Fatal("a refused apply changed the kernel")
	}
	unlocked := make(chan struct{})
	defer func() { <-unlocked }() // before f is closed
	go func() {
		defer close(unlocked)
		time.Sleep(300 * time.Millisecond)
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	}()
	if code, out, errOut := relayfwIn(t, tn.relay, append(flags, "--wait", "10s", "apply")...); code != 0 {
		t.Fatalf("apply --wait: exit %d %q %q", code, out, errOut)
	}
	<-unlocked

	// Readers wait for a change in progress instead of reading the kernel
	// in the middle of it, and then answer.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	var released atomic.Bool
	type answer struct {
		op       string
		code     int
		out      string
		released bool
	}
	answers := make(chan answer, 2)
	for _, op := range []string{"check", "status"} {
		go func() {
			code, out, errOut := relayfwIn(t, tn.relay, append(flags, op)...)
			answers <- answer{op, code, out + errOut, released.Load()}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	released.Store(true)
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	for range 2 {
		a := <-answers
		if a.code != 0 || !strings.Contains(a.out, "in sync") {
			t.Errorf("%s after the change: exit %d %q", a.op, a.code, a.out)
		}
		if !a.released {
			t.Errorf("%s answered while another relayfw held the lock", a.op)
		}
	}
}

// testStatusAndMetrics: the counters of each verdict class move with real
// traffic, status says in sync and when it last applied, and metrics
// writes the Prometheus textfile atomically.
func testStatusAndMetrics(t *testing.T, b backend) {
	tn := newTestNet(t)
	run := b.runner(t, tn)
	flags := relayInputs(t, b.flag, "../examples/torrc")
	mustApply(t, run, flags)
	// examples/torrc has no User: tor runs as root, whose sockets get the
	// relay link 198.51.100.2:9001.
	for _, dst := range []string{"203.0.113.5:80", "203.0.113.5:25", "198.51.100.2:9001"} {
		ap := netip.MustParseAddrPort(dst)
		tn.probe(t, ap.Addr(), ap.Port())
	}
	code, out, errOut := run(append(flags, "status", "--format", "json")...)
	if code != 0 {
		t.Fatalf("status: %d %s %s", code, out, errOut)
	}
	var st struct {
		Backend   string
		Installed bool
		InSync    bool       `json:"in_sync"`
		LastApply *time.Time `json:"last_apply"`
		Classes   map[string]struct{ Packets, Bytes uint64 }
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status json: %v\n%s", err, out)
	}
	if !st.Installed || !st.InSync || st.LastApply == nil || time.Since(*st.LastApply) > time.Minute {
		t.Errorf("status: %+v", st)
	}
	for _, class := range []string{"exit", "rejected_policy", "relay_link", "established"} {
		if st.Classes[class].Packets == 0 {
			t.Errorf("class %s counted no packets: %+v", class, st.Classes)
		}
	}
	prom := filepath.Join(t.TempDir(), "relayfw.prom")
	if code, out, errOut := run(append(flags, "metrics", "--output", prom)...); code != 0 {
		t.Fatalf("metrics: %d %s %s", code, out, errOut)
	}
	text, err := os.ReadFile(prom)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^relayfw_packets_total\{class="exit",rule="exit4"\} [1-9]`).Match(text) ||
		!strings.Contains(string(text), "relayfw_in_sync 1\n") {
		t.Errorf("metrics:\n%s", text)
	}
	if entries, _ := os.ReadDir(filepath.Dir(prom)); len(entries) != 1 {
		t.Errorf("metrics left temporary files: %v", entries)
	}
}

// testInstancesByUser: two exit instances on one host, each with its own
// User and policy. In the kernel, each user's sockets exit where its own
// instance's policy allows (explain --instance, the model), and sockets
// of other users (root) where neither does.
func testInstancesByUser(t *testing.T, b backend) {
	requireCommand(t, "setpriv")
	tn := newTestNet(t)
	run := b.runner(t, tn)
	dir := t.TempDir()
	cfg := writeTestConfig(t, dir, testConsensus)
	torrcs := map[string]string{
		"a": "ORPort 9001\nExitRelay 1\nIPv6Exit 1\nUser daemon\nDataDirectory " + torDataDir(t, "daemon", testConsensus) + "\n" +
			"ExitPolicy reject 203.0.113.0/25:*,accept *:80,accept *:8080,accept6 [2001:db8::]/32:22,reject *:*\n",
		"b": "ORPort 9002\nExitRelay 1\nIPv6Exit 1\nUser nobody\nDataDirectory " + torDataDir(t, "nobody", testConsensus) + "\n" +
			"ExitPolicy accept *:443,accept 203.0.113.0/24:1-1024,reject *:*\n",
	}
	flags := []string{"--backend", b.flag, "--config", cfg}
	for _, name := range []string{"a", "b"} {
		path := filepath.Join(dir, name, "torrc")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(torrcs[name]), 0o644); err != nil {
			t.Fatal(err)
		}
		flags = append(flags, "--torrc", path)
	}
	mustApply(t, run, flags)
	if code, out, errOut := run(append(flags, "check")...); code != 0 {
		t.Fatalf("check after apply: exit %d: %s%s", code, out, errOut)
	}

	r := rand.New(rand.NewPCG(7, 11))
	targets := append(probeTargets(r, 12, false), probeTargets(r, 8, true)...)
	targets = append(targets, netip.MustParseAddrPort("203.0.113.200:22"), netip.MustParseAddrPort("203.0.113.5:80"),
		netip.MustParseAddrPort("[2001:db8:1::5]:22"), netip.MustParseAddrPort("198.51.100.9:443"))
	for _, c := range []struct{ instance, user string }{{"a", "daemon"}, {"b", "nobody"}} {
		want := modelVerdicts(t, tn, append(append([]string{}, flags...), "--instance", c.instance), targets)
		if !slices.Contains(want, "accept") || !slices.Contains(want, "reject") {
			t.Fatalf("instance %s: the targets must include accepted and rejected ones: %v", c.instance, want)
		}
		for i, tg := range targets {
			conn, err := dialAsIn(t, tn.relay, c.user, "", tg)
			if conn != nil {
				conn.Close()
			}
			got := "reject"
			if err == nil {
				got = "accept"
			}
			if got != want[i] {
				t.Errorf("instance %s (user %s) to %s: kernel %s, model %s (%v)", c.instance, c.user, tg, got, want[i], err)
			}
		}
	}
	// root runs neither instance: its TCP to a port both policies accept
	// for someone is refused, and so is its TCP to a relay link, which
	// both instances' users reach.
	for _, tg := range []string{"203.0.113.200:80", "198.51.100.9:443", "198.51.100.2:9001"} {
		if o, _ := tn.probe(t, netip.MustParseAddrPort(tg).Addr(), netip.MustParseAddrPort(tg).Port()); o != refused {
			t.Errorf("root to %s: %s, want refused", tg, o)
		}
	}
	for _, user := range []string{"daemon", "nobody"} {
		if !reaches(t, tn.relay, user, "198.51.100.2:9001") {
			t.Errorf("%s to the relay link 198.51.100.2:9001: refused", user)
		}
	}
}

// installedIn says which backends hold relayfw objects in ns.
func installedIn(t *testing.T, ns string, env []string) (nftables, iptables bool) {
	t.Helper()
	nftables = exec.Command("ip", "netns", "exec", ns, "nft", "list", "table", "inet", "relayfw").Run() == nil
	for _, tool := range []string{"iptables", "ip6tables"} {
		cmd := exec.Command("ip", "netns", "exec", ns, tool, "-S", "RELAYFW-OUTPUT")
		cmd.Env = env
		iptables = iptables || cmd.Run() == nil
	}
	out, _ := exec.Command("ip", "netns", "exec", ns, "ipset", "list", "-n").Output()
	return nftables, iptables || strings.Contains(string(out), "relayfw-")
}

// testSecondBackend: applying with the other backend removes this one's
// firewall; plain status, check and remove follow the backend of the last
// apply; with a firewall in both (put there by hand), plain remove
// removes both, and says so.
func testSecondBackend(t *testing.T, b backend) {
	tn := newTestNet(t)
	env := b.env(t)
	run := b.runner(t, tn)
	flags := relayInputs(t, b.flag, "../examples/torrc")
	plain := slices.Clone(flags[2:]) // without --backend
	other := "nftables"
	if b.flag == "nftables" {
		other = "iptables"
	}
	mustApply(t, run, flags)
	mustApply(t, run, append([]string{"--backend", other}, plain...))
	if n, i := installedIn(t, tn.relay, env); n != (other == "nftables") || i != (other == "iptables") {
		t.Fatalf("after apply with %s over %s: nftables %v, iptables %v; want only %s", other, b.flag, n, i, other)
	}
	if code, out, _ := run(append(plain, "status")...); code != 0 || !strings.Contains(out, "backend:    "+other) || !strings.Contains(out, "installed:  true") {
		t.Errorf("plain status after apply with %s: exit %d\n%s", other, code, out)
	}
	if code, out, _ := run(append(plain, "check")...); code != 0 || !strings.Contains(out, "("+other) {
		t.Errorf("plain check: exit %d %q", code, out)
	}
	if code, out, _ := run(append(plain, "remove")...); code != 0 || !strings.HasPrefix(out, "removed ("+other) || strings.Count(out, "\n") != 1 {
		t.Errorf("plain remove: exit %d %q", code, out)
	}
	if n, i := installedIn(t, tn.relay, env); n || i {
		t.Fatalf("after plain remove: nftables %v, iptables %v", n, i)
	}
	if code, out, _ := run(append(plain, "remove")...); code != 0 || !strings.HasPrefix(out, "nothing to remove (") {
		t.Errorf("second remove: exit %d %q", code, out)
	}

	// Both at once, the second loaded by hand from print: status names it,
	// plain remove removes both.
	mustApply(t, run, flags)
	code, text, errOut := run(append([]string{"--backend", other}, append(plain, "print", "--format", map[string]string{"nftables": "nft", "iptables": "iptables"}[other])...)...)
	if code != 0 {
		t.Fatalf("print: %d %s", code, errOut)
	}
	if other == "nftables" {
		tn.nft(t, tn.relay, text)
	} else {
		_, ipsets, _ := run(append(plain, "print", "--format", "ipset")...)
		for _, c := range []struct {
			tool, input string
		}{{"ipset", ipsets}, {"iptables-restore", text}} {
			args := []string{"netns", "exec", tn.relay, c.tool}
			if c.tool == "ipset" {
				args = append(args, "restore", "-exist")
			} else {
				args = append(args, "--noflush")
			}
			cmd := exec.Command("ip", args...)
			cmd.Env, cmd.Stdin = env, strings.NewReader(c.input)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", c.tool, err, out)
			}
		}
	}
	if code, out, _ := run(append(plain, "status")...); code != 0 || !strings.Contains(out, "relayfw objects in "+other+" too") {
		t.Errorf("status with both: exit %d\n%s", code, out)
	}
	code, out, _ := run(append(plain, "remove")...)
	if code != 0 || !strings.Contains(out, "removed (nftables)") || !strings.Contains(out, "removed (iptables") {
		t.Errorf("plain remove with both: exit %d %q", code, out)
	}
	if n, i := installedIn(t, tn.relay, env); n || i {
		t.Errorf("after plain remove of both: nftables %v, iptables %v", n, i)
	}
}

// testLocalResolver: with resolv.conf on 127.0.0.1, a program named
// unbound (a copy of sleep) run by nobody gets nobody DNS to the outside:
// only allow.resolver_user (here daemon) or a resolver package's service
// user reaches any name server.
func testLocalResolver(t *testing.T, b backend) {
	requireCommand(t, "setpriv")
	tn := newTestNet(t)
	run := b.runner(t, tn)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	unbound := filepath.Join(dir, "unbound")
	if err := os.WriteFile(unbound, data, 0o755); err != nil {
		t.Fatal(err)
	}
	fake := exec.Command("setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", unbound, "300")
	if err := fake.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fake.Process.Kill(); _ = fake.Wait() })
	resolvConf := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolvConf, []byte("nameserver 127.0.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	torrc := filepath.Join(dir, "torrc")
	if err := os.WriteFile(torrc, []byte("ORPort 9001\nExitRelay 1\nExitPolicy accept *:80,reject *:*\nServerDNSResolvConfFile "+resolvConf+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	serveUDP(t, tn.net, "198.51.100.2:53", func(q []byte) []byte { return q })
	// dns says whether user reaches TCP 53 on a documentation address and
	// gets an answer over UDP 53 from net.
	dns := func(user string) (tcp, udp bool) {
		conn, err := dialAsIn(t, tn.relay, user, "", netip.MustParseAddrPort("203.0.113.53:53"))
		if conn != nil {
			conn.Close()
		}
		args := []string{"netns", "exec", tn.relay}
		if user != "root" {
			args = append(args, "setpriv", "--reuid", user, "--regid", "nogroup", "--clear-groups")
		}
		args = append(args, "bash", "-c", "exec 3<>/dev/udp/198.51.100.2/53; printf q >&3; timeout 3 head -c1 <&3")
		out, _ := exec.Command("ip", args...).Output()
		return err == nil, string(out) == "q"
	}
	for _, phase := range []struct {
		name, config string
		allowed      string // the user with DNS anywhere; "": none
	}{
		{"a program named unbound run by nobody", "", ""},
		{"allow.resolver_user", "[allow]\nresolver_user = \"daemon\"\n", "daemon"},
	} {
		cfg := filepath.Join(dir, "relayfw.toml")
		if err := os.WriteFile(cfg, []byte(phase.config), 0o644); err != nil {
			t.Fatal(err)
		}
		flags := []string{"--backend", b.flag, "--torrc", torrc, "--config", cfg}
		mustApply(t, run, flags)
		for _, user := range []string{"nobody", "daemon", "root"} {
			want := user == phase.allowed
			if tcp, udp := dns(user); tcp != want || udp != want {
				t.Errorf("%s: DNS as %s: TCP %v, UDP %v, want %v", phase.name, user, tcp, udp, want)
			}
		}
		if phase.allowed == "" {
			continue
		}
		if code, out, _ := run(append(flags, "explain", "--proto", "udp", "--user", phase.allowed, "203.0.113.53:53")...); code != 0 || !strings.Contains(out, "dns-resolver-udp") {
			t.Errorf("explain --user %s: exit %d %q", phase.allowed, code, out)
		}
	}
}

// testUpdatesForApt: under a policy that rejects 443, apt's user still
// reaches TCP 80 and 443 (allow.updates, on by default); root does not.
func testUpdatesForApt(t *testing.T, b backend) {
	requireCommand(t, "setpriv")
	if _, err := exec.Command("id", "-u", "_apt").Output(); err != nil {
		t.Fatal("no _apt user: this test needs Debian's apt, which creates it")
	}
	tn := newTestNet(t)
	run := b.runner(t, tn)
	flags := relayInputs(t, b.flag, "ORPort 9001\nExitRelay 1\nExitPolicy accept *:22,reject *:*\n")
	mustApply(t, run, flags)
	for _, c := range []struct {
		user string
		dst  string
		ok   bool
	}{
		{"_apt", "203.0.113.5:443", true}, {"_apt", "[2001:db8:1::5]:80", true}, {"_apt", "203.0.113.5:8080", false},
		{"root", "203.0.113.5:443", false}, {"nobody", "203.0.113.5:443", false},
	} {
		conn, err := dialAsIn(t, tn.relay, c.user, "", netip.MustParseAddrPort(c.dst))
		if conn != nil {
			conn.Close()
		}
		if (err == nil) != c.ok {
			t.Errorf("%s to %s: %v, want connected=%v", c.user, c.dst, err, c.ok)
		}
	}
}

// testDryRun: apply --dry-run says what would change, in an operator's
// terms, and changes nothing in the kernel; apply then prints the same.
func testDryRun(t *testing.T, b backend) {
	tn := newTestNet(t)
	run := b.runner(t, tn)
	env := b.env(t)
	flagsA := relayInputs(t, b.flag, "ORPort 9001\nExitRelay 1\nIPv6Exit 1\nExitPolicyRejectPrivate 0\nExitPolicy accept *:80,accept *:443,reject *:*\n")
	flagsB := relayInputs(t, b.flag, "ORPort 9001\nExitRelay 1\nIPv6Exit 1\nExitPolicyRejectPrivate 0\nExitPolicy reject 203.0.113.0/24:*,accept *:443,accept *:8080-8081,reject *:*\n")

	code, out, errOut := run(append(flagsA, "apply", "--dry-run", "--detailed-exitcode")...)
	if code != 2 || !strings.Contains(out, "+ firewall: installed for the first time") {
		t.Fatalf("dry run before any apply: exit %d %q %q", code, out, errOut)
	}
	if n, i := installedIn(t, tn.relay, env); n || i {
		t.Fatal("a dry run installed something")
	}
	mustApply(t, run, flagsA)
	before := b.snapshot(t, tn.relay, env)
	code, out, _ = run(append(flagsB, "apply", "--dry-run", "--detailed-exitcode")...)
	for _, want := range []string{
		"+ exit4: TCP 8080-8081 to 0.0.0.0-203.0.112.255, 203.0.114.0-255.255.255.255",
		"- exit4: TCP 80 to 0.0.0.0-203.0.112.255, 203.0.114.0-255.255.255.255",
		"- exit4: TCP 80,443 to 203.0.113.0/24",
		"+ exit6: TCP 8080-8081 to ::/0",
		"- exit6: TCP 80 to ::/0",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run of B lacks %q:\n%s", want, out)
		}
	}
	if code != 2 {
		t.Errorf("dry run of B: exit %d, want 2", code)
	}
	if after := b.snapshot(t, tn.relay, env); after != before {
		t.Fatalf("the dry run changed the kernel:\n%s", cmp.Diff(before, after))
	}
	if code, out, _ := run(append(flagsA, "apply", "--dry-run", "--detailed-exitcode")...); code != 0 || !strings.Contains(out, "in sync, nothing would change") {
		t.Errorf("dry run of what is installed: exit %d %q", code, out)
	}
	// A rule relayfw did not install: shown as a rule, to be removed.
	hand := []string{"nft", "add rule inet relayfw output tcp dport 25 accept"}
	want := "tcp dport 25 accept"
	if b.mode != "" {
		hand = []string{"iptables", "-I", "RELAYFW-OUTPUT", "3", "-p", "tcp", "--dport", "25", "-j", "ACCEPT"}
		want = "-A RELAYFW-OUTPUT -p tcp -m tcp --dport 25 -j ACCEPT"
	}
	shell(t, tn.relay, env, "", hand...)
	if code, out, _ := run(append(flagsA, "apply", "--dry-run", "--detailed-exitcode")...); code != 2 || !strings.Contains(out, want) {
		t.Errorf("dry run with a hand-made rule: exit %d %q, want 2 showing %q", code, out, want)
	}
	// The real apply says the same as the dry run.
	_, dry, _ := run(append(flagsB, "apply", "--dry-run")...)
	code, out, errOut = run(append(flagsB, "apply")...)
	if code != 0 || !strings.HasPrefix(out, "applied:") {
		t.Fatalf("apply B: %d %q %q", code, out, errOut)
	}
	for _, l := range strings.Split(strings.TrimSpace(dry), "\n")[1:] {
		if !strings.Contains(out, strings.TrimSpace(l)) {
			t.Errorf("apply does not print the dry run's %q:\n%s", l, out)
		}
	}
}

// testNonExit: a middle relay's firewall lets out no exit traffic, and
// apply and status say so plainly; relay links still get through.
func testNonExit(t *testing.T, b backend) {
	tn := newTestNet(t)
	run := b.runner(t, tn)
	dir := t.TempDir()
	cfg := writeTestConfig(t, dir, consensusWith("203.0.113.11:9001"))
	torrc := filepath.Join(dir, "torrc")
	if err := os.WriteFile(torrc, []byte("ORPort 9001\nExitRelay 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--backend", b.flag, "--torrc", torrc, "--config", cfg}
	code, out, errOut := run(append(flags, "apply")...)
	if code != 0 || !strings.Contains(out, "not an exit (a non-exit relay (guard or middle))") || !strings.Contains(out, "the host still reaches the relay links") {
		t.Fatalf("apply of a middle: exit %d %q %q", code, out, errOut)
	}
	if code, out, _ := run(append(flags, "status")...); code != 0 || !strings.Contains(out, "exit:       no — not an exit") {
		t.Errorf("status of a middle: exit %d\n%s", code, out)
	}
	// No User: tor runs as root, whose sockets get the relay links.
	for dst, want := range map[string]outcome{"203.0.113.5:80": refused, "203.0.113.5:443": refused, "203.0.113.11:9001": connected} {
		ap := netip.MustParseAddrPort(dst)
		if o, _ := tn.probe(t, ap.Addr(), ap.Port()); o != want {
			t.Errorf("a middle relay to %s: %s, want %s", dst, o, want)
		}
	}
}

// exampleTorrcAs writes examples/torrc with User user into dir and returns
// its path: the relay links are then that user's (and no command warns
// that root gets them).
func exampleTorrcAs(t *testing.T, dir, user string) string {
	t.Helper()
	example, err := os.ReadFile("../examples/torrc")
	if err != nil {
		t.Fatal(err)
	}
	torrc := filepath.Join(dir, "torrc")
	text := append(example, "User "+user+"\nDataDirectory "+torDataDir(t, user, "")+"\n"...)
	if err := os.WriteFile(torrc, text, 0o644); err != nil {
		t.Fatal(err)
	}
	return torrc
}
