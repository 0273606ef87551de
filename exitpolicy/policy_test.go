package exitpolicy

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// policyForm is one line of testdata/policy-forms.txt.
type policyForm struct {
	refused bool
	value   string
	printed []string // what tor prints for the entries; empty: ignored
}

func loadPolicyForms(t *testing.T) []policyForm {
	t.Helper()
	data, err := os.ReadFile("testdata/policy-forms.txt")
	if err != nil {
		t.Fatal(err)
	}
	var forms []policyForm
	for _, line := range strings.Split(string(data), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 3 || (f[0] != "accept" && f[0] != "refuse") {
			t.Fatalf("bad line %q", line)
		}
		form := policyForm{refused: f[0] == "refuse", value: f[1]}
		if f[2] != "" {
			form.printed = strings.Split(f[2], " | ")
		}
		forms = append(forms, form)
	}
	return forms
}

// TestParseExitPolicyForms checks the entry forms tor 0.4.9 accepts, how it
// prints them, and the forms it refuses (integration/TestTorOracle checks
// the same file against a real tor).
func TestParseExitPolicyForms(t *testing.T) {
	for _, form := range loadPolicyForms(t) {
		entries, _, err := Parse(form.value)
		if form.refused {
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("%q: tor refuses it; got %v", form.value, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", form.value, err)
			continue
		}
		var got []string
		for _, e := range entries {
			got = append(got, e.String())
		}
		if diff := cmp.Diff(form.printed, got); diff != "" {
			t.Errorf("%q (-want +got):\n%s", form.value, diff)
		}
	}
	if _, _, err := Parse("\taccept\t*:80\t"); err != nil {
		t.Errorf("tabs around an entry: %v", err)
	}
}

func TestVerdictFirstMatch(t *testing.T) {
	entries, _, err := Parse("reject 203.0.113.0/24:25,accept 203.0.113.77/24:*,reject *:*")
	if err != nil {
		t.Fatal(err)
	}
	p := ExitPolicy{Entries: entries}
	for _, tc := range []struct {
		addr  string
		port  uint16
		want  Action
		index int
	}{
		{"203.0.113.5", 25, Reject, 0},
		{"203.0.113.5", 26, Accept, 1},
		{"203.0.114.5", 80, Reject, 2},
		{"2001:db8::1", 80, Reject, 3},
		{"::ffff:203.0.113.5", 80, Accept, 1},
	} {
		v := p.Decide(netip.MustParseAddr(tc.addr), tc.port)
		if v.Action != tc.want || v.Index != tc.index {
			t.Errorf("%s:%d = %v by %d, want %v by %d", tc.addr, tc.port, v.Action, v.Index, tc.want, tc.index)
		}
	}
}

func TestRemoveRedundancies(t *testing.T) {
	entries, _, err := Parse("accept *4:80,reject 10.0.0.0/8:*,reject 10.1.0.0/16:22,accept *4:443,reject *4:*,accept *4:8080")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range removeRedundancies(entries) {
		got = append(got, e.String())
	}
	want := []string{"accept *:80", "reject 10.0.0.0/8:*", "accept *:443", "reject *:*"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("got %v, want %v", got, want)
	}
}
