package host

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/relayfw/relayfw/config"
	"github.com/relayfw/relayfw/torconf"
)

// TorJudge is how Load has tor itself judge each instance's configuration:
// tor --verify-config with the instance's defaults file, as Debian's units
// run it before they start tor. relayfw's own reading of the torrc is
// exact for what decides the firewall, but tor checks the values of many
// options relayfw does not read (Nickname, RelayBandwidthRate, Log, ...):
// a firewall for a torrc tor refuses is a firewall for a relay that does
// not start.
//
// tor --verify-config opens no sockets: it runs in the host's own network
// namespace, so that what depends on the interfaces' addresses (tor's
// exit-policy abort) is judged on the real ones.
type TorJudge struct {
	// Path is tor's binary; "" when tor is not consulted.
	Path string
	// NotConsulted says why tor is not consulted, when Path is "".
	NotConsulted string
	// Timeout bounds each run; 0: config.DefaultVerifyTimeout.
	Timeout time.Duration
	// Err, when not nil, is why tor cannot judge although it should (a
	// binary others could have replaced: relayfw runs it as root): Load
	// returns it.
	Err error
	// off: the operator turned tor's judgement off.
	off bool
}

// SystemBinDirs are where FindTor looks for tor unless System.TorDirs
// says otherwise, in this order: Debian's units run /usr/bin/tor. Never
// $PATH: relayfw runs tor as root, and a caller's PATH (sudo -E, su) must
// not choose the program.
func SystemBinDirs() []string {
	return []string{"/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin", "/bin", "/sbin"}
}

// FindTor is the TorJudge relayfw.toml asks for: [tor] path, else tor in
// s.TorDirs (default SystemBinDirs), unless [tor] verify = false.
func (s *System) FindTor(cfg config.Config) TorJudge {
	dirs := s.TorDirs
	if dirs == nil {
		dirs = SystemBinDirs()
	}
	timeout, err := cfg.Tor.Timeout()
	if err != nil {
		timeout = config.DefaultVerifyTimeout // Parse refused it already
	}
	if !config.On(cfg.Tor.Verify) {
		return TorJudge{NotConsulted: "[tor] verify = false in relayfw.toml", off: true}
	}
	path := cfg.Tor.Path
	if path == "" {
		for _, d := range dirs {
			if fi, err := os.Stat(filepath.Join(d, "tor")); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				path = filepath.Join(d, "tor")
				break
			}
		}
		if path == "" {
			return TorJudge{NotConsulted: "tor is not installed (no tor in " + strings.Join(dirs, ", ") + ")"}
		}
	}
	if os.Geteuid() != 0 {
		// tor's units judge as root; as another user tor refuses what it
		// cannot read (its default DataDirectory, ~/.tor) and would start.
		return TorJudge{NotConsulted: "relayfw is not running as root, and tor judges a torrc as its units run it, as root"}
	}
	j := TorJudge{Path: path, Timeout: timeout}
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		j.Err = fmt.Errorf("tor's binary ([tor] path): %w", err)
	default:
		// Whatever strict_modes says: a binary another user could have
		// replaced is not run as root.
		unsafe := s.checkOwnerMode(path, path, fi, true)
		if unsafe == nil {
			unsafe = s.checkAncestors(path)
		}
		if unsafe != nil {
			j.Err = fmt.Errorf("tor's binary, which relayfw runs as root to judge the torrcs: %w", unsafe)
		}
	}
	return j
}

// TorRefusal is tor's refusal of an instance's configuration: tor would
// not start with it. Load returns it inside a *torconf.SyntaxError that
// names the file (and the line, when tor's reason names an option the
// files set once).
type TorRefusal struct {
	Version string // tor's, e.g. "0.4.9.11"; "" when tor did not say
	Reason  string // tor's own words: its [err] line or why it failed to validate
}

