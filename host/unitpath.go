package host

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// RefusedFileError is an input file relayfw refuses to use; relayfw exits
// 65. Reason says why and, where there is one, the fix.
type RefusedFileError struct {
	Path   string
	Reason string
}

func (e *RefusedFileError) Error() string {
	return fmt.Sprintf("%s: %s", ShowPath(e.Path), e.Reason)
}

// ShowPath is how messages name a file: as it is, or quoted when it holds
// a character that would break the line (a newline, another control
// character, bytes that are not UTF-8).
func ShowPath(p string) string {
	if utf8.ValidString(p) && !strings.ContainsFunc(p, unicode.IsControl) {
		return p
	}
	return strconv.Quote(p)
}

// checkUnitPath refuses a path that a systemd unit cannot name.
func checkUnitPath(p string) error {
	var why string
	switch {
	case !utf8.ValidString(p):
		why = "not UTF-8, which systemd refuses in a unit file"
	case strings.ContainsFunc(p, unicode.IsControl):
		why = "a control character (such as a newline) in the name, which a systemd unit cannot hold"
	case strings.TrimRight(p, " ") != p:
		why = "ends in a space, which systemd strips from a unit file's values"
	case (len(p)-len(strings.TrimRight(p, `\`)))%2 == 1:
		why = "ends in a backslash, which systemd reads as a line continuation"
	default:
		return nil
	}
	return &RefusedFileError{Path: p, Reason: why + ": relayfw could not watch it for changes; rename it"}
}

// PathChangedValue is p as the value of a PathChanged= line of a unit
// file, as systemd reads it: the value is the rest of the line with the
// whitespace around it stripped, taken literally (no C escapes: a space
// or a backslash stands for itself) once its specifiers are expanded, so
// a "%" is written "%%". A path that such a line cannot name (a control
// character, bytes that are not UTF-8, a trailing space or backslash) is
// an error.
func PathChangedValue(p string) (string, error) {
	if err := checkUnitPath(p); err != nil {
		return "", err
	}
	return strings.ReplaceAll(p, "%", "%%"), nil
}
