package host

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/relayfw/relayfw/config"
	"github.com/relayfw/relayfw/exitpolicy"
	"github.com/relayfw/relayfw/torconf"
)

// Debian's layout of tor (System.TorEtcDir, System.TorShareDir).
func (s *System) debianDefaultTorrc() string { return filepath.Join(s.TorEtcDir, "torrc") }
func (s *System) debianDefaults() string {
	return filepath.Join(s.TorShareDir, "tor-service-defaults-torrc")
}
func (s *System) debianInstanceDefaults() string {
	return filepath.Join(s.TorShareDir, "tor-service-defaults-torrc-instances")
}

// Instance is one tor process: where its configuration comes from and
// what relayfw computed from it.
type Instance struct {
	Name     string
	Torrc    string
	Defaults string // "" when none
	// defaultsName replaces "@@NAME@@" in the defaults file (Debian's
	// instance template), "" for none; template is that file with the
	// name, as relayfw read it.
	defaultsName, template string

	Options   torconf.Options
	Effective exitpolicy.Effective
	UID       *uint32 // its User's uid; nil for a single torrc without User
	// TorVerdict is tor's own judgement of the configuration: "accepted
	// by tor 0.4.9.11", or why tor was not consulted.
	TorVerdict string

	// lines are the defaults file's and the torrc's lines, for pointing
	// at the one tor refuses.
	lines []torconf.ConfigLine
	// torrcMissing: a --policy alone, on a host without a torrc.
	torrcMissing bool
}

// instanceSource is where an instance's configuration comes from.
type instanceSource struct {
	name, torrc, defaults, defaultsName string
}

// debianInstanceName recognises /etc/tor/instances/NAME/torrc.
func (s *System) debianInstanceName(torrc string) (string, bool) {
	dir, file := filepath.Split(filepath.Clean(torrc))
	if file != "torrc" {
		return "", false
	}
	parent, name := filepath.Split(filepath.Clean(dir))
	if filepath.Clean(parent) != filepath.Join(s.TorEtcDir, "instances") {
		return "", false
	}
	return name, true
}

// withDebianDefaults gives a torrc of Debian's layout the defaults file its
// systemd unit passes to tor, when that file exists.
func (s *System) withDebianDefaults(src instanceSource) instanceSource {
	switch name, isInstance := s.debianInstanceName(src.torrc); {
	case filepath.Clean(src.torrc) == s.debianDefaultTorrc():
		if _, err := os.Stat(s.debianDefaults()); err == nil {
			src.defaults = s.debianDefaults()
		}
	case isInstance:
		if _, err := os.Stat(s.debianInstanceDefaults()); err == nil {
			src.defaults, src.defaultsName = s.debianInstanceDefaults(), name
		}
	}
	return src
}

var unsafeNameChars = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// instanceNameOf names the instance a --torrc path runs: "default" for
// /etc/tor/torrc, NAME for Debian's instances, else the file's directory
// (for .../NAME/torrc) or the file's own name.
func (s *System) instanceNameOf(torrc string) string {
	if filepath.Clean(torrc) == s.debianDefaultTorrc() {
		return "default"
	}
	if name, ok := s.debianInstanceName(torrc); ok {
		return name
	}
	dir, file := filepath.Split(filepath.Clean(torrc))
	name := strings.TrimSuffix(file, filepath.Ext(file))
	if file == "torrc" && dir != "" {
		name = filepath.Base(dir)
	}
	if name = unsafeNameChars.ReplaceAllString(name, "_"); name == "" || name == "." {
		name = "torrc"
	}
	return name
}

