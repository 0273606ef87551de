package firewall

// Edit is one step of turning the installed rules into the wanted ones:
// a wanted rule missing (Want is its index in want) or an installed rule
// that should not be there (Have is its index in have).
type Edit struct {
	Missing bool
	Want    int
	Have    int
	// Reordered: the same rules, from Want (= Have) on, in another order.
	Reordered bool
}

// maxLCSCells bounds the quadratic table of the longest-common-subsequence
// step; beyond it Diff compares the differing middle as multisets.
const maxLCSCells = 1 << 22

// Diff compares two ordered rule lists by key, so that one inserted or
// deleted rule is one edit. Equal heads and tails are skipped first; the
// differing middle is aligned along its longest common subsequence, or,
// when that would be too large (tens of thousands of rules rewritten),
// reported as the rules missing and unexpected regardless of order.
func Diff(want, have []string) []Edit {
	lo := 0
	for lo < len(want) && lo < len(have) && want[lo] == have[lo] {
		lo++
	}
	hiW, hiH := len(want), len(have)
	for hiW > lo && hiH > lo && want[hiW-1] == have[hiH-1] {
		hiW--
		hiH--
	}
	w, h := want[lo:hiW], have[lo:hiH]
	var edits []Edit
	if len(w)*len(h) > maxLCSCells {
		count := map[string]int{}
		for _, k := range h {
			count[k]++
		}
		for i, k := range w {
			if count[k] > 0 {
				count[k]--
				continue
			}
			edits = append(edits, Edit{Missing: true, Want: lo + i})
		}
		for j := len(h) - 1; j >= 0; j-- {
			if count[h[j]] > 0 {
				count[h[j]]--
				edits = append(edits, Edit{Have: lo + j})
			}
		}
		if len(edits) == 0 { // same rules, other order: first match differs
			edits = append(edits, Edit{Reordered: true, Want: lo, Have: lo})
		}
		return edits
	}
	n, m := len(w), len(h)
	lcs := make([][]int32, n+1)
	for i := range lcs {
		lcs[i] = make([]int32, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if w[i] == h[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && w[i] == h[j]:
			i++
			j++
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			edits = append(edits, Edit{Have: lo + j})
			j++
		default:
			edits = append(edits, Edit{Missing: true, Want: lo + i})
			i++
		}
	}
	return edits
}

// RuleDrift is the drift of a chain's rules (in object), compared by key
// (Diff): a wanted rule missing says wantText of it; an installed rule
// not wanted is described by unexpected (its Detail, Handle, Foreign),
// both given the rule's index.
func RuleDrift(object string, want, have []string, wantText func(int) string, unexpected func(int) Drift) []Drift {
	var out []Drift
	for _, e := range Diff(want, have) {
		switch {
		case e.Reordered:
			out = append(out, Drift{Object: object, Kind: RulesReordered, N: e.Want + 1})
		case e.Missing:
			out = append(out, Drift{Object: object, Kind: RuleMissing, N: e.Want + 1, Detail: wantText(e.Want)})
		default:
			d := unexpected(e.Have)
			d.Object, d.Kind, d.N = object, RuleUnexpected, e.Have+1
			out = append(out, d)
		}
	}
	return out
}

// LineDiff is the drift of rules written as text lines (each naming its
// chain), in object (empty when the lines name it).
func LineDiff(object string, want, have []string) []Drift {
	return RuleDrift(object, want, have, func(i int) string { return want[i] },
		func(i int) Drift { return Drift{Detail: have[i]} })
}

// SortedDiff compares two sorted lists of set elements: what want has and
// have lacks (missing), and the other way round (extra).
func SortedDiff(want, have []string) (missing, extra []string) {
	for i, j := 0, 0; i < len(want) || j < len(have); {
		switch {
		case j == len(have) || (i < len(want) && want[i] < have[j]):
			missing = append(missing, want[i])
			i++
		case i == len(want) || have[j] < want[i]:
			extra = append(extra, have[j])
			j++
		default:
			i++
			j++
		}
	}
	return missing, extra
}
