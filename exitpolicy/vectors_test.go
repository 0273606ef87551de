package exitpolicy

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/relayfw/relayfw/torconf"
)

// torVectors is testdata/tor-exit-policy-vectors.json: torrc cases run
// through a real tor 0.4.9.11 (GETINFO exit-policy/full).
type torVectors struct {
	TorVersion string   `json:"tor_version"`
	BaseTorrc  []string `json:"base_torrc"`
	Cases      []struct {
		Torrc []string `json:"torrc"`
		OK    bool     `json:"ok"`
		Full  []string `json:"full"`
	} `json:"cases"`
}

func loadVectors(t testing.TB) torVectors {
	t.Helper()
	data, err := os.ReadFile("testdata/tor-exit-policy-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v torVectors
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Cases) == 0 {
		t.Fatal("no vectors")
	}
	return v
}

// effectiveFromText runs torrc text through the whole model.
func effectiveFromText(text string) (Effective, error) {
	lines, err := torconf.Parse(nil, "torrc", text)
	if err != nil {
		return Effective{}, err
	}
	opts, err := torconf.OptionsFromLines(lines)
	if err != nil {
		return Effective{}, err
	}
	return FromOptions(opts, HostFacts{})
}

func TestTorVectors(t *testing.T) {
	v := loadVectors(t)
	for i, c := range v.Cases {
		text := strings.Join(append(append([]string{}, v.BaseTorrc...), c.Torrc...), "\n") + "\n"
		eff, err := effectiveFromText(text)
		if !c.OK {
			var se *torconf.SyntaxError
			if !errors.As(err, &se) {
				t.Errorf("case %d %q: tor refused this torrc; got err=%v, policy %q", i, c.Torrc, err, eff.Policy.Lines())
			}
			continue
		}
		if err != nil {
			t.Errorf("case %d %q: tor accepted this torrc; got %v", i, c.Torrc, err)
			continue
		}
		want := c.Full
		if len(want) == 0 {
			want = []string{"reject *:*"}
		}
		if diff := cmp.Diff(want, eff.Policy.Lines()); diff != "" {
			t.Errorf("case %d %q: policy differs from tor (-tor +relayfw):\n%s", i, c.Torrc, diff)
		}
	}
}

// TestTorVectorsVerdicts checks first-match verdicts on a grid of probes
// against the policy tor printed, re-parsed as a plain policy.
func TestTorVectorsVerdicts(t *testing.T) {
	v := loadVectors(t)
	addrs := []string{"0.0.0.1", "10.1.2.3", "127.0.0.1", "172.16.5.5", "192.168.1.1", "169.254.1.1",
		"198.51.100.7", "198.51.100.8", "203.0.113.0", "203.0.113.77", "8.8.8.8", "1.2.3.4", "93.184.216.34",
		"::1", "fc00::5", "fe80::1", "2001:db8::1", "2001:db8:1::", "2606:4700::1111", "ff02::1", "3fff::1"}
	ports := []uint16{1, 21, 22, 25, 53, 80, 443, 993, 6667, 6881, 9001, 65535}
	for i, c := range v.Cases {
		if !c.OK {
			continue
		}
		text := strings.Join(append(append([]string{}, v.BaseTorrc...), c.Torrc...), "\n") + "\n"
		eff, err := effectiveFromText(text)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		full := c.Full
		if len(full) == 0 {
			// tor publishes nothing: it exits nowhere.
			full = []string{"reject *4:*", "reject6 *:*"}
		}
		var torPolicy ExitPolicy
		for _, l := range full {
			// In descriptor format "accept *:" is the IPv4 wildcard.
			if !strings.HasPrefix(l, "accept6") && !strings.HasPrefix(l, "reject6") {
				l = strings.Replace(l, " *:", " *4:", 1)
			}
			entries, _, err := Parse(l)
			if err != nil {
				t.Fatalf("case %d: tor's line %q: %v", i, l, err)
			}
			torPolicy.Entries = append(torPolicy.Entries, entries...)
		}
		for _, a := range addrs {
			addr := netip.MustParseAddr(a)
			for _, p := range ports {
				got, want := eff.Policy.Decide(addr, p).Action, torPolicy.Decide(addr, p).Action
				if got != want {
					t.Errorf("case %d %q: %s port %d: relayfw %v, tor %v", i, c.Torrc, a, p, got, want)
				}
			}
		}
	}
}
