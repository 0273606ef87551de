package host

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// listingFiles are a relay's fingerprint, a microdesc consensus listing
// it with flags and a microdescriptor with the policy lines given (none:
// not listed).
func listingFiles(flags string, policy ...string) func(string) {
	return func(dir string) {
		fp := strings.Repeat("AB", 20)
		id, _ := base64.StdEncoding.DecodeString("q6urq6urq6urq6urq6urq6urq6s=")
		md := "onion-key\nntor-onion-key " + strings.Repeat("x", 43) + "\n"
		for _, p := range policy {
			md += p + "\n"
		}
		d := sha256.Sum256([]byte(md))
		consensus := goodConsensus
		if flags != "" {
			consensus += "r exitA " + base64.RawStdEncoding.EncodeToString(id) + " 2026-11-25 11:00:00 203.0.113.12 9001 0\nm " +
				base64.RawStdEncoding.EncodeToString(d[:]) + "\ns " + flags + "\n"
		}
		for name, text := range map[string]string{"fingerprint": "exitA " + fp + "\n", "cached-microdesc-consensus": consensus,
			"cached-microdescs": "@last-listed 2026-11-25 12:00:00\n" + md} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
				panic(err)
			}
		}
	}
}

func TestPublished(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 30, 0, 0, time.UTC)
	one, zero := 1, 0
	// The torrc's policy: accept *:80,reject *:* (consensusInputs).
	for _, c := range []struct {
		name  string
		setup func(string)
		want  PublishedState
		lines []string
	}{
		{"matches", listingFiles("Exit Running Valid", "p accept 80"),
			PublishedState{InConsensus: true, Summary: "accept 80", Summary6: "reject 1-65535", PortsRejected: &zero},
			[]string{"summary accept 80 matches the firewall"}},
		{"the summary accepts a port the firewall rejects", listingFiles("Exit Running Valid", "p accept 80,8080"),
			PublishedState{InConsensus: true, Summary: "accept 80,8080", Summary6: "reject 1-65535", RejectedByFirewall: "8080", PortsRejected: &one},
			[]string{"summary accept 80,8080 accepts 8080, which the firewall rejects: BadExit risk, clients will send streams there; " +
				"tor publishes a new policy with its next descriptor: reload tor if it has not been, then wait for the next consensus"}},
		{"IPv6 and BadExit", listingFiles("BadExit Running Valid", "p accept 80", "p6 accept 80"),
			PublishedState{InConsensus: true, Summary: "accept 80", Summary6: "accept 80", RejectedByFirewall6: "80", PortsRejected: &one, BadExit: true},
			[]string{"summary accept 80 (IPv6 accept 80) accepts IPv6 80, which the firewall rejects: BadExit risk, clients will send streams there; " +
				"tor publishes a new policy with its next descriptor: reload tor if it has not been, then wait for the next consensus",
				"the consensus gives the relay the BadExit flag: clients do not exit through it"}},
		{"not yet an exit in the consensus", listingFiles("Running Valid"),
			PublishedState{InConsensus: true, Summary: "reject 1-65535", Summary6: "reject 1-65535", NotInSummary: "80", PortsRejected: &zero},
			[]string{"summary reject 1-65535 does not list 80, which the firewall lets out (harmless: clients do not choose the relay for these ports until tor publishes them)"}},
		{"a summary clients cannot read", listingFiles("Exit Running Valid", "p accept x80"),
			PublishedState{InConsensus: true, Summary: "accept x80", Summary6: "reject 1-65535", NotInSummary: "80", PortsRejected: &zero,
				Why: `the published summary is one clients do not read (malformed exit policy summary "accept x80": no port entries): they exit nowhere through the relay`},
			nil},
		{"not in the consensus", listingFiles(""),
			PublishedState{Why: "not in the cached consensus (new relay, or not yet published): DATA/cached-microdesc-consensus"},
			[]string{"not in the cached consensus (new relay, or not yet published): DATA/cached-microdesc-consensus"}},
		{"no fingerprint", func(string) {},
			PublishedState{Why: "unknown: no fingerprint file in DATA (tor has not run as a relay with this DataDirectory)"}, nil},
		{"no consensus", func(dir string) { listingFiles("")(dir); os.Remove(filepath.Join(dir, "cached-microdesc-consensus")) },
			PublishedState{Why: "unknown: no cached microdesc consensus in DATA (tor has not fetched one yet)"}, nil},
		{"a refused consensus", func(dir string) {
			listingFiles("")(dir)
			os.WriteFile(filepath.Join(dir, "cached-microdesc-consensus"), []byte(strings.Repeat("x", 2<<20)), 0o644)
		}, PublishedState{Why: "unknown: DATA/cached-microdesc-consensus refused: a line longer than 1024 KiB"}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			var log bytes.Buffer
			var data string
			in := consensusInputs(t, func(dir string) { data = dir; c.setup(dir) }, now, &log)
			got := in.Published()
			if len(got) != 1 {
				t.Fatalf("%d instances", len(got))
			}
			c.want.Instance, c.want.FirewallSummary, c.want.FirewallSummary6 = in.Instances[0].Name, "accept 80", "reject 1-65535"
			if c.want.InConsensus || strings.HasPrefix(c.want.Why, "not in") {
				c.want.Fingerprint = strings.Repeat("AB", 20)
			}
			got[0].Why = strings.ReplaceAll(got[0].Why, data, "DATA")
			if diff := cmp.Diff(c.want, got[0], cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Published (-want +got):\n%s", diff)
			}
			lines := got[0].Lines()
			if c.lines == nil {
				c.lines = []string{got[0].Why}
				if got[0].Known() {
					c.lines = append([]string{"summary accept x80 does not list 80, which the firewall lets out (harmless: clients do not choose the relay for these ports until tor publishes them)"}, c.lines...)
				}
			}
			for i := range lines {
				lines[i] = strings.ReplaceAll(lines[i], data, "DATA")
			}
			if diff := cmp.Diff(c.lines, lines); diff != "" {
				t.Errorf("Lines (-want +got):\n%s", diff)
			}
		})
	}
}

// The summaries are the tor user's text: status and check print them
// without the control characters a terminal would obey (an escape
// sequence, a carriage return rewriting the line).
func TestPublishedLinesPrintable(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 30, 0, 0, time.UTC)
	for _, summary := range []string{
		"p accept 80,\x1b[2K\rsummary accept 80 matches the firewall,1",
		"p accept 80,8080,\x1b]0;title\a",
		"p6 accept 443,\x7f\u2028,\xff",
	} {
		var log bytes.Buffer
		in := consensusInputs(t, listingFiles("Exit Running Valid", summary), now, &log)
		for _, p := range in.Published() {
			for _, line := range p.Lines() {
				if i := strings.IndexFunc(line, func(r rune) bool { return r < 0x20 || r >= 0x7f }); i >= 0 {
					t.Errorf("%q: a line with %q: %q", summary, line[i:i+1], line)
				}
			}
		}
	}
}
