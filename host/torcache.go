package host

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"net"
	"path/filepath"
	"slices"
	"strings"
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
	return in.sys.rememberedPath(verdictKind, t.Torrc+"\x00"+t.Defaults+"\x00"+t.defaultsName)
}

// verdictKind names the files of remembered verdicts.
const verdictKind = "tor-verdict"

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
	var v rememberedVerdict
	if !recall(in.verdictPath(t), &v) || v.Key != key || !strings.HasPrefix(v.Verdict, "accepted by tor") {
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
	in.sys.remember(verdictKind, in.verdictPath(t), rememberedVerdict{Key: key, Verdict: verdict, At: time.Now().UTC()})
}
