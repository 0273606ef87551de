package torconf

//go:generate go run gen_toroptions.go

import (
	"fmt"
	"strings"
)

// optKind says how tor treats an option name it knows.
type optKind uint8

const (
	optSettable   optKind = 1 << iota // an ordinary option
	optObsolete                       // accepted, warned about and ignored
	optVirtual                        // known, but tor refuses to assign it
	optDeprecated                     // settable, with a deprecation warning
)

type torOptionName struct {
	name string
	kind optKind
}

type torAbbrev struct {
	short, full string
	cmdlineOnly bool // applies to tor's command line only, not to a torrc
	warn        bool // tor warns that the short name is deprecated
}

// torOptionIndex and torAbbrevIndex find exact names without a scan: a
// block list is tens of thousands of ExitPolicy lines.
var torOptionIndex, torAbbrevIndex = func() (map[string]int, map[string][]int) {
	names := map[string]int{}
	for i, o := range torOptionTable {
		names[strings.ToLower(o.name)] = i
	}
	abbrevs := map[string][]int{}
	for i, a := range torAbbrevTable {
		abbrevs[strings.ToLower(a.short)] = append(abbrevs[strings.ToLower(a.short)], i)
	}
	return names, abbrevs
}()

// torOptionKey is the option a torrc keyword names, as tor's confmgt
// resolves it: config_expand_abbrev applies the alias table (case
// insensitively, one pass in table order), then config_mgr_find_var looks
// for an exact case-insensitive name and, failing that, for the first
// name in strcasecmp order that starts with the keyword. tor accepts such
// a truncated keyword with a warning; relayfw does the same.
type torOptionKey struct {
	Name     string   // tor's canonical spelling
	Kind     optKind  // what tor does with it
	Warnings []string // what tor warns about the keyword
}

// lookupTorOption resolves a torrc keyword (without "+" or "/"). ok is
// false when tor does not know it: "Unknown option 'KEY'. Failing."
func lookupTorOption(key string) (torOptionKey, bool) {
	var res torOptionKey
	// One pass over the table in order, each entry compared with the key
	// as the entries before it left it: the index only skips the entries
	// that cannot match.
	for pos := 0; ; {
		next := -1
		for _, i := range torAbbrevIndex[strings.ToLower(key)] {
			if i >= pos && !torAbbrevTable[i].cmdlineOnly {
				next = i
				break
			}
		}
		if next < 0 {
			break
		}
		a := torAbbrevTable[next]
		if a.warn {
			res.Warnings = append(res.Warnings, fmt.Sprintf("the option name %q is deprecated; tor reads it as %q", a.short, a.full))
		}
		key, pos = a.full, next+1
	}
	if key == "" {
		return res, false
	}
	var found *torOptionName
	if i, ok := torOptionIndex[strings.ToLower(key)]; ok {
		found = &torOptionTable[i]
	}
	if found == nil {
		for i := range torOptionTable {
			if len(key) <= len(torOptionTable[i].name) && strings.EqualFold(torOptionTable[i].name[:len(key)], key) {
				found = &torOptionTable[i]
				res.Warnings = append(res.Warnings, fmt.Sprintf("the abbreviation %q is deprecated; tor reads it as %q (write the full name)", key, found.name))
				break
			}
		}
	}
	if found == nil {
		return res, false
	}
	res.Name, res.Kind = found.name, found.kind
	switch {
	case found.kind&optObsolete != 0:
		res.Warnings = append(res.Warnings, fmt.Sprintf("tor skips the obsolete option %q", found.name))
	case found.kind&optDeprecated != 0:
		res.Warnings = append(res.Warnings, fmt.Sprintf("the %s option is deprecated and will most likely be removed from tor", found.name))
	}
	return res, true
}

// OptionName is tor's own spelling of the option a torrc keyword names
// (tor's messages use it), "" when tor does not know the keyword.
func OptionName(key string) string {
	k, _ := lookupTorOption(key)
	return k.Name
}
