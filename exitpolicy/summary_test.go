package exitpolicy

import (
	"fmt"
	"strings"
	"testing"
)

// TestSummarize runs tor's own policy summary tests (test_policy.c,
// test_policy_summary_helper): the policy as tor parses it, summarized
// for each family.
func TestSummarize(t *testing.T) {
	var odd, oddWant []string
	for p := 1; p <= 529; p += 2 {
		odd = append(odd, fmt.Sprintf("accept *:%d", p))
		if p <= 523 {
			oddWant = append(oddWant, fmt.Sprint(p))
		}
	}
	reduced := mustParse(reducedExitPolicy)
	tests := []struct {
		name, policy string
		want4, want6 string
	}{
		{"private ignored", "reject 192.168.0.0/16:*,reject 0.0.0.0/8:*,reject 10.0.0.0/8:*,accept *:10-30,accept *:90,reject *:*",
			"accept 10-30,90", "accept 10-30,90"},
		{"rejects counted", "reject 11.0.0.0/9:80,reject 12.0.0.0/9:80,reject 13.0.0.0/9:80,reject 14.0.0.0/9:80,accept *:*",
			"accept 1-65535", "accept 1-65535"},
		{"rejects over the cutoff", "reject 11.0.0.0/9:80,reject 12.0.0.0/9:80,reject 13.0.0.0/9:80,reject 14.0.0.0/9:80,reject 15.0.0.0:80,accept *:*",
			"reject 80", "accept 1-65535"},
		{"no exits", "accept 11.0.0.0/9:80,reject *:*", "reject 1-65535", "reject 1-65535"},
		{"port merging", "accept *:80,accept *:81,accept *:100-110,accept *:111,reject *:*", "accept 80-81,100-111", "accept 80-81,100-111"},
		{"border ports", "accept *:1,accept *:3,accept *:65535,reject *:*", "accept 1,3,65535", "accept 1,3,65535"},
		{"holes", "reject *:1,reject *:3,reject *:5,reject *:7,accept *:*", "reject 1,3,5,7", "reject 1,3,5,7"},
		{"configured addresses", "reject 149.56.1.1:*,reject [2607:5300:1:1::1:0]:*,accept *:80,accept *:443,reject *:*", "accept 80,443", "accept 80,443"},
		{"netblocks", "reject 149.56.0.0/16,reject6 2607:5300::/32,reject6 2608:5300::/64,reject6 2609:5300::/96,accept *:80,accept *:443,reject *:*",
			"accept 80,443", "accept 80,443"},
		{"large netblocks under the cutoff", "reject 148.0.0.0/7,reject6 2600::/16,accept *:80,accept *:443,reject *:*", "accept 80,443", "accept 80,443"},
		{"large netblocks over the cutoff", "reject 148.0.0.0/6,reject6 2600::/15,accept *:80,accept *:443,reject *:*", "reject 1-65535", "reject 1-65535"},
		{"huge netblocks", "reject 128.0.0.0/1,reject6 8000::/1,accept *:80,accept *:443,reject *:*", "reject 1-65535", "reject 1-65535"},
		{"everything by netblocks", "reject 0.0.0.0/0,reject 0.0.0.0/0,reject6 ::/0,reject6 ::/0,accept *:80,reject *:*", "reject 1-65535", "reject 1-65535"},
		{"longest", strings.Join(odd, ",") + ",reject *:*", "accept " + strings.Join(oddWant, ","), "accept " + strings.Join(oddWant, ",")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries, _, err := Parse(tt.policy)
			if err != nil {
				t.Fatal(err)
			}
			p := ExitPolicy{Entries: entries}
			if got := p.Summarize(false); got != tt.want4 {
				t.Errorf("IPv4 summary %q, want %q", got, tt.want4)
			}
			if got := p.Summarize(true); got != tt.want6 {
				t.Errorf("IPv6 summary %q, want %q", got, tt.want6)
			}
		})
	}
	// tor's ReducedExitPolicy, as tor 0.4.9 publishes it.
	want := "accept 20-23,43,53,79-81,88,110,143,194,220,389,443,464-465,531,543-544,554,563,587,636,706,749,873,902-904,981,989-995," +
		"1194,1220,1293,1500,1533,1677,1723,1755,1863,2082-2083,2086-2087,2095-2096,2102-2104,3128,3389,3690,4321,4643,5050,5190," +
		"5222-5223,5228,5900,6660-6669,6679,6697,8000,8008,8074,8080,8082,8087-8088,8232-8233,8332-8333,8443,8888,9418,9999-10000," +
		"11371,18080-18081,18089,19294,19638,50002,64738"
	if got := (ExitPolicy{Entries: reduced}).Summarize(true); got != want {
		t.Errorf("ReducedExitPolicy: %q\nwant %q", got, want)
	}
}
