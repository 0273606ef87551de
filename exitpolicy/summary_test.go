package exitpolicy

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// summaryVectors is testdata/tor-summary-vectors.json: tor's own unit
// test vectors for policy_summarize and parse_short_policy.
type summaryVectors struct {
	Cases []struct {
		Policy   string `json:"policy"`
		Summary  string `json:"summary"`
		Summary6 string `json:"summary6"`
	} `json:"cases"`
	Short []struct {
		In  string `json:"in"`
		Out string `json:"out"`
	} `json:"short"`
	Bad []string `json:"bad"`
}

func loadSummaryVectors(t *testing.T) summaryVectors {
	t.Helper()
	data, err := os.ReadFile("testdata/tor-summary-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v summaryVectors
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Cases) == 0 || len(v.Short) == 0 || len(v.Bad) == 0 {
		t.Fatal("no vectors")
	}
	return v
}

func mustPolicy(t testing.TB, text string) ExitPolicy {
	t.Helper()
	entries, _, err := Parse(text)
	if err != nil {
		t.Fatalf("%q: %v", text, err)
	}
	return ExitPolicy{Entries: entries}
}

// checkSummary compares both families' summaries with want, and checks
// what tor's test helper checks too: the summary reads back as itself.
func checkSummary(t *testing.T, policy, want4, want6 string) {
	t.Helper()
	p := mustPolicy(t, policy)
	for _, c := range []struct {
		v6   bool
		want string
	}{{false, want4}, {true, want6}} {
		got := p.Summarize(c.v6)
		if got.Text != c.want {
			t.Errorf("%.80q IPv6 %v:\n got %q\nwant %q", policy, c.v6, got.Text, c.want)
			continue
		}
		sp, err := ParseSummary(got.Text)
		if err != nil || sp.String() != got.Text {
			t.Errorf("%q does not read back as itself: %q, %v", got.Text, sp.String(), err)
		}
	}
}

// TestSummarizeTorVectors: tor's test_policies_general cases. tor runs
// each with every combination of its parser's flags and expects the same
// summary: with "reject private:*" ahead (private networks do not count)
// and with the default policy after (nothing after a catch-all counts).
func TestSummarizeTorVectors(t *testing.T) {
	v := loadSummaryVectors(t)
	for _, c := range v.Cases {
		checkSummary(t, c.Policy, c.Summary, c.Summary6)
		checkSummary(t, "reject private:*,"+c.Policy, c.Summary, c.Summary6)
		checkSummary(t, c.Policy+","+defaultExitPolicy, c.Summary, c.Summary6)
	}
}

// TestSummarizeTruncates is tor's "truncation ports" case: the odd ports
// up to 1999 rejected, then accept *:*; both lists are too long, and the
// accepted ports are cut at the last comma within MaxSummaryLen.
func TestSummarizeTruncates(t *testing.T) {
	var policy, evens []string
	for i := 1; i < 2000; i += 2 {
		policy = append(policy, fmt.Sprintf("reject *:%d", i))
	}
	policy = append(policy, "accept *:*")
	for i := 2; i <= 522; i += 2 {
		evens = append(evens, fmt.Sprint(i))
	}
	want := "accept " + strings.Join(evens, ",")
	checkSummary(t, strings.Join(policy, ","), want, want)
	p := mustPolicy(t, strings.Join(policy, ","))
	s := p.Summarize(false)
	if len(s.Text) > MaxSummaryLen {
		t.Errorf("summary of %d bytes", len(s.Text))
	}
	// Accepted keeps every port, past the cut.
	if got := s.Accepted.Count(); got != 65535-1000 {
		t.Errorf("Accepted counts %d ports, want %d", got, 65535-1000)
	}
}

