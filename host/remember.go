package host

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// What relayfw remembers between commands (tor's verdicts, parsed
// consensuses) lives in its state directory, one file per thing of a
// kind, written only by root and believed only when no one else can
// have written it.

// rememberedPath is the file in which s remembers the thing named name
// of a kind: KIND-HASH.json.
func (s *System) rememberedPath(kind, name string) string {
	sum := sha256.Sum256([]byte(name))
	return filepath.Join(s.StateDir, kind+"-"+hex.EncodeToString(sum[:8])+".json")
}

// recall reads a remembered file into v, when only root can have written
// it.
func recall(path string, v any) bool {
	return rootsOnly(path, false) && readJSON(path, v)
}

// remember writes v to a remembered file of a kind, and removes the
// kind's files no command used for an hour. A relayfw that is not root
// writes nothing: it reads and asks again next time.
func (s *System) remember(kind, path string, v any) {
	data, err := json.Marshal(v)
	if err != nil || os.Geteuid() != 0 || writeFileOwn(path, data) != nil {
		return
	}
	forgetOld(filepath.Dir(path), kind+"-*.json")
}

// writeFileOwn writes a file of relayfw's state as a file of its own,
// renamed over the old: readers (check, status) may race to write the
// same.
func writeFileOwn(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		_ = os.Remove(f.Name())
	}
	return err
}

// forgetOld removes the remembered files matching pattern that are past
// VerdictMaxAge: those of torrcs and consensus files that were read once
// and not since (tests', renamed ones).
func forgetOld(dir, pattern string) {
	old, _ := filepath.Glob(filepath.Join(dir, pattern))
	for _, f := range old {
		if fi, err := os.Lstat(f); err == nil && time.Since(fi.ModTime()) > VerdictMaxAge {
			_ = os.Remove(f)
		}
	}
}

// rootsOnly reports whether path is a regular file (or, dir, a
// directory) that only root can have written: root's, and not writable by
// its group or others. relayfw trusts what it remembered only then.
func rootsOnly(path string, dir bool) bool {
	var st syscall.Stat_t
	kind := uint32(syscall.S_IFREG)
	if dir {
		kind = syscall.S_IFDIR
	}
	return syscall.Lstat(path, &st) == nil && st.Mode&syscall.S_IFMT == kind && st.Uid == 0 && st.Mode&0o022 == 0
}

// fileIdentity is statIdentity of the file or directory at path (links
// followed), or why there is none.
func fileIdentity(path string) string {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return "absent: " + err.Error()
	}
	return statIdentity(&st)
}

// statIdentity is what changes when a file or directory is replaced,
// written, renamed over, chmod'ed or chown'ed: its device and inode,
// mode, owner, size, and modification and change times (the change time
// no one can set back).
func statIdentity(st *syscall.Stat_t) string {
	return fmt.Sprintf("%d:%d %o %d:%d %d %d.%09d %d.%09d", st.Dev, st.Ino, st.Mode, st.Uid, st.Gid, st.Size,
		st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
}

// appendAddr appends an address as its length (4 or 16) and its bytes.
func appendAddr(buf []byte, a netip.Addr) []byte {
	b := a.AsSlice()
	buf = append(buf, byte(len(b)))
	return append(buf, b...)
}
