// Package torconf reads a torrc as tor 0.4.9 does (%include, continuation
// lines, quoting), knows tor's option table, and turns the lines into the
// options relayfw needs (Options), with tor's defaults and refusals.
package torconf

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/relayfw/relayfw/internal/torcompat"
)

// ConfigLine is one "Keyword value" line of a torrc, after %include
// expansion, continuation joining and comment removal.
type ConfigLine struct {
	Key    string // as written, without a leading "+" or "/"
	Value  string
	File   string
	Line   int  // 1-based line where the keyword starts
	Clear  bool // "/Key": clear the option
	Append bool // "+Key": add to a list set by the defaults file
}

// Where is "file:line" for messages.
func (c ConfigLine) Where() string { return fmt.Sprintf("%s:%d", c.File, c.Line) }

// SyntaxError is a torrc (or exit policy) problem at a file and line; tor
// refuses to start with it, and relayfw exits 65.
type SyntaxError struct {
	File string
	Line int
	Err  error
}

func (e *SyntaxError) Error() string {
	if strings.HasPrefix(e.File, "--") { // a command-line flag such as --policy
		return fmt.Sprintf("%s: %v", e.File, e.Err)
	}
	if e.Line > 0 {
		return fmt.Sprintf("torrc %s:%d: %v", e.File, e.Line, e.Err)
	}
	return fmt.Sprintf("torrc %s: %v", e.File, e.Err)
}

func (e *SyntaxError) Unwrap() error { return e.Err }

// FileError is a torrc or included file that cannot be read; relayfw
// exits 66.
type FileError struct {
	Path string
	Err  error
}

func (e *FileError) Error() string { return fmt.Sprintf("torrc %s: %v", e.Path, e.Err) }
func (e *FileError) Unwrap() error { return e.Err }

// maxIncludeDepth is tor's MAX_INCLUDE_RECURSION_LEVEL.
const maxIncludeDepth = 31

// FS is what the torrc reader needs from a file system; os.DirFS-like
// implementations let tests and fuzzers run without touching disk.
type FS interface {
	ReadFile(name string) ([]byte, error)
	Stat(name string) (fs.FileInfo, error)
	ReadDir(name string) ([]fs.DirEntry, error)
	Glob(pattern string) ([]string, error)
}

// OSFS reads the real file system. Relative paths are relative to the
// working directory, as they are for tor.
type OSFS struct{}

func (OSFS) ReadFile(name string) ([]byte, error)       { return os.ReadFile(name) }
func (OSFS) Stat(name string) (fs.FileInfo, error)      { return os.Stat(name) }
func (OSFS) ReadDir(name string) ([]fs.DirEntry, error) { return os.ReadDir(name) }
func (OSFS) Glob(pattern string) ([]string, error)      { return filepath.Glob(pattern) }

// Read reads a torrc from disk, following %include as tor does.
func Read(path string) ([]ConfigLine, error) {
	return ReadFS(OSFS{}, path)
}

// ReadFS reads a torrc through fsys.
func ReadFS(fsys FS, path string) ([]ConfigLine, error) {
	return ReadTemplateFS(fsys, path, nil)
}

// ReadTemplateFS reads a torrc through fsys after edit rewrites its
// text (nil: none), as Debian's units rewrite "@@NAME@@" in the defaults
// file of a tor instance.
func ReadTemplateFS(fsys FS, path string, edit func(string) string) ([]ConfigLine, error) {
	data, err := fsys.ReadFile(path)
	if err != nil {
		return nil, &FileError{Path: path, Err: unwrapPathError(err)}
	}
	text := string(data)
	if edit != nil {
		text = edit(text)
	}
	return parseTorrcText(fsys, path, text, 1)
}

