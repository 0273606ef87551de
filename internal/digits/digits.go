// Package digits writes numbers for people: 262,144 rather than 262144.
// The model (exitpolicy), the commands and the benchmarks all print sizes
// and counts this way.
package digits

import "strconv"

// Grouped writes n in decimal with a comma between groups of three
// digits, the sign kept in front: 1,233,078; -20,000.
func Grouped[N int | int64 | uint64](n N) string {
	var s string
	switch v := any(n).(type) {
	case int:
		s = strconv.Itoa(v)
	case int64:
		s = strconv.FormatInt(v, 10)
	case uint64:
		s = strconv.FormatUint(v, 10)
	}
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