func (e *TorRefusal) Error() string {
	who := "tor"
	if e.Version != "" {
		who += " " + e.Version
	}
	return fmt.Sprintf("%s refuses this configuration (tor --verify-config): %s", who, e.Reason)
}

// judgeByTor has tor judge every instance, a few at a time; the first
// instance (in order) that tor refuses is the error.
func (in *Inputs) judgeByTor(ctx context.Context) error {
	j := in.opts.Tor
	if j.Path == "" {
		if j.NotConsulted == "" {
			return nil // the zero TorJudge: tor is not asked about
		}
		msg := "tor was not consulted: " + j.NotConsulted + "; the torrcs were checked by relayfw alone"
		if j.off {
			in.log().Info(msg) // the operator's choice: said, not warned about
		} else {
			in.log().Warn(msg)
		}
		for _, t := range in.Instances {
			t.TorVerdict = "tor not consulted: " + j.NotConsulted
		}
		return nil
	}
	if j.Err != nil {
		return j.Err
	}
	errs := make([]error, len(in.Instances))
	var wg sync.WaitGroup
	limit := make(chan struct{}, max(runtime.NumCPU(), 1))
	for i, t := range in.Instances {
		wg.Add(1)
		go func() {
			defer wg.Done()
			limit <- struct{}{}
			defer func() { <-limit }()
			errs[i] = in.verifyInstance(ctx, t, j)
		}()
	}
	wg.Wait()
	return firstError(errs)
}

// TorVerdict sums up tor's judgement of the instances, for status: one
// verdict when all share it, else each instance's; "" when tor was not
// asked about (Options.Tor's zero value).
func (in *Inputs) TorVerdict() string {
	var each []string
	same := true
	for _, t := range in.Instances {
		same = same && t.TorVerdict == in.Instances[0].TorVerdict
		each = append(each, t.Name+": "+t.TorVerdict)
	}
	switch {
	case len(in.Instances) == 0:
		return ""
	case same:
		return in.Instances[0].TorVerdict
	}
	return strings.Join(each, "; ")
}