// instanceSources lists the tor instances to read: the --torrc flags (one
// instance each), else relayfw.toml's [[instance]] tables or its torrc,
// else what Debian's units run: /etc/tor/torrc and every
// /etc/tor/instances/*/torrc.
func (in *Inputs) instanceSources() ([]instanceSource, error) {
	s := in.sys
	var srcs []instanceSource
	switch {
	case len(in.opts.Torrcs) > 0:
		for _, t := range in.opts.Torrcs {
			srcs = append(srcs, s.withDebianDefaults(instanceSource{name: s.instanceNameOf(t), torrc: t}))
		}
	case len(in.cfg.Instances) > 0:
		for _, ci := range in.cfg.Instances {
			srcs = append(srcs, instanceSource{name: ci.Name, torrc: ci.Torrc, defaults: ci.DefaultsTorrc})
		}
		return srcs, nil
	case in.cfg.Torrc != "":
		srcs = append(srcs, s.withDebianDefaults(instanceSource{name: s.instanceNameOf(in.cfg.Torrc), torrc: in.cfg.Torrc}))
	default:
		matches, err := filepath.Glob(filepath.Join(s.TorEtcDir, "instances", "*", "torrc"))
		if err != nil {
			return nil, err
		}
		sort.Strings(matches)
		_, errDefault := os.Stat(s.debianDefaultTorrc())
		if errDefault == nil || len(matches) == 0 {
			// The default instance; when it is missing and nothing else
			// is there, reading it reports the missing torrc.
			srcs = append(srcs, s.withDebianDefaults(instanceSource{name: "default", torrc: s.debianDefaultTorrc()}))
		}
		for _, m := range matches {
			srcs = append(srcs, s.withDebianDefaults(instanceSource{name: s.instanceNameOf(m), torrc: m}))
		}
	}
	if d := in.opts.DefaultsTorrc; d != nil {
		for i := range srcs {
			srcs[i].defaults, srcs[i].defaultsName = *d, ""
		}
	}
	// Two --torrc flags can give the same name: number the repeats.
	seen := map[string]int{}
	for i := range srcs {
		if n := seen[srcs[i].name]; n > 0 {
			srcs[i].name = fmt.Sprintf("%s-%d", srcs[i].name, n+1)
		}
		seen[srcs[i].name]++
	}
	return srcs, nil
}

// watchFS reads the real file system and records what it was asked about:
// the files and directories a change to which changes the firewall. Each
// of them must be nameable in the systemd unit that watches them (see
// PathChangedValue), and so must every file an included directory lists:
// one that is not is refused rather than silently left unwatched. Each
// file read and directory listed must be root's (see UnsafeFileError);
// with lax (strict_modes = false) one that is not is used with a warning.
type watchFS struct {
	torconf.OSFS
	sys   *System
	paths *[]string
	lax   bool
	warn  func(string)
}

func (w watchFS) add(p string) error {
	if err := checkUnitPath(p); err != nil {
		return err
	}
	if !slices.Contains(*w.paths, p) {
		*w.paths = append(*w.paths, p)
	}
	return nil
}

// trust passes a file the owner and mode check refused, when strict modes
// are off.
func (w watchFS) trust(name string, unsafe error) error {
	if unsafe == nil {
		return nil
	}
	if !w.lax {
		return unsafe
	}
	w.warn(fmt.Sprintf("%s: %v; used anyway (strict_modes = false)", ShowPath(name), unsafe))
	return nil
}

func (w watchFS) ReadFile(name string) ([]byte, error) {
	if err := w.add(name); err != nil {
		return nil, err
	}
	data, unsafe, err := w.sys.readTrusted(name)
	if err != nil {
		return nil, err
	}
	return data, w.trust(name, unsafe)
}

func (w watchFS) Stat(name string) (fs.FileInfo, error) {
	if err := w.add(name); err != nil {
		return nil, err
	}
	return w.OSFS.Stat(name)
}

func (w watchFS) ReadDir(name string) ([]fs.DirEntry, error) {
	if err := w.add(name); err != nil { // a file added to an included directory
		return nil, err
	}
	entries, unsafe, err := w.sys.readDirTrusted(name)
	if err != nil {
		return nil, err
	}
	if err := w.trust(name, unsafe); err != nil {
		return nil, err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue // tor skips hidden files
		}
		if err := checkUnitPath(filepath.Join(name, e.Name())); err != nil {
			return nil, err
		}
	}
	return entries, nil
}

func (w watchFS) Glob(pattern string) ([]string, error) {
	dir := filepath.Dir(pattern)
	if err := w.add(dir); err != nil { // a file that starts to match
		return nil, err
	}
	if !strings.ContainsAny(dir, "*?[\\") {
		if err := w.trust(pattern, w.sys.statTrusted(pattern, dir)); err != nil {
			return nil, err
		}
	}
	matches, err := w.OSFS.Glob(pattern)
	for _, m := range matches {
		if err := checkUnitPath(m); err != nil {
			return nil, err
		}
	}
	return matches, err
}

