package firewall

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLineDiff(t *testing.T) {
	tests := []struct {
		name       string
		want, have []string
		out        []string
	}{
		{"equal", []string{"a", "b"}, []string{"a", "b"}, nil},
		{"inserted", []string{"a", "b"}, []string{"a", "x", "b"}, []string{"unexpected rule 2: x"}},
		{"deleted", []string{"a", "b", "c"}, []string{"a", "c"}, []string{"missing rule 2: b"}},
		{"changed", []string{"a", "b"}, []string{"a", "B"}, []string{"unexpected rule 2: B", "missing rule 2: b"}},
		{"empty", []string{"a"}, nil, []string{"missing rule 1: a"}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.out, Strings(LineDiff("", tt.want, tt.have))); diff != "" {
			t.Errorf("%s:\n%s", tt.name, diff)
		}
	}
}

// TestDiffLarge: tens of thousands of rules compare in linear memory, and
// a rewritten middle still reports exactly what is missing and extra.
func TestDiffLarge(t *testing.T) {
	var want, have []string
	for i := 0; i < 20000; i++ {
		want = append(want, fmt.Sprintf("rule %d", i))
		have = append(have, fmt.Sprintf("rule %d", 19999-i)) // reversed: nothing in place
	}
	if edits := Diff(want, want); len(edits) != 0 {
		t.Fatalf("equal lists: %d edits", len(edits))
	}
	if got := Strings(LineDiff("", want, have)); len(got) != 1 || got[0] != "rules from 1 on are in another order" {
		t.Fatalf("same rules in another order: %q", got)
	}
	have[7] = "foreign rule"
	got := Strings(LineDiff("", want, have))
	if len(got) != 2 || got[0] != "missing rule 19993: rule 19992" || got[1] != "unexpected rule 8: foreign rule" {
		t.Fatalf("got %q", got)
	}
}

func TestSortedDiff(t *testing.T) {
	missing, extra := SortedDiff([]string{"a", "b", "d", "e"}, []string{"b", "c", "e", "f"})
	if strings.Join(missing, ",") != "a,d" || strings.Join(extra, ",") != "c,f" {
		t.Errorf("missing %v, extra %v; want [a d], [c f]", missing, extra)
	}
	if missing, extra := SortedDiff(nil, nil); missing != nil || extra != nil {
		t.Errorf("empty lists: %v %v", missing, extra)
	}
}
