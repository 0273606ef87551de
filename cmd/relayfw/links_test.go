package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/relayfw/relayfw/host"
)

// TestRelayLinksAreTors: the relay links of testdata/tordata's consensus
// (relayA 203.0.113.11:9001, the dir-source testauth1 203.0.113.201 with
// DirPort 8030 and ORPort 8001, on ports the policy rejects) are accepted
// for the sockets of the users of the tor instances that are relays, and
// rejected for every other user, whom explain --user says why; a tor
// without User runs as root, so root gets them, with one warning.
func TestRelayLinksAreTors(t *testing.T) {
	example, err := os.ReadFile(exampleTorrc)
	if err != nil {
		t.Fatal(err)
	}
	data, err := filepath.Abs("testdata/tordata")
	if err != nil {
		t.Fatal(err)
	}
	withUser := writeFile(t, "torrc", string(example)+"User debian-tor\n")
	instA := writeFile(t, "torrc", "ORPort 9001\nExitRelay 1\nExitPolicy accept *:80,reject *:*\nUser _tor-a\nDataDirectory "+data+"\n")
	instB := writeFile(t, "torrc", "ORPort 9002\nExitRelay 0\nUser _tor-b\nDataDirectory "+data+"\n")
	sameUID := writeFile(t, "torrc", "ORPort 9003\nExitRelay 0\nUser 201\nDataDirectory "+data+"\n")
	client := writeFile(t, "torrc", "SocksPort 9050\nUser _apt\nDataDirectory "+data+"\n")
	emptyConfig := writeFile(t, "relayfw.toml", "")
	const (
		forOnly  = "rejected by the exit policy (a relay link, for the sockets of tor's user "
		warnLine = "has no User: tor runs as root, so root's sockets get the relay links"
	)
	tests := []struct {
		name     string
		flags    []string
		user     string // --user; "" for the instance's tor
		accepted string // the relay-link rule that accepts, or "" for a reject
		reason   string // of a reject
		warns    bool
	}{
		{"User set: tor's user", []string{"--torrc", withUser, "--config", testConfig}, "", "relay-links4", "", false},
		{"User set: by name", []string{"--torrc", withUser, "--config", testConfig}, "debian-tor", "relay-links4", "", false},
		{"User set: root", []string{"--torrc", withUser, "--config", testConfig}, "0", "", forOnly + "debian-tor only)", false},
		{"User set: nobody", []string{"--torrc", withUser, "--config", testConfig}, "65534", "", forOnly + "debian-tor only)", false},
		{"no User: root", []string{"--torrc", exampleTorrc, "--config", testConfig}, "", "relay-links4", "", true},
		{"no User: nobody", []string{"--torrc", exampleTorrc, "--config", testConfig}, "65534", "", forOnly + "root only)", true},
		{"two relays: one", []string{"--torrc", instA, "--torrc", instB, "--torrc", client, "--config", emptyConfig}, "", "relay-links4-uid201", "", false},
		{"two relays: the other", []string{"--torrc", instA, "--torrc", instB, "--torrc", client, "--config", emptyConfig}, "_tor-b", "relay-links4-uid202", "", false},
		// A client instance next to relays reaches its guards too.
		{"two relays: the client's user", []string{"--torrc", instA, "--torrc", instB, "--torrc", client, "--config", emptyConfig}, "_apt", "relay-links4-uid42", "", false},
		{"two relays: another user", []string{"--torrc", instA, "--torrc", instB, "--torrc", client, "--config", emptyConfig}, "65534", "", forOnly + "_tor-a, _tor-b, _apt only)", false},
		{"two relays, one uid: one rule", []string{"--torrc", instA, "--torrc", sameUID, "--config", emptyConfig}, "", "relay-links4", "", false},
		{"two relays, one uid: root", []string{"--torrc", instA, "--torrc", sameUID, "--config", emptyConfig}, "0", "", forOnly + "_tor-a only)", false},
		{"a client alone: its user", []string{"--torrc", client, "--config", emptyConfig}, "", "relay-links4", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{}, tt.flags...)
			args = append(args, "explain", "--format", "json")
			if tt.user != "" {
				args = append(args, "--user", tt.user)
			}
			code, stdout, stderr := relayfw(t, append(args, "203.0.113.11:9001", "203.0.113.201:8030", "203.0.113.201:8001")...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if got := strings.Count(stderr, warnLine); got != map[bool]int{true: 1, false: 0}[tt.warns] {
				t.Errorf("%d warnings about root's relay links, want warns=%v: %q", got, tt.warns, stderr)
			}
			lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
			if len(lines) != 3 {
				t.Fatalf("want 3 lines: %q", stdout)
			}
			for _, line := range lines {
				var e host.Explanation
				if err := json.Unmarshal([]byte(line), &e); err != nil {
					t.Fatal(err)
				}
				want := host.Explanation{Instance: e.Instance, Target: e.Target, Verdict: "reject", Entry: e.Entry, Index: e.Index, Proto: "tcp",
					Firewall: "accept", Reason: "relay link", Rule: tt.accepted}
				if tt.accepted == "" {
					want.Firewall, want.Reason, want.Rule = "reject", tt.reason, "reject-tcp"
				}
				if diff := cmp.Diff(want, e); diff != "" {
					t.Errorf("(-want +got):\n%s", diff)
				}
			}
		})
	}
}

// TestRelayLinkRulesPerUser: print names one relay-link rule per family
// for each user of a tor instance: the relays' and the client's (its
// guards).
func TestRelayLinkRulesPerUser(t *testing.T) {
	sys := debianHost(t)
	emptyConfig := writeFile(t, "relayfw.toml", "")
	code, out, errOut := relayfwOn(t, sys, "--config", emptyConfig, "print", "--format", "iptables")
	if code != 0 {
		t.Fatalf("print: exit %d: %s", code, errOut)
	}
	var got []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "relayfw-relays") {
			got = append(got, l)
		}
	}
	want := []string{
		`-A RELAYFW-OUTPUT -p tcp -m owner --uid-owner 101 -m set --match-set relayfw-relays4 dst,dst -m comment --comment "relayfw: relay-links4-uid101" -j ACCEPT`,
		`-A RELAYFW-OUTPUT -p tcp -m owner --uid-owner 201 -m set --match-set relayfw-relays4 dst,dst -m comment --comment "relayfw: relay-links4-uid201" -j ACCEPT`,
		`-A RELAYFW-OUTPUT -p tcp -m owner --uid-owner 202 -m set --match-set relayfw-relays4 dst,dst -m comment --comment "relayfw: relay-links4-uid202" -j ACCEPT`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("relay-link rules (-want +got):\n%s", diff)
	}
	if strings.Contains(errOut, "no User") {
		t.Errorf("every instance has a User, yet: %s", errOut)
	}
}