// readInstance reads one instance's defaults file and torrc as tor does,
// recording in watched every file and directory it depends on. template
// is Debian's instance template with the instance's name, as read ("" for
// another defaults file): what tor is given to judge.
func (in *Inputs) readInstance(src instanceSource) (defaults, lines []torconf.ConfigLine, template string, err error) {
	fsys := watchFS{sys: in.sys, paths: &in.watched, lax: !config.On(in.cfg.StrictModes), warn: func(msg string) { in.log().Warn(msg) }}
	if src.defaults != "" {
		var name func(string) string
		if src.defaultsName != "" {
			name = func(text string) string {
				template = strings.ReplaceAll(text, "@@NAME@@", src.defaultsName)
				return template
			}
		}
		if defaults, err = torconf.ReadTemplateFS(fsys, src.defaults, name); err != nil {
			return nil, nil, "", err
		}
	}
	lines, err = torconf.ReadFS(fsys, src.torrc)
	return defaults, lines, template, err
}

// ErrNoInstance is SelectInstance's error for a name no instance has.
var ErrNoInstance = errors.New("no such tor instance")

// SelectInstance narrows the instances to the one named ("": all).
func SelectInstance(insts []*Instance, name string) ([]*Instance, error) {
	if name == "" {
		return insts, nil
	}
	var names []string
	for _, in := range insts {
		if in.Name == name {
			return []*Instance{in}, nil
		}
		names = append(names, in.Name)
	}
	return nil, fmt.Errorf("%w %q (have: %s)", ErrNoInstance, name, strings.Join(names, ", "))
}

// Describe is how messages name an instance.
func (t *Instance) Describe() string {
	s := fmt.Sprintf("tor instance %s (%s", t.Name, t.Torrc)
	switch {
	case t.Options.User != "":
		s += fmt.Sprintf(", user %s", t.Options.User)
	case t.UID != nil:
		s += ", as root"
	}
	return s + ")"
}

// IsRelay says whether the instance is a relay (it has an ORPort); a
// client instance needs nothing from the firewall that the relays do not.
func (t *Instance) IsRelay() bool {
	for _, p := range t.Options.Ports {
		if p.Kind == "ORPort" {
			return true
		}
	}
	return false
}

// IsExit says whether the instance exits any traffic.
func (t *Instance) IsExit() bool { return !t.Effective.Policy.IsRejectStar() }

// Role says what kind of tor the instance is, in an operator's words.
func (t *Instance) Role() string {
	switch {
	case t.Options.BridgeRelay && t.IsRelay():
		return "a bridge"
	case t.IsExit():
		return "an exit relay"
	case t.IsRelay():
		return "a non-exit relay (guard or middle)"
	}
	return "a tor client, not a relay"
}

// NotExitNote is the plain statement that no instance exits, and what the
// host can still reach; "" when an instance is an exit.
func (in *Inputs) NotExitNote() string {
	var roles []string
	for _, t := range in.Instances {
		if t.IsExit() {
			return ""
		}
		r := t.Role()
		if len(in.Instances) > 1 {
			r = t.Name + ": " + r
		}
		roles = append(roles, r)
	}
	reach := []string{"the relay links (tor's sockets: other relays' ORPorts, the directory authorities and fallbacks)"}
	allow := in.cfg.Allow
	for _, a := range []struct {
		on   bool
		what string
	}{
		{config.On(allow.DNS), "DNS"}, {config.On(allow.DHCP), "DHCP"}, {config.On(allow.NTP), "NTP"},
		{config.On(allow.Ping), "ping"}, {config.On(allow.Updates), "package updates (user " + AptUser + ", TCP 80 and 443)"},
		{len(allow.Extra) > 0, "what allow.extra lists"},
	} {
		if a.on {
			reach = append(reach, a.what)
		}
	}
	return fmt.Sprintf("not an exit (%s): the firewall lets out no exit traffic; the host still reaches %s",
		strings.Join(roles, "; "), strings.Join(reach, ", "))
}

// Paths are the files and directories the firewall depends on, sorted:
// every instance's torrc, defaults file and what it %includes,
// relayfw.toml, the resolv.conf files, and Debian's /etc/tor/instances,
// where new instances appear.
func (in *Inputs) Paths() []string {
	paths := slices.Clone(in.watched)
	paths = append(paths, filepath.Join(in.sys.TorEtcDir, "instances"))
	if in.opts.ConfigPath != "" {
		paths = append(paths, in.opts.ConfigPath)
	}
	paths = append(paths, in.resolvConfFiles()...)
	for i, p := range paths {
		if abs, err := filepath.Abs(p); err == nil {
			paths[i] = abs
		}
	}
	slices.Sort(paths)
	return slices.Compact(paths)
}
