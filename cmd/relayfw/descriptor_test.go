package main

import (
	"fmt"
	"strings"
	"testing"
)

// TestDescriptorWarning: policy and print warn on stderr when the exit
// policy makes the server descriptor too large for tor's directory
// authorities (here 1,000 rejects of /24s that do not merge and 1,000
// pairs of /25s that do, each into its /24), and their stdout is what it
// is without the warning; the
// example torrc's policy gets no warning. apply --dry-run is tested in
// integration/ (TestDescriptorSize), where a backend exists.
func TestDescriptorWarning(t *testing.T) {
	var entries []string
	saved := 0
	for i := range 1000 {
		// Every other /24, so that neither the /24s nor the merged pairs
		// make a larger prefix.
		entries = append(entries, fmt.Sprintf("reject 100.%d.%d.0/24:*", 64+i/128, 2*(i%128)))
		upper := fmt.Sprintf("reject 198.%d.%d.128/25:*", 18+i/128, 2*(i%128))
		entries = append(entries, fmt.Sprintf("reject 198.%d.%d.0/25:*", 18+i/128, 2*(i%128)), upper)
		saved += len(upper) + 1 // the lower half's line becomes the /24's, as long
	}
	large := strings.Join(entries, ",") + ",accept *:443,reject *:*"
	for _, command := range [][]string{{"policy"}, {"print", "--format", "nft"}} {
		t.Run(command[0], func(t *testing.T) {
			code, stdout, stderr := relayfw(t, append([]string{"--torrc", exampleTorrc, "--config", testConfig, "--policy", large}, command...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			for _, want := range []string{"level=WARN", "tor instance", "its server descriptor would be about", "over the 20,000 bytes",
				"would not be published",
				fmt.Sprintf("would save %s bytes (1,000 entries)", thousandsForTest(saved)),
				`\"reject 198.18.0.0/25:*\", \"reject 198.18.0.128/25:*\" into \"reject 198.18.0.0/24:*\"`} {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
			if strings.Contains(stdout, "descriptor") {
				t.Errorf("the warning reached stdout:\n%s", stdout)
			}
			if command[0] == "policy" && !strings.HasPrefix(stdout, "reject 0.0.0.0/8:*\n") {
				t.Errorf("stdout is not the policy:\n%.300s", stdout)
			}
			code, _, stderr = relayfw(t, append([]string{"--torrc", exampleTorrc, "--config", testConfig}, command...)...)
			if code != 0 || strings.Contains(stderr, "descriptor") {
				t.Errorf("the example policy: exit %d, stderr %q; want no warning", code, stderr)
			}
		})
	}
}

func thousandsForTest(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