func firstError(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// verifyInstance runs tor --verify-config on one instance.
func (in *Inputs) verifyInstance(ctx context.Context, t *Instance, j TorJudge) error {
	start := time.Now()
	key, keyed := in.verdictKey(t, j)
	if keyed {
		if v, ok := in.rememberedAcceptance(t, key); ok {
			t.TorVerdict = v
			in.log().Debug("tor's verdict on the configuration, remembered: nothing it depends on changed", "instance", t.Name, "verdict", v)
			return nil
		}
	}
	call, err := verifyCall(t, in.opts.Policy)
	if err != nil {
		return fmt.Errorf("%s: tor --verify-config: %w", t.Describe(), err)
	}
	defer call.close()
	timeout := j.Timeout
	if timeout <= 0 {
		timeout = config.DefaultVerifyTimeout
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out, runErr := runTor(tctx, j.Path, call)
	if err := ctx.Err(); err != nil {
		return err
	}
	if tctx.Err() != nil {
		hint := ""
		if n := len(t.Effective.Policy.Entries); n >= 5000 {
			hint = fmt.Sprintf(" (tor checks an ExitPolicy of %d entries slowly)", n)
		}
		return fmt.Errorf("%s: tor --verify-config did not finish within %s%s; raise [tor] verify_timeout in relayfw.toml, or set [tor] verify = false", t.Describe(), timeout, hint)
	}
	verdict := readTorVerdict(out, runErr)
	if verdict.err != nil {
		return fmt.Errorf("%s: running %s --verify-config: %w", t.Describe(), j.Path, verdict.err)
	}
	if verdict.refusal != nil {
		return t.refusalError(verdict.refusal)
	}
	t.TorVerdict = "accepted by tor"
	if verdict.version != "" {
		t.TorVerdict += " " + verdict.version
	}
	in.log().Debug("tor judged the configuration", "instance", t.Name, "verdict", t.TorVerdict, "took", time.Since(start).Round(time.Millisecond))
	// Only when nothing it depends on changed while tor ran (an address
	// that came and went).
	if again, ok := in.verdictKey(t, j); keyed && ok && again == key {
		in.rememberAcceptance(t, key, t.TorVerdict)
	}
	return nil
}

// torCall is one tor --verify-config: its arguments, the files made in
// memory that it reads (fds 3, 4, … in tor, named /proc/self/fd/N), and
// whom it runs as.
type torCall struct {
	args  []string
	files []*os.File
	cred  *syscall.Credential // nil: as relayfw, root
}

func (c *torCall) close() {
	for _, f := range c.files {
		_ = f.Close()
	}
}

// memFile hands tor data as a file of its own: a memfd, which no other
// process can name, replace or read (a file in a temporary directory
// could be swapped by whoever owns $TMPDIR), and tor sees as a regular
// file.
func (c *torCall) memFile(name string, data []byte) (string, error) {
	fd, err := unix.MemfdCreate("relayfw-"+name, unix.MFD_CLOEXEC)
	if err != nil {
		return "", fmt.Errorf("memfd for %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return "", fmt.Errorf("memfd for %s: %w", name, err)
	}
	c.files = append(c.files, f)
	return fmt.Sprintf("/proc/self/fd/%d", 2+len(c.files)), nil
}

// verifyCall is tor's call for one instance, as the instance's unit makes
// it, with --verify-config.
func verifyCall(t *Instance, policy *string) (*torCall, error) {
	c := &torCall{}
	ok := false
	defer func() {
		if !ok {
			c.close()
		}
	}()
	var defaults string
	var err error
	switch {
	case t.Defaults == "":
		// relayfw read none, so tor must not read its own
		// (/etc/tor/torrc-defaults).
		defaults, err = c.memFile("defaults", nil)
	case t.defaultsName != "":
		// Debian's unit writes the template with @@NAME@@ replaced to
		// /run/tor-instances/NAME.defaults; tor gets what relayfw read
		// rather than one a unit left behind.
		defaults, err = c.memFile(t.defaultsName+".defaults", []byte(t.template))
	default:
		defaults = t.Defaults
	}
	if err != nil {
		return nil, err
	}
	torrc := t.Torrc
	if t.torrcMissing { // --policy alone, on a host without a torrc
		if torrc, err = c.memFile("torrc", nil); err != nil {
			return nil, err
		}
	}
	c.args = []string{"--verify-config", "--defaults-torrc", defaults, "-f", torrc, "--RunAsDaemon", "0"}
	if policy != nil {
		// --policy replaces the ExitPolicy lines; on tor's command line,
		// --ExitPolicy does the same and --/ExitPolicy clears them.
		if *policy == "" {
			c.args = append(c.args, "--/ExitPolicy")
		} else {
			c.args = append(c.args, "--ExitPolicy", *policy)
		}
	}
	c.cred = dataDirectoryOwner(t)
	ok = true
	return c, nil
}

// dataDirectoryOwner is whom tor judges a torrc without User as. Debian's
// units start tor as root and the torrc (or defaults file) names the User
// tor switches to; elsewhere (Arch, Fedora, tor from source) the unit's
// User= starts tor as the owner of its DataDirectory, and a tor judging
// as root would refuse that directory ("not owned by this user"). So
// without User, tor judges as the owner of an existing DataDirectory that
// is not root's; nil (root) otherwise.
func dataDirectoryOwner(t *Instance) *syscall.Credential {
	if t.Options.User != "" || t.Options.DataDirectory == "" {
		return nil
	}
	fi, err := os.Stat(t.Options.DataDirectory)
	if err != nil {
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return nil
	}
	return &syscall.Credential{Uid: st.Uid, Gid: st.Gid, Groups: []uint32{}}
}

// torOutputCap bounds what relayfw keeps of tor's output: its first and
// last lines are what it needs (the version, the reason).
const torOutputCap = 64 << 10

// runTor runs tor and returns the head and tail of what it printed.
// Like the firewall tools, tor dies with relayfw.
func runTor(ctx context.Context, path string, call *torCall) ([]byte, error) {
	cmd := exec.CommandContext(ctx, path, call.args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true, Credential: call.cred}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A child of tor's that keeps its output open must not hold relayfw
	// past the timeout.
	cmd.WaitDelay = 2 * time.Second
	cmd.ExtraFiles = call.files
	out := &headTail{}
	cmd.Stdout, cmd.Stderr = out, out
	runtime.LockOSThread() // Pdeathsig follows the thread that started tor
	defer runtime.UnlockOSThread()
	err := cmd.Run()
	return out.bytes(), err
}

// headTail keeps the first and the last torOutputCap/2 bytes written.
type headTail struct {
	head, tail []byte
	cut        bool
}

func (h *headTail) Write(p []byte) (int, error) {
	n := len(p)
	if room := torOutputCap/2 - len(h.head); room > 0 {
		k := min(room, len(p))
		h.head, p = append(h.head, p[:k]...), p[k:]
	}
	if len(p) > 0 {
		h.tail = append(h.tail, p...)
		if over := len(h.tail) - torOutputCap/2; over > 0 {
			h.tail, h.cut = append(h.tail[:0], h.tail[over:]...), true
		}
	}
	return n, nil
}

func (h *headTail) bytes() []byte {
	if !h.cut {
		return append(h.head, h.tail...)
	}
	// Drop the partial line where the tail starts.
	tail := h.tail
	if i := bytes.IndexByte(tail, '\n'); i >= 0 {
		tail = tail[i+1:]
	}
	return append(append(h.head, '\n'), tail...)
}

// torVerdict is what tor's run says: accepted (both nil), refused, or tor
// could not judge (err).
type torVerdict struct {
	version string
	refusal *TorRefusal
	err     error
}

var (
	torLogLine = regexp.MustCompile(`^[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d\.\d{3} \[(\w+)\] (.*)$`)
	torVersion = regexp.MustCompile(`\bTor (\d+\.\d+\.\d+\.\d+[^ ]*) running on`)
	torOnTor   = regexp.MustCompile(` \(on Tor [^)]*\)\s*$`)
)

// maxReason bounds tor's reason in relayfw's one-line message.
const maxReason = 400

// readTorVerdict reads tor --verify-config's output and exit. tor's
// reason is its "Failed to parse/validate config" warning (with the
// warning before it when it says "See logs for details"), else its first
// [err] line (an assertion that aborts tor), never an advisory warning.
func readTorVerdict(out []byte, runErr error) torVerdict {
	var v torVerdict
	if m := torVersion.FindSubmatch(out); m != nil {
		v.version = string(m[1])
	}
	var ee *exec.ExitError
	switch {
	case runErr == nil:
		return v
	case !errors.As(runErr, &ee):
		v.err = runErr
		return v
	}
	type logLine struct{ severity, msg string }
	var lines []logLine
	for _, l := range strings.Split(string(out), "\n") {
		if m := torLogLine.FindStringSubmatch(strings.TrimRight(l, "\r")); m != nil {
			lines = append(lines, logLine{m[1], torOnTor.ReplaceAllString(m[2], "")})
		}
	}
	reason := ""
	const failed = "Failed to parse/validate config: "
	for i := len(lines) - 1; i >= 0 && reason == ""; i-- {
		msg, ok := strings.CutPrefix(lines[i].msg, failed)
		if !ok {
			continue
		}
		reason = msg
		// Where tor's reason is generic, the warning before it says more.
		if i == 0 || lines[i-1].severity != "warn" {
			continue
		}
		if before, ok := strings.CutSuffix(msg, " See logs for details."); ok {
			reason = strings.TrimSuffix(before, ".") + ": " + lines[i-1].msg
		} else if strings.HasPrefix(msg, "Couldn't access private data directory") {
			reason += ": " + lines[i-1].msg
		}
	}
	for i, l := range lines {
		switch {
		case reason != "" || l.severity != "err":
		case !strings.HasPrefix(l.msg, "Reading config failed"):
			reason = l.msg
		case i > 0 && lines[i-1].severity == "warn":
			// tor could not read the files: its warning says why.
			reason = lines[i-1].msg
		}
	}
	if reason == "" {
		reason = fmt.Sprintf("tor --verify-config %s", exitDescription(ee))
		if n := len(lines); n > 0 {
			reason += ": " + lines[n-1].msg
		}
	}
	if len(reason) > maxReason {
		cut := maxReason
		for cut > 0 && !utf8.RuneStart(reason[cut]) {
			cut--
		}
		reason = reason[:cut] + "…"
	}
	v.refusal = &TorRefusal{Version: v.version, Reason: reason}
	return v
}

func exitDescription(ee *exec.ExitError) string {
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "was killed by " + ws.Signal().String()
	}
	return fmt.Sprintf("exited with status %d", ee.ExitCode())
}

// optionWord matches an option name as a word of tor's message.
func optionWord(msg, key string) bool {
	for i := 0; ; {
		j := strings.Index(msg[i:], key)
		if j < 0 {
			return false
		}
		j += i
		end := j + len(key)
		if (j == 0 || !isWordByte(msg[j-1])) && (end == len(msg) || !isWordByte(msg[end])) {
			return true
		}
		i = j + 1
	}
}

func isWordByte(b byte) bool {
	return b == '_' || b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z'
}

// refusalError names where tor's refusal points: the line of the option
// tor's reason names first (of its lines, the one whose value the reason
// quotes, else the last: the torrc's over the defaults file's), else the
// torrc.
func (t *Instance) refusalError(r *TorRefusal) error {
	quotes := func(l torconf.ConfigLine) bool { return l.Value != "" && strings.Contains(r.Reason, l.Value) }
	var at *torconf.ConfigLine
	best := 0 // where the reason names at's option
	for _, l := range t.lines {
		name := torconf.OptionName(l.Key)
		if name == "" || !optionWord(r.Reason, name) {
			continue
		}
		switch k := strings.Index(r.Reason, name); {
		case at == nil || k < best:
			at, best = &l, k
		case strings.EqualFold(name, torconf.OptionName(at.Key)) && !quotes(*at):
			at = &l
		}
	}
	if at == nil {
		at = t.lineNamedIn(r.Reason)
	}
	switch {
	case at == nil || at.File == "":
		return &torconf.SyntaxError{File: t.Torrc, Err: r}
	case strings.HasPrefix(at.File, "--"): // --policy
		return &torconf.SyntaxError{File: at.File, Err: r}
	}
	return &torconf.SyntaxError{File: at.File, Line: at.Line, Err: r}
}

// reasonOptions are the options some of tor's reasons speak of without
// naming them.
var reasonOptions = []struct{ phrase, option string }{
	{"private data directory", "DataDirectory"},
	{"Monthly accounting", "AccountingStart"},
	{"Weekly accounting", "AccountingStart"},
	{"Daily accounting", "AccountingStart"},
}

// lineNamedIn is the last line of the option a reason speaks of without
// naming it; nil for none.
func (t *Instance) lineNamedIn(reason string) *torconf.ConfigLine {
	// A path or value the reason quotes: "Couldn't access private data
	// directory "/etc"" may be about KeyDirectory /etc.
	for i := len(t.lines) - 1; i >= 0; i-- {
		if v := t.lines[i].Value; v != "" && strings.Contains(reason, `"`+v+`"`) {
			return &t.lines[i]
		}
	}
	for _, ro := range reasonOptions {
		if !strings.Contains(reason, ro.phrase) {
			continue
		}
		for i := len(t.lines) - 1; i >= 0; i-- {
			if torconf.OptionName(t.lines[i].Key) == ro.option {
				return &t.lines[i]
			}
		}
	}
	return nil
}
