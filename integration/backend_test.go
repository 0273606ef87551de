package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// testConfig is relayfw.toml for the tests.
const testConfig = "[allow]\nresolvers = [\"198.51.100.2\"]\n"

// backends are the firewall backends the suite runs against; every one
// must pass the same tests.
var backends = []string{"nftables"}

// relayfwIn runs relayfw in a namespace.
func relayfwIn(t *testing.T, ns string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, relayfwBin}, args...)...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String(), errOut.String()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, out.String(), errOut.String()
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
	cfg := filepath.Join(dir, "relayfw.toml")
	// The resolver is net's link address, which probes never target: DNS
	// to it is a host allowance, not the exit policy's decision.
	if err := os.WriteFile(cfg, []byte(testConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"--backend", backend, "--torrc", path, "--config", cfg}
}

func mustApply(t *testing.T, tn *testNet, flags []string) {
	t.Helper()
	code, out, errOut := relayfwIn(t, tn.relay, append(flags, "apply")...)
	if code != 0 {
		t.Fatalf("apply: exit %d: %s%s", code, out, errOut)
	}
}

func TestBackends(t *testing.T) {
	requireRoot(t)
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			t.Run("ExamplePolicy", func(t *testing.T) { testExamplePolicy(t, backend) })
			t.Run("KernelEqualsModel", func(t *testing.T) { testKernelEqualsModel(t, backend) })
			t.Run("IdempotentDriftRemove", func(t *testing.T) { testIdempotentDriftRemove(t, backend) })
			t.Run("EstablishedSessionSurvives", func(t *testing.T) { testEstablishedSurvives(t, backend) })
			t.Run("NotPermitted", func(t *testing.T) { testNotPermitted(t, backend) })
		})
	}
}

