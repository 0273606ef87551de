package firewall

import "fmt"

// Edit is one step of turning the installed rules into the wanted ones:
// a wanted rule missing (Want is its index in want) or an installed rule
// that should not be there (Have is its index in have).
type Edit struct {
	Missing bool
	Want    int
	Have    int
}

// Diff compares two ordered rule lists by key along their longest common
// subsequence, so that one inserted or deleted rule is one edit.
func Diff(want, have []string) []Edit {
	n, m := len(want), len(have)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if want[i] == have[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var edits []Edit
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && want[i] == have[j]:
			i++
			j++
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			edits = append(edits, Edit{Have: j})
			j++
		default:
			edits = append(edits, Edit{Missing: true, Want: i})
			i++
		}
	}
	return edits
}

// LineDiff describes Diff of rules written as text lines.
func LineDiff(want, have []string) []string {
	var out []string
	for _, e := range Diff(want, have) {
		if e.Missing {
			out = append(out, fmt.Sprintf("missing rule %d: %s", e.Want+1, want[e.Want]))
		} else {
			out = append(out, fmt.Sprintf("unexpected rule %d: %s", e.Have+1, have[e.Have]))
		}
	}
	return out
}