func TestSummarize(t *testing.T) {
	for _, c := range []struct {
		name, policy, want4, want6 string
		accepted4                  Ports
	}{
		{name: "tor's default policy", policy: defaultExitPolicy,
			want4: "reject 25,119,135-139,445,563,1214,4661-4666,6346-6429,6699,6881-6999",
			want6: "reject 25,119,135-139,445,563,1214,4661-4666,6346-6429,6699,6881-6999"},
		{name: "tor's reduced policy", policy: reducedExitPolicy,
			want4: "accept 20-23,43,53,79-81,88,110,143,194,220,389,443,464-465,531,543-544,554,563,587,636,706,749,873,902-904,981,989-995,1194,1220,1293,1500,1533,1677,1723,1755,1863,2082-2083,2086-2087,2095-2096,2102-2104,3128,3389,3690,4321,4643,5050,5190,5222-5223,5228,5900,6660-6669,6679,6697,8000,8008,8074,8080,8082,8087-8088,8232-8233,8332-8333,8443,8888,9418,9999-10000,11371,18080-18081,18089,19294,19638,50002,64738",
			want6: "accept 20-23,43,53,79-81,88,110,143,194,220,389,443,464-465,531,543-544,554,563,587,636,706,749,873,902-904,981,989-995,1194,1220,1293,1500,1533,1677,1723,1755,1863,2082-2083,2086-2087,2095-2096,2102-2104,3128,3389,3690,4321,4643,5050,5190,5222-5223,5228,5900,6660-6669,6679,6697,8000,8008,8074,8080,8082,8087-8088,8232-8233,8332-8333,8443,8888,9418,9999-10000,11371,18080-18081,18089,19294,19638,50002,64738"},
		{name: "the test network's exit", policy: "accept *:80,accept *:443,accept *:8080,reject *:*",
			want4: "accept 80,443,8080", want6: "accept 80,443,8080", accepted4: Ports{{80, 80}, {443, 443}, {8080, 8080}}},
		{name: "IPv4 only", policy: "accept *4:80,reject *:*", want4: "accept 80", want6: "reject 1-65535", accepted4: Ports{{80, 80}}},
		{name: "an accept of less than everything does not count", policy: "accept 0.0.0.0/1:80,accept [::]/1:80,reject *:*",
			want4: "reject 1-65535", want6: "reject 1-65535"},
		{name: "a private network counts only as tor writes it", policy: "reject 10.0.0.1/8:80,reject 10.0.0.0/8:443,accept *:*",
			want4: "accept 1-65535", want6: "accept 1-65535"},
		{name: "three /8s reject a port, two do not", policy: "reject 11.0.0.0/8:80,reject 12.0.0.0/8:80,reject 13.0.0.0/8:81,reject 14.0.0.0/8:81,reject 15.0.0.0/8:81,accept *:*",
			want4: "reject 81", want6: "accept 1-65535"},
		{name: "IPv6 networks smaller than a /64 never count", policy: "reject6 [2001:db8::]/65:80,reject6 [2001:db9::]/65:80,reject6 [2001:dba::]/65:80,accept *:*",
			want4: "accept 1-65535", want6: "accept 1-65535"},
		{name: "a /15 rejects an IPv6 port, a /16 does not", policy: "reject6 [2600::]/15:80,reject6 [2800::]/16:81,accept *:*",
			want4: "accept 1-65535", want6: "reject 80"},
		{name: "the shorter list", policy: "accept *:2,accept *:4-65535,reject *:*", want4: "reject 1,3", want6: "reject 1,3"},
		{name: "a tie: accept", policy: "accept *:1,accept *:65535,reject *:*", want4: "accept 1,65535", want6: "accept 1,65535"},
		{name: "an accept after the rejects counts against them", policy: "reject 0.0.0.0/7:80,reject 2.0.0.0/7:80,accept *:80,accept *:443,reject *:*",
			want4: "accept 443", want6: "accept 80,443"},
		{name: "a later accept does not undo an earlier one", policy: "accept *:80,reject *:80,reject *:*", want4: "accept 80", want6: "accept 80"},
		{name: "no policy: tor's implicit accept is not an entry", policy: "reject *:25", want4: "reject 1-65535", want6: "reject 1-65535"},
	} {
		t.Run(c.name, func(t *testing.T) {
			checkSummary(t, c.policy, c.want4, c.want6)
			if c.accepted4 != nil {
				if diff := cmp.Diff(c.accepted4, mustPolicy(t, c.policy).Summarize(false).Accepted); diff != "" {
					t.Errorf("Accepted (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestParseSummaryTorVectors(t *testing.T) {
	v := loadSummaryVectors(t)
	for _, c := range v.Short {
		sp, err := ParseSummary(c.In)
		if err != nil {
			t.Errorf("%q: %v", c.In, err)
			continue
		}
		if got := sp.String(); got != c.Out {
			t.Errorf("%q writes back as %q, want %q", c.In, got, c.Out)
		}
	}
	for _, in := range v.Bad {
		if sp, err := ParseSummary(in); err == nil {
			t.Errorf("%q: read as %q, want refused", in, sp.String())
		}
	}
	// tor's too-long summary: 10,000 entries.
	long := []string{}
	for i := 1; i < 10000; i++ {
		long = append(long, fmt.Sprint(i))
	}
	if _, err := ParseSummary("accept " + strings.Join(long, ",") + ",20000"); err == nil {
		t.Errorf("a summary of 10,000 entries was read")
	}
}

func TestShortPolicyAccepted(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Ports
	}{
		{"accept 80,443", Ports{{80, 80}, {443, 443}}},
		{"accept 1-65535", AllPorts},
		{"reject 1-65535", nil},
		{"reject 25,119", Ports{{1, 24}, {26, 118}, {120, 65535}}},
		{"accept 443,80-81,81", Ports{{80, 81}, {443, 443}}},
		{"reject 1,65535", Ports{{2, 65534}}},
	} {
		sp, err := ParseSummary(c.in)
		if err != nil {
			t.Fatalf("%q: %v", c.in, err)
		}
		if diff := cmp.Diff(c.want, sp.Accepted()); diff != "" {
			t.Errorf("%q (-want +got):\n%s", c.in, diff)
		}
	}
}

func TestPortsMinus(t *testing.T) {
	for _, c := range []struct{ a, b, want Ports }{
		{Ports{{80, 80}, {443, 443}, {8080, 8080}}, Ports{{80, 80}, {443, 443}}, Ports{{8080, 8080}}},
		{AllPorts, Ports{{1, 1}, {100, 200}, {65535, 65535}}, Ports{{2, 99}, {201, 65534}}},
		{Ports{{10, 20}}, Ports{{1, 5}, {12, 14}, {18, 30}}, Ports{{10, 11}, {15, 17}}},
		{Ports{{10, 20}}, nil, Ports{{10, 20}}},
		{nil, AllPorts, nil},
		{AllPorts, AllPorts, nil},
	} {
		if diff := cmp.Diff(c.want, c.a.Minus(c.b)); diff != "" {
			t.Errorf("%s minus %s (-want +got):\n%s", c.a, c.b, diff)
		}
	}
}

// referenceAccepted is policy_summarize's decision computed port by port,
// a second implementation for FuzzSummarize to compare with.
func referenceAccepted(p ExitPolicy, v6 bool) Ports {
	var count [65536]uint64
	var accepted [65536]bool
	cutoff := rejectCutoffV4
	if v6 {
		cutoff = rejectCutoffV6
	}
	for _, e := range p.Entries {
		if e.IPv6() != v6 {
			continue
		}
		if e.Action == Accept {
			for port := int(e.PortMin); e.Bits == 0 && port <= int(e.PortMax); port++ {
				accepted[port] = accepted[port] || count[port] <= cutoff
			}
			continue
		}
		private := false
		for _, n := range privateNets {
			a, bits := mustParseNet(n)
			private = private || (a == e.Addr && bits == e.Bits)
		}
		if private || (v6 && e.Bits > 64) {
			continue
		}
		shift := 32 - e.Bits
		if v6 {
			shift = 64 - e.Bits
		}
		add := ^uint64(0)
		if shift < 64 {
			add = 1 << shift
		}
		for port := int(e.PortMin); port <= int(e.PortMax); port++ {
			if count[port] > ^uint64(0)-add {
				count[port] = ^uint64(0)
			} else {
				count[port] += add
			}
		}
	}
	var out Ports
	for port := 1; port <= 65535; port++ {
		if accepted[port] {
			out = append(out, PortRange{uint16(port), uint16(port)})
		}
	}
	return out.Normalize()
}

func FuzzSummarize(f *testing.F) {
	for _, s := range []string{
		"accept *:80,accept *:443,reject *:*", defaultExitPolicy, reducedExitPolicy,
		"reject 11.0.0.0/9:80,reject 12.0.0.0/9:80,reject 13.0.0.0/9:80,reject 14.0.0.0/9:80,reject 15.0.0.0:80,accept *:*",
		"reject private:*,reject6 [2600::]/15:80,reject6 [2001:db8::]/96:81,accept *:*",
		"reject 0.0.0.0/0,reject6 ::/0,accept *:80,accept *:443,reject *:*",
		"accept *:1-100,reject *:50-60,accept *:40-70,reject 1.2.3.4:*",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		entries, _, err := Parse(text)
		if err != nil || len(entries) > 64 {
			return
		}
		p := ExitPolicy{Entries: entries}
		for _, v6 := range []bool{false, true} {
			s := p.Summarize(v6)
			if diff := cmp.Diff(referenceAccepted(p, v6), s.Accepted); diff != "" {
				t.Fatalf("%q IPv6 %v: Accepted differs from the port-by-port reference (-ref +got):\n%s", text, v6, diff)
			}
			if len(s.Text) > MaxSummaryLen {
				t.Fatalf("%q: summary of %d bytes", text, len(s.Text))
			}
			sp, err := ParseSummary(s.Text)
			if err != nil || sp.String() != s.Text {
				t.Fatalf("%q: summary %q does not read back: %q, %v", text, s.Text, sp.String(), err)
			}
			if back := sp.Accepted(); len(s.Text) < MaxSummaryLen-12 && !cmp.Equal(back, s.Accepted) {
				t.Fatalf("%q: summary %q means %s, Accepted is %s", text, s.Text, back, s.Accepted)
			}
		}
	})
}

func FuzzParseSummary(f *testing.F) {
	for _, s := range []string{
		"accept 80,443", "reject 1-65535", "accept fred,2,3-5", "accept 2,-3,500-600", "reject ,1-10,,,,30-40",
		"accept 200-199", "accept 2,3x,4", "accept 1-,3", "accept  80", "accept +80", "reject 99999999999999999999999",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		sp, err := ParseSummary(in)
		if err != nil {
			return
		}
		for _, e := range sp.Entries {
			if e.Min < 1 || e.Min > e.Max {
				t.Fatalf("%q: impossible entry %v", in, e)
			}
		}
		out := sp.String()
		back, err := ParseSummary(out)
		if err != nil || !cmp.Equal(back, sp) {
			t.Fatalf("%q writes as %q, which reads back as %v, %v", in, out, back, err)
		}
	})
}