// testExamplePolicy: with examples/torrc, TCP to 80/443/22/993 connects and
// to 25/6881/9001 is refused at once, over IPv4 and IPv6.
func testExamplePolicy(t *testing.T, backend string) {
	tn := newTestNet(t)
	flags := relayInputs(t, backend, "../examples/torrc")
	// Before apply everything connects: the network works.
	for _, dst := range []string{"203.0.113.5", "2001:db8:1::5"} {
		if o, _ := tn.probe(t, netip.MustParseAddr(dst), 25); o != connected {
			t.Fatalf("before apply, %s:25 %s; the test network is broken", dst, o)
		}
	}
	mustApply(t, tn, flags)
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
func testKernelEqualsModel(t *testing.T, backend string) {
	policies := []struct{ name, torrc string }{
		{"example", "../examples/torrc"},
		{"default", "ExitRelay 1\nIPv6Exit 1\nAddress 203.0.113.10\nORPort 443\n"},
		{"reduced", "ExitRelay 1\nReducedExitPolicy 1\nORPort 443\n"},
		{"ipv6-exit", "ExitRelay 1\nIPv6Exit 1\nExitPolicyRejectPrivate 0\nORPort 443\n" +
			"ExitPolicy reject 203.0.113.0/25:*,accept 203.0.113.0/24:1-1024,accept 192.0.2.0/24:443,reject 198.51.100.128/26:80\n" +
			"ExitPolicy accept 10.0.0.0/8:22,accept *4:80,reject6 [2001:db8:1:2::]/64:*,accept6 [2001:db8:1::]/48:*\n" +
			"ExitPolicy accept6 [3fff::]/24:20-25,accept6 [fc00::]/7:443,reject *:*\n"},
	}
	const perFamily = 500
	seed := uint64(time.Now().UnixNano())
	t.Logf("probe seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 99))
	tn := newTestNet(t)
	for _, pol := range policies {
		t.Run(pol.name, func(t *testing.T) {
			flags := relayInputs(t, backend, pol.torrc)
			mustApply(t, tn, flags)
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

var countersRE = regexp.MustCompile(`counter packets \d+ bytes \d+`)

func listRuleset(t *testing.T, ns string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list ruleset: %v\n%s", err, out)
	}
	return countersRE.ReplaceAllString(string(out), "counter")
}

// testIdempotentDriftRemove: apply twice is a no-op the second time, check
// sees a hand edit, remove leaves what others installed as it was.
func testIdempotentDriftRemove(t *testing.T, backend string) {
	tn := newTestNet(t)
	flags := relayInputs(t, backend, "../examples/torrc")
	tn.nft(t, tn.relay, `table inet filter {
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
`)
	before := listRuleset(t, tn.relay)

	if code, out, errOut := relayfwIn(t, tn.relay, append(flags, "check")...); code != 1 || !strings.Contains(out, "not installed") {
		t.Fatalf("check before apply: exit %d, %q %q; want 1, not installed", code, out, errOut)
	}
	if code, out, errOut := relayfwIn(t, tn.relay, append(flags, "apply", "--detailed-exitcode")...); code != 2 || !strings.HasPrefix(out, "applied:") {
		t.Fatalf("first apply: exit %d, %q %q; want 2 and \"applied:\"", code, out, errOut)
	}
	afterFirst := listRuleset(t, tn.relay)
	if code, out, _ := relayfwIn(t, tn.relay, append(flags, "apply", "--detailed-exitcode")...); code != 0 || !strings.HasPrefix(out, "in sync, nothing changed") {
		t.Fatalf("second apply: exit %d, %q; want 0 and no change", code, out)
	}
	if afterSecond := listRuleset(t, tn.relay); afterSecond != afterFirst {
		t.Fatalf("the no-op apply changed the kernel:\n%s", cmp.Diff(afterFirst, afterSecond))
	}
	if code, out, _ := relayfwIn(t, tn.relay, append(flags, "check")...); code != 0 {
		t.Fatalf("check after apply: exit %d: %s", code, out)
	}
	if !strings.Contains(afterFirst, `tcp dport 22 counter accept comment "admin ssh"`) || !strings.Contains(afterFirst, "DOCKER-USER") {
		t.Fatalf("apply touched the foreign tables:\n%s", afterFirst)
	}

	edits := []struct{ name, nft, want string }{
		{"added rule", "add rule inet relayfw output tcp dport 25 accept", "unexpected rule"},
		{"added element", "add element inet relayfw exit4 { 203.0.113.99 . 25 }", "unexpected elements"},
		{"deleted set", "flush chain inet relayfw output; delete set inet relayfw exit6", "set exit6 is missing"},
		{"deleted table", "delete table inet relayfw", "not installed"},
	}
	for _, e := range edits {
		if backend != "nftables" {
			break
		}
		tn.nft(t, tn.relay, e.nft)
		code, out, _ := relayfwIn(t, tn.relay, append(flags, "check")...)
		if code != 1 || !strings.Contains(out, e.want) {
			t.Errorf("%s: check exit %d, %q; want 1 mentioning %q", e.name, code, out, e.want)
		}
		if code, out, errOut := relayfwIn(t, tn.relay, append(flags, "apply", "--detailed-exitcode")...); code != 2 {
			t.Fatalf("%s: re-apply exit %d %q %q; want 2", e.name, code, out, errOut)
		}
		if code, out, _ := relayfwIn(t, tn.relay, append(flags, "check")...); code != 0 {
			t.Fatalf("%s: check after re-apply: exit %d %q", e.name, code, out)
		}
	}

	if code, out, _ := relayfwIn(t, tn.relay, append(flags, "remove")...); code != 0 || !strings.HasPrefix(out, "removed") {
		t.Fatalf("remove: exit %d %q", code, out)
	}
	if after := listRuleset(t, tn.relay); after != before {
		t.Fatalf("remove did not restore the foreign ruleset byte for byte:\n%s", cmp.Diff(before, after))
	}
	if code, out, _ := relayfwIn(t, tn.relay, append(flags, "remove")...); code != 0 || !strings.HasPrefix(out, "nothing to remove") {
		t.Fatalf("second remove: exit %d %q", code, out)
	}
}

// testEstablishedSurvives: an inbound session open before apply (the
// operator's SSH) keeps working when the host speaks first afterwards.
func testEstablishedSurvives(t *testing.T, backend string) {
	tn := newTestNet(t)
	flags := relayInputs(t, backend, "../examples/torrc")
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
	mustApply(t, tn, flags)
	exchange("after-apply")
	exchange("still")
}

// testNotPermitted: without CAP_NET_ADMIN, apply exits 77 with one line
// and changes nothing.
func testNotPermitted(t *testing.T, backend string) {
	requireCommand(t, "setpriv")
	tn := newTestNet(t)
	// The unprivileged user must be able to read its inputs: the refusal
	// has to come from the kernel, not from a file permission.
	dir, err := os.MkdirTemp("", "relayfw-noperm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	torrc, err := os.ReadFile("../examples/torrc")
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"torrc": string(torrc), "relayfw.toml": testConfig} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--backend", backend, "--torrc", filepath.Join(dir, "torrc"), "--config", filepath.Join(dir, "relayfw.toml")}
	before := listRuleset(t, tn.relay)
	args := append([]string{"netns", "exec", tn.relay, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		"--inh-caps=-all", "--bounding-set=-all", relayfwBin}, append(flags, "apply")...)
	cmd := exec.Command("ip", args...)
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 77 {
		t.Fatalf("apply without CAP_NET_ADMIN: %v %q; want exit 77", err, out)
	}
	if strings.Count(string(out), "\n") != 1 {
		t.Errorf("want one line, got %q", out)
	}
	if after := listRuleset(t, tn.relay); after != before {
		t.Fatalf("a refused apply changed the kernel:\n%s", cmp.Diff(before, after))
	}
}
