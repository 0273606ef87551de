package integration

import (
	"encoding/json"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestConntrackReported: with the firewall applied in the relay namespace
// and connections open through it, status --format json reports the
// namespace's conntrack entries (at least those connections), the limit
// and the kernel's drop counters (over netlink, as root), says whose
// figures they are, and metrics has the three series. With
// nf_conntrack_tcp_loose set to 0 in the relay namespace only (the sysctl
// is per namespace), status and apply warn about it.
func TestConntrackReported(t *testing.T) {
	tn := newTestNet(t)
	b := backends[0] // conntrack is the kernel's, whichever backend installed the rules
	run := b.runner(t, tn)
	flags := relayInputs(t, b.flag, "../examples/torrc")
	mustApply(t, run, flags)
	const conns = 5
	for range conns {
		c, err := dialInNS(tn.relay, "203.0.113.5:80", 3*time.Second)
		if err != nil {
			t.Fatalf("connect through the firewall: %v", err)
		}
		defer c.Close()
	}

	var st struct {
		Conntrack *struct {
			Loaded       bool
			Entries, Max *uint64
			Scope        string
			Source       string
			Drops        map[string]uint64
			TCPLoose     *bool `json:"tcp_loose"`
			Warnings     []string
		}
	}
	code, out, errOut := run(append(flags, "status", "--format", "json")...)
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Conntrack == nil {
		t.Fatalf("status --format json: exit %d: %s%s", code, out, errOut)
	}
	c := st.Conntrack
	if !c.Loaded || c.Entries == nil || *c.Entries < conns || c.Max == nil || *c.Max == 0 {
		t.Errorf("conntrack: want at least %d entries and a limit: %s", conns, out)
	}
	if c.Scope != "namespace" || c.Source != "netlink" || len(c.Drops) != 3 || c.TCPLoose == nil || !*c.TCPLoose {
		t.Errorf("conntrack: want this namespace's figures over netlink, three drop kinds, tcp_loose on: %s", out)
	}

	code, out, errOut = run(append(flags, "metrics")...)
	if code != 0 {
		t.Fatalf("metrics: exit %d: %s%s", code, out, errOut)
	}
	for _, re := range []string{`(?m)^relayfw_conntrack_entries ([5-9]|[1-9][0-9]+)$`, `(?m)^relayfw_conntrack_max [1-9][0-9]*$`,
		`(?m)^relayfw_conntrack_drops_total\{kind="drop"\} [0-9]+$`, `(?m)^relayfw_conntrack_drops_total\{kind="insert_failed"\} [0-9]+$`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("metrics lack %s:\n%s", re, out)
		}
	}

	// The namespace's own sysctl: the host's stays as it is.
	if out, err := exec.Command("ip", "netns", "exec", tn.relay, "sysctl", "-q", "-w", "net.netfilter.nf_conntrack_tcp_loose=0").CombinedOutput(); err != nil {
		t.Fatalf("sysctl in %s: %v: %s", tn.relay, err, out)
	}
	const warning = "warning: net.netfilter.nf_conntrack_tcp_loose is 0"
	code, out, errOut = run(append(flags, "status")...)
	if code != 0 || !strings.Contains(out, warning) {
		t.Errorf("status with tcp_loose 0: exit %d, want %q:\n%s%s", code, warning, out, errOut)
	}
	if line := regexp.MustCompile(`(?m)^conntrack: .*$`).FindString(out); !strings.Contains(line, "this network namespace's count against the host-wide limit") {
		t.Errorf("status's conntrack line %q does not say whose figures it shows", line)
	}
	code, out, errOut = run(append(flags, "apply")...)
	if code != 0 || !strings.Contains(errOut, "nf_conntrack_tcp_loose is 0") {
		t.Errorf("apply with tcp_loose 0: exit %d, want the warning on stderr:\n%s%s", code, out, errOut)
	}
}
