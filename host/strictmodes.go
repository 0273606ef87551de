package host

import (
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// The files that decide the firewall — every torrc, defaults file and
// %include'd file or directory, and relayfw.toml — must be root's, as sshd's
// StrictModes wants a user's keys to be theirs: whoever can write one decides
// what the firewall lets out. relayfw refuses (exit 65) such a file unless:
//
//   - it is owned by root or by the user running relayfw (so that a
//     developer can print the firewall of their own clone), and is not
//     writable by its group or by others (an included directory likewise:
//     whoever can add a file to it decides the policy);
//   - every directory above it is owned by root or by that user and is not
//     writable by group or others, except a directory with the sticky bit
//     (such as /tmp), where others cannot replace or rename the entries
//     that are not theirs.
//
// The file's own owner and mode are read from the opened file (fstat), the
// one that is then read. Access control lists are not looked at.
//
// strict_modes = false in relayfw.toml accepts such files with a warning.
// relayfw.toml itself is always checked: whoever could write it could
// switch the check off (and add an allowance of their own).

// UnsafeFileError is an input file someone other than root (or the user
// running relayfw) can change; relayfw exits 65. Its message says who can,
// the owner and mode, and the fix; the caller names the kind of file.
type UnsafeFileError struct {
	Path   string // the file
	Object string // what is unsafe: the file, or a directory above it
	Owner  string
	Mode   fs.FileMode
	Why    string
}

func (e *UnsafeFileError) Error() string {
	what := "it"
	if e.Object != e.Path {
		what = "its directory " + ShowPath(e.Object)
	}
	return fmt.Sprintf("%s %s (owner %s, mode %04o), so a user other than root could change the firewall; fix: %s",
		what, e.Why, e.Owner, uint32(e.Mode.Perm())|stickyBits(e.Mode), e.fix())
}

func (e *UnsafeFileError) fix() string {
	q := strconv.Quote(e.Object)
	if e.Object == ShowPath(e.Object) && !hasShellMeta(e.Object) {
		q = e.Object
	}
	if e.Why == "is owned by another user" {
		return fmt.Sprintf("chown root:root %s && chmod go-w %s", q, q)
	}
	return "chmod go-w " + q
}

func hasShellMeta(s string) bool {
	for _, r := range s {
		switch r {
		case ' ', '\'', '"', '\\', '$', '`', '*', '?', '[', ']', '&', ';', '|', '<', '>', '(', ')', '{', '}', '#', '~', '!':
			return true
		}
	}
	return false
}

func stickyBits(m fs.FileMode) uint32 {
	if m&fs.ModeSticky != 0 {
		return 0o1000
	}
	return 0
}

// checkOwnerMode checks one file or directory. content is false for a
// directory above an input, where the sticky bit makes a writable
// directory safe.
func (s *System) checkOwnerMode(path, object string, fi fs.FileInfo, content bool) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil // not a Unix file system: nothing to tell
	}
	bad := func(why string) error {
		return &UnsafeFileError{Path: path, Object: object, Owner: ownerName(st.Uid), Mode: fi.Mode(), Why: why}
	}
	switch perm := fi.Mode().Perm(); {
	case !s.trustedOwner(st.Uid):
		return bad("is owned by another user")
	case !content && fi.Mode()&fs.ModeSticky != 0:
		return nil
	case perm&0o002 != 0:
		return bad("is writable by others")
	case perm&0o020 != 0:
		return bad("is writable by its group")
	}
	return nil
}

func ownerName(uid uint32) string {
	id := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(id); err == nil {
		return u.Username
	}
	return "uid " + id
}

// checkAncestors checks every directory above path, as given and with its
// symbolic links resolved.
func (s *System) checkAncestors(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil
	}
	chains := []string{abs}
	if real, err := filepath.EvalSymlinks(abs); err == nil && real != abs {
		chains = append(chains, real)
	}
	for _, p := range chains {
		for dir := filepath.Dir(p); ; dir = filepath.Dir(dir) {
			fi, err := os.Stat(dir)
			if err != nil {
				return nil // reading the file reports it
			}
			if err := s.checkOwnerMode(path, dir, fi, false); err != nil {
				return err
			}
			if dir == filepath.Dir(dir) {
				break
			}
		}
	}
	return nil
}

// openTrusted opens path and checks it, on the open file, and the
// directories above it; content is false only for a directory above an
// input. The file is returned open also when it is unsafe (unsafe says
// why), for strict_modes = false.
func (s *System) openTrusted(path string) (f *os.File, unsafe, err error) {
	f, fi, err := openInput(path, true)
	if err != nil {
		return nil, nil, err
	}
	if unsafe = s.checkOwnerMode(path, path, fi, true); unsafe == nil {
		unsafe = s.checkAncestors(path)
	}
	return f, unsafe, nil
}

// readTrusted reads a file that decides the firewall; unsafe is the
// check's verdict (nil: safe).
func (s *System) readTrusted(path string) (data []byte, unsafe, err error) {
	f, unsafe, err := s.openTrusted(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	data, err = readInput(f)
	return data, unsafe, err
}

// readDirTrusted lists a directory whose files decide the firewall.
func (s *System) readDirTrusted(path string) (entries []fs.DirEntry, unsafe, err error) {
	f, unsafe, err := s.openTrusted(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	entries, err = f.ReadDir(-1)
	slices.SortFunc(entries, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return entries, unsafe, err
}

// statTrusted checks the directory a glob pattern lists, when it exists.
func (s *System) statTrusted(pattern, dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil
	}
	if err := s.checkOwnerMode(pattern, dir, fi, true); err != nil {
		return err
	}
	return s.checkAncestors(pattern)
}
