package host

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// VerdictMaxAge is how long tor's acceptance of a configuration is
// remembered at most: tor --verify-config costs 10-30 ms per instance on
// every command, check and status included, and monitoring runs those
// every minute.
const VerdictMaxAge = time.Hour

// A remembered verdict is only used while nothing tor's judgement could
// depend on changed: verdictKey digests the tor binary, the files relayfw
// read for the instance and their lines as it read them, the files and
// directories any option names (DataDirectory and the like) and their
// parents, the user and group databases, the interfaces' addresses (tor's
// exit-policy abort), the call relayfw makes and the relayfw binary. Only
// acceptances are remembered: a refusal is asked again, so that its
// reason is tor's latest.
type rememberedVerdict struct {
	Key     string    `json:"key"`
	Verdict string    `json:"verdict"`
	At      time.Time `json:"at"`
}

// verdictPath is where the verdict on an instance is remembered: one file
// per torrc, which the next acceptance replaces.
func (in *Inputs) verdictPath(t *Instance) string {
	sum := sha256.Sum256([]byte(t.Torrc + "\x00" + t.Defaults + "\x00" + t.defaultsName))
	return filepath.Join(in.sys.StateDir, "tor-verdict-"+hex.EncodeToString(sum[:8])+".json")
}

// verdictKey digests what tor's verdict on t with j depends on; false
// when part of it cannot be read (then tor is asked).
func (in *Inputs) verdictKey(t *Instance, j TorJudge) (string, bool) {
	build, ok := in.sys.build()
	if !ok {
		return "", false
	}
	h := sha256.New()
	fmt.Fprintf(h, "relayfw %s\ntor %s %s\n", build, j.Path, fileIdentity(j.Path))
	fmt.Fprintf(h, "instance %q %q %q %t\n%s\n", t.Torrc, t.Defaults, t.defaultsName, t.torrcMissing, t.template)
	if p := in.opts.Policy; p != nil {
		fmt.Fprintf(h, "policy %q\n", *p)
	}
	if c := dataDirectoryOwner(t); c != nil {
		fmt.Fprintf(h, "as %d:%d\n", c.Uid, c.Gid)
	}
	files := []string{t.Torrc, t.Defaults, "/etc/passwd", "/etc/group", t.Options.DataDirectory}
	for _, l := range t.lines {
		fmt.Fprintf(h, "line %q %d %q %q %t %t\n", l.File, l.Line, l.Key, l.Value, l.Clear, l.Append)
		files = append(files, l.File)
		files = append(files, namedPaths(l.Value)...)
	}
	for _, f := range files {
		if f != "" {
			files = append(files, filepath.Dir(f))
		}
	}
	slices.Sort(files)
	for _, f := range slices.Compact(files) {
		fmt.Fprintf(h, "file %q %s\n", f, fileIdentity(f))
	}
	writeInterfaceAddrs(h)
	return hex.EncodeToString(h.Sum(nil)), true
}

// namedPaths are the absolute paths in an option's value
// ("unix:/run/tor/control" included).
func namedPaths(value string) []string {
	var out []string
	for _, w := range strings.Fields(value) {
		w = strings.Trim(strings.TrimPrefix(w, "unix:"), `"`)
		if strings.HasPrefix(w, "/") {
			out = append(out, filepath.Clean(w))
		}
	}
	return out
}

// fileIdentity is what changes when a file or directory is replaced,
// written, renamed over, chmod'ed or chown'ed: its device and inode,
// mode, owner, size and change time (which no one can set back).
func fileIdentity(path string) string {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return "absent: " + err.Error()
	}
	return fmt.Sprintf("%d:%d %o %d:%d %d %d.%09d", st.Dev, st.Ino, st.Mode, st.Uid, st.Gid, st.Size, st.Ctim.Sec, st.Ctim.Nsec)
}

// writeInterfaceAddrs writes the interfaces' names, flags and addresses.
func writeInterfaceAddrs(h hash.Hash) {
	ifaces, err := net.Interfaces()
	if err != nil {
		fmt.Fprintf(h, "interfaces: %v\n", err)
		return
	}
	for _, ifc := range ifaces {
		addrs, _ := ifc.Addrs()
		fmt.Fprintf(h, "interface %q %v %v\n", ifc.Name, ifc.Flags, addrs)
	}
}

// rememberedAcceptance is tor's remembered acceptance of t under key,
// when there is one younger than VerdictMaxAge, in a file only root can
// have written.
func (in *Inputs) rememberedAcceptance(t *Instance, key string) (string, bool) {
	path := in.verdictPath(t)
	if !rootsOnly(path, false) {
		return "", false
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	var v rememberedVerdict
	if json.Unmarshal(data, &v) != nil || v.Key != key || !strings.HasPrefix(v.Verdict, "accepted by tor") {
		return "", false
	}
	if age := time.Since(v.At); age < 0 || age > VerdictMaxAge {
		return "", false
	}
	return v.Verdict, true
}

// rememberAcceptance remembers tor's acceptance of t under key; a
// relayfw that cannot write its state directory (not root) just asks
// tor again next time.
func (in *Inputs) rememberAcceptance(t *Instance, key, verdict string) {
	data, err := json.Marshal(rememberedVerdict{Key: key, Verdict: verdict, At: time.Now().UTC()})
	if err != nil || os.Geteuid() != 0 {
		return
	}
	path := in.verdictPath(t)
	if writeFileOwn(path, data) != nil {
		return
	}
	forgetOld(filepath.Dir(path), "tor-verdict-*.json")
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