// Parse parses torrc text held in memory; name is used in messages
// and %include is resolved through fsys (nil: %include is an error).
func Parse(fsys FS, name, text string) ([]ConfigLine, error) {
	return parseTorrcText(fsys, name, text, 1)
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// parseTorrcText is tor's config_get_lines_aux with extended=1 and
// %include handling.
func parseTorrcText(fsys FS, file, text string, depth int) ([]ConfigLine, error) {
	if depth > maxIncludeDepth {
		return nil, &SyntaxError{File: file, Err: fmt.Errorf("more than %d nested %%includes", maxIncludeDepth)}
	}
	lines := newLineIndex(text)
	// tor reads the file as a C string: a NUL byte silently ends it, and
	// everything after it is ignored. A torrc is text; a NUL means a binary
	// or damaged file, which must not become a firewall.
	if i := strings.IndexByte(text, 0); i >= 0 {
		return nil, &SyntaxError{File: file, Line: lines.lineOf(i), Err: errors.New("binary data (a NUL byte): not a text file; tor would silently ignore the rest of it")}
	}
	var out []ConfigLine
	pos := 0
	for pos < len(text) {
		key, value, keyAt, next, err := parseConfigLine(text, pos)
		if err != nil {
			return nil, &SyntaxError{File: file, Line: lines.lineOf(keyAt), Err: err}
		}
		pos = next
		if key == "" {
			continue
		}
		cl := ConfigLine{Key: key, Value: value, File: file, Line: lines.lineOf(keyAt)}
		switch key[0] {
		case '+':
			cl.Key, cl.Append = key[1:], true
		case '/':
			cl.Key, cl.Value, cl.Clear = key[1:], "", true
		}
		if cl.Key == "%include" {
			inc, err := includeLines(fsys, cl, depth)
			if err != nil {
				return nil, err
			}
			out = append(out, inc...)
			continue
		}
		out = append(out, cl)
	}
	return out, nil
}

// includeLines is tor's config_process_include: the pattern is globbed,
// each match that is a file is read, each directory contributes its
// non-hidden regular files in sorted order, empty files are skipped.
func includeLines(fsys FS, at ConfigLine, depth int) ([]ConfigLine, error) {
	if fsys == nil {
		return nil, &SyntaxError{File: at.File, Line: at.Line, Err: errors.New("%include is not supported here")}
	}
	pattern := at.Value
	matches := []string{pattern}
	if strings.ContainsAny(pattern, "*?[") {
		m, err := fsys.Glob(pattern)
		if err != nil {
			return nil, &SyntaxError{File: at.File, Line: at.Line, Err: fmt.Errorf("%%include %q: %w", pattern, err)}
		}
		sort.Strings(m)
		matches = m
	}
	var out []ConfigLine
	for _, path := range matches {
		info, err := fsys.Stat(path)
		if err != nil {
			return nil, &FileError{Path: path, Err: fmt.Errorf("%%include at %s: %w", at.Where(), unwrapPathError(err))}
		}
		var files []string
		if info.IsDir() {
			entries, err := fsys.ReadDir(path)
			if err != nil {
				return nil, &FileError{Path: path, Err: fmt.Errorf("%%include at %s: %w", at.Where(), unwrapPathError(err))}
			}
			names := make([]string, 0, len(entries))
			for _, e := range entries {
				names = append(names, e.Name())
			}
			sort.Strings(names)
			for _, name := range names {
				if strings.HasPrefix(name, ".") {
					continue
				}
				full := filepath.Join(path, name)
				if fi, err := fsys.Stat(full); err == nil && fi.Mode().IsRegular() {
					files = append(files, full)
				}
			}
		} else if info.Mode().IsRegular() {
			if info.Size() == 0 {
				continue
			}
			files = []string{path}
		} else {
			return nil, &FileError{Path: path, Err: fmt.Errorf("%%include at %s: not a file or directory", at.Where())}
		}
		for _, f := range files {
			data, err := fsys.ReadFile(f)
			if err != nil {
				return nil, &FileError{Path: f, Err: fmt.Errorf("%%include at %s: %w", at.Where(), unwrapPathError(err))}
			}
			lines, err := parseTorrcText(fsys, f, string(data), depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, lines...)
		}
	}
	return out, nil
}

// parseConfigLine is tor's parse_config_line_from_str_verbose: it skips
// blank lines and comments, then reads one "key value" line starting at
// pos. key is "" at the end of the text.
func parseConfigLine(text string, pos int) (key, value string, keyAt, next int, err error) {
	n := len(text)
	pos = skipBlankAndComments(text, pos)
	if pos >= n {
		return "", "", pos, pos, nil
	}
	keyAt = pos
	for pos < n && !torcompat.IsSpace(text[pos]) && text[pos] != '#' &&
		!(text[pos] == '\\' && pos+1 < n && text[pos+1] == '\n') {
		pos++
	}
	key = text[keyAt:pos]
	for pos < n && (text[pos] == ' ' || text[pos] == '\t') {
		pos++
	}
	if pos < n && text[pos] == '"' {
		value, pos, err = quotedValue(text, pos)
	} else {
		value, pos = plainValue(text, pos)
	}
	if err != nil {
		return "", "", keyAt, 0, err
	}
	if pos < n && text[pos] == '#' {
		for pos < n && text[pos] != '\n' {
			pos++
		}
	}
	for pos < n && torcompat.IsSpace(text[pos]) {
		pos++
	}
	return key, value, keyAt, pos, nil
}

// skipBlankAndComments skips whitespace and whole "#" comment lines.
func skipBlankAndComments(text string, pos int) int {
	n := len(text)
	for {
		for pos < n && torcompat.IsSpace(text[pos]) {
			pos++
		}
		if pos < n && text[pos] == '#' {
			for pos < n && text[pos] != '\n' {
				pos++
			}
			continue
		}
		return pos
	}
}

// quotedValue reads a value in double quotes at pos, which may be
// followed only by blanks, a line end or a comment.
func quotedValue(text string, pos int) (string, int, error) {
	n := len(text)
	value, pos, ok := unescapeString(text, pos)
	if !ok {
		return "", 0, errors.New("invalid escape sequence in quoted string")
	}
	for pos < n && (text[pos] == ' ' || text[pos] == '\t') {
		pos++
	}
	if pos < n && text[pos] == '\r' {
		pos++
		if pos < n && text[pos] == '\n' {
			pos++
		}
	}
	if pos < n && text[pos] != '#' && text[pos] != '\n' {
		return "", 0, errors.New("excess data after quoted string")
	}
	return value, pos, nil
}

// plainValue reads an unquoted value at pos up to the line end (a
// comment ends it, unless it continues with a backslash-newline), trims
// trailing blanks and joins continued lines, dropping the comments
// inside them.
func plainValue(text string, pos int) (string, int) {
	n := len(text)
	valAt := pos
	continuation := false
	for pos < n && text[pos] != '\n' && (text[pos] != '#' || continuation) {
		switch {
		case text[pos] == '\\' && pos+1 < n && text[pos+1] == '\n':
			continuation = true
			pos += 2
		case text[pos] == '#':
			for pos < n && text[pos] != '\n' {
				pos++
			}
			if pos < n && text[pos] == '\n' {
				pos++
			}
		default:
			pos++
		}
	}
	end := pos
	if pos < n && text[pos] == '\n' {
		pos++
	}
	for end > valAt && torcompat.IsSpace(text[end-1]) {
		end--
	}
	value := text[valAt:end]
	if continuation {
		value = joinContinued(value)
	}
	return value, pos
}

// joinContinued removes the backslash-newlines and comments of a value
// that spans lines.
func joinContinued(value string) string {
	var b strings.Builder
	for i := 0; i < len(value); {
		switch {
		case value[i] == '#':
			for i < len(value) && value[i] != '\n' {
				i++
			}
			if i < len(value) {
				i++
			}
		case value[i] == '\\' && i+1 < len(value) && value[i+1] == '\n':
			i += 2
		default:
			b.WriteByte(value[i])
			i++
		}
	}
	return b.String()
}

func isODigit(c byte) bool { return c >= '0' && c <= '7' }

// unescapeString is tor's unescape_string for a value starting with '"'.
// It returns the decoded value and the position after the closing quote.
func unescapeString(s string, pos int) (string, int, bool) {
	var b strings.Builder
	i := pos + 1
	for {
		if i >= len(s) || s[i] == '\n' {
			return "", 0, false
		}
		c := s[i]
		switch {
		case c == '"':
			return b.String(), i + 1, true
		case c != '\\':
			b.WriteByte(c)
			i++
		case i+1 >= len(s):
			return "", 0, false
		default:
			e := s[i+1]
			switch {
			case e == 'x' || e == 'X':
				if i+3 >= len(s) || !torcompat.IsXDigit(s[i+2]) || !torcompat.IsXDigit(s[i+3]) {
					return "", 0, false
				}
				b.WriteByte(byte(torcompat.HexVal(s[i+2])<<4 | torcompat.HexVal(s[i+3])))
				i += 4
			case isODigit(e):
				v := int(e - '0')
				i += 2
				for k := 0; k < 2 && i < len(s) && isODigit(s[i]); k++ {
					v = v*8 + int(s[i]-'0')
					i++
				}
				if v > 255 {
					return "", 0, false
				}
				b.WriteByte(byte(v))
			case e == 'n':
				b.WriteByte('\n')
				i += 2
			case e == 'r':
				b.WriteByte('\r')
				i += 2
			case e == 't':
				b.WriteByte('\t')
				i += 2
			case e == '"' || e == '\\' || e == '\'':
				b.WriteByte(e)
				i += 2
			default:
				return "", 0, false
			}
		}
	}
}

// lineIndex maps byte offsets to 1-based line numbers.
type lineIndex []int

func newLineIndex(text string) lineIndex {
	idx := lineIndex{0}
	for i := 0; i < len(text); i++ {
		if text[i] == '\n' {
			idx = append(idx, i+1)
		}
	}
	return idx
}

func (l lineIndex) lineOf(off int) int {
	return sort.Search(len(l), func(i int) bool { return l[i] > off })
}
