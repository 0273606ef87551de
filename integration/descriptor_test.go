package integration

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// descriptorSlack is how much shorter than relayfw's estimate tor's
// descriptor may be: what tor decides at run time, counted by relayfw at
// its longest (uptime 7 digits more, observed bandwidth 9 digits more, the
// overload-general line of 39 bytes), for a relay that has just started.
const descriptorSlack = 7 + 9 + 39

// TestDescriptorSize: the real tor builds its server descriptor for an
// exit policy of a few thousand entries, in a namespace with only lo
// (PublishServerDescriptor 0: it is fetched from the relay's own DirPort,
// /tor/server/authority, as an authority would receive it); relayfw's
// estimate, in the warning policy, print and apply --dry-run give, is that
// size up to descriptorSlack bytes more, and the policy lines are tor's.
// The example torrc's policy gets no warning (cmd/relayfw's
// TestDescriptorWarning does the same for policy and print). About four
// seconds: relayfw runs while tor starts, and tor builds its descriptor as
// soon as its keys exist.
func TestDescriptorSize(t *testing.T) {
	requireRoot(t)
	requireCommand(t, "tor")
	ns := newIsolatedNS(t, "rfwdesc")
	addrsOnLo(t, ns, "198.51.100.7/32")
	dir := t.TempDir()

	const seed = 2024
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, seed))
	var entries []string
	seen := map[[3]int]bool{}
	for len(seen) < 2600 {
		b := [3]int{11 + r.IntN(90), r.IntN(256), r.IntN(256)} // 11-100: no private network, not the relay
		if seen[b] {
			continue
		}
		seen[b] = true
		if len(seen)%4 == 0 { // a quarter as halves that merge
			entries = append(entries, fmt.Sprintf("reject %d.%d.%d.0/25:*", b[0], b[1], b[2]), fmt.Sprintf("reject %d.%d.%d.128/25:*", b[0], b[1], b[2]))
		} else {
			entries = append(entries, fmt.Sprintf("reject %d.%d.%d.0/24:*", b[0], b[1], b[2]))
		}
	}
	policy := strings.Join(entries, ",") + ",accept *:80,accept *:443,reject *:*"
	torrc := filepath.Join(dir, "torrc")
	text := strings.Join([]string{
		"DataDirectory " + filepath.Join(dir, "data"),
		"Log notice file " + filepath.Join(dir, "notice.log"),
		"Nickname descsize",
		"ContactInfo relayfw-test@example.org",
		"MyFamily $0123456789ABCDEF0123456789ABCDEF01234567,$89ABCDEF0123456789ABCDEF0123456789ABCDEF",
		"ORPort 198.51.100.7:9001", "Address 198.51.100.7", "DirPort 198.51.100.7:9030",
		"SocksPort 0", "AssumeReachable 1", "PublishServerDescriptor 0", "ExitRelay 1",
		"ExitPolicy " + policy,
	}, "\n") + "\n"
	if err := os.WriteFile(torrc, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	tor := exec.Command("ip", "netns", "exec", ns, "tor", "-f", torrc, "--defaults-torrc", os.DevNull)
	if err := tor.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = tor.Process.Kill()
		_ = tor.Wait()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "notice.log"))
			t.Logf("tor's log:\n%s", log)
		}
	})
	flags := relayInputs(t, "nftables", torrc)
	sizeRE := regexp.MustCompile(`its server descriptor would be about ([0-9,]+) bytes`)
	// relayfw runs while tor starts; their outputs are compared after.
	type run struct {
		command        []string
		stdout, stderr string
	}
	var runs []run
	for _, command := range [][]string{{"policy"}, {"print"}, {"apply", "--dry-run"}} {
		code, stdout, stderr := relayfwIn(t, ns, append(flags, command...)...)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", command[0], code, stderr)
		}
		runs = append(runs, run{command, stdout, stderr})
	}
	example := relayInputs(t, "nftables", "../examples/torrc")
	if code, _, stderr := relayfwIn(t, ns, append(example, "apply", "--dry-run")...); code != 0 || strings.Contains(stderr, "descriptor") {
		t.Errorf("example torrc, apply --dry-run: exit %d, stderr %s; want no descriptor warning", code, stderr)
	}
	var desc string
	waitFor(t, 60*time.Second, "tor's server descriptor on its DirPort", func() bool {
		desc = fetchOwnDescriptor(ns, "198.51.100.7:9030")
		return desc != ""
	})
	// The authorities count up to the signature's last newline.
	desc = strings.TrimRight(desc, "\n") + "\n"

	for _, rn := range runs {
		command, stdout, stderr := rn.command, rn.stdout, rn.stderr
		m := sizeRE.FindStringSubmatch(stderr)
		if m == nil || strings.Contains(stdout, "descriptor") {
			t.Fatalf("%s: no warning on stderr, or one on stdout:\nstderr %s\nstdout %.500s", command[0], stderr, stdout)
		}
		estimate, _ := strconv.Atoi(strings.ReplaceAll(m[1], ",", ""))
		if slack := estimate - len(desc); slack < 0 || slack > descriptorSlack {
			t.Errorf("%s: estimate %d bytes, tor's descriptor %d: want 0 to %d bytes over", command[0], estimate, len(desc), descriptorSlack)
		}
		if !strings.Contains(stderr, "would save ") {
			t.Errorf("%s: the warning does not say what merging saves: %s", command[0], stderr)
		}
		t.Logf("%s: estimate %d bytes, tor's descriptor %d bytes", command[0], estimate, len(desc))
		if command[0] == "policy" {
			var ours, tors []string
			for _, l := range strings.Split(stdout, "\n") {
				if strings.HasPrefix(l, "accept ") || strings.HasPrefix(l, "reject ") {
					ours = append(ours, l)
				}
			}
			for _, l := range strings.Split(desc, "\n") {
				if strings.HasPrefix(l, "accept ") || strings.HasPrefix(l, "reject ") {
					tors = append(tors, l)
				}
			}
			if strings.Join(ours, "\n") != strings.Join(tors, "\n") {
				t.Errorf("relayfw's IPv4 policy (%d lines) differs from tor's descriptor's (%d lines)", len(ours), len(tors))
			}
		}
	}
}

// fetchOwnDescriptor asks a relay's DirPort for its own server descriptor
// ("" until it has one).
func fetchOwnDescriptor(ns, dirPort string) string {
	conn, err := dialInNS(ns, dirPort, 2*time.Second)
	if err != nil {
		return ""
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /tor/server/authority HTTP/1.0\r\nHost: %s\r\n\r\n", dirPort)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "router ") {
		return ""
	}
	return string(body)
}
