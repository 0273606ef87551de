package host

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/relayfw/relayfw/config"
	"github.com/relayfw/relayfw/torconf"
)

// exitWith is the error of a process that ended as sh's script does.
func exitWith(t *testing.T, script string) error {
	t.Helper()
	err := exec.Command("sh", "-c", script).Run()
	if _, ok := err.(*exec.ExitError); !ok {
		t.Fatalf("sh -c %q: %v", script, err)
	}
	return err
}

// TestReadTorVerdict reads what tor 0.4.9.11 printed for torrcs it
// refuses (testdata/torverify, recorded with tor --verify-config): the
// reason is tor's own, never an advisory warning such as ContactInfo's.
func TestReadTorVerdict(t *testing.T) {
	tests := []struct {
		file, exit, reason string
	}{
		{"valid", "", ""},
		{"nickname", "exit 1", "Nickname 'bad-name!', nicknames must be between 1 and 19 characters inclusive, and must contain only the characters [a-zA-Z0-9]."},
		{"bandwidth", "exit 1", "Could not parse RelayBandwidthRate: Provided value is malformed or out of bounds: Unable to parse lots as a number"},
		{"log", "exit 1", "Failed to validate Log options: Couldn't parse log levels in Log option 'Log notice stdeer'"},
		{"numcpus", "exit 1", "Could not parse NumCPUs: Integer two is malformed or out of bounds. Allowed values are between 0 and 2147483647."},
		{"maxmem", "exit 1", "Could not parse MaxMemInQueues: Provided value is malformed or out of bounds: Unknown unit in 10 parsecs"},
		{"accounting", "exit 1", "Failed to parse accounting options: Monthly accounting must begin on a day between 1 and 28"},
		{"myfamily", "exit 1", "Invalid nickname '$NOTAFINGERPRINT' in MyFamily line"},
		{"user", "exit 1", "Problem with User value: Error setting configured user: nosuchuser not found"},
		{"unreadable", "exit 1", `Unable to open configuration file "/dev/null".`},
		{"datadir", "exit 1", `Couldn't access private data directory "/var/lib/tor": Directory /var/lib/tor cannot be read: Permission denied`},
		{"abort", "kill -ABRT $$", "tor_assertion_failed_(): Bug: ../src/core/or/policies.c:1866: policies_log_first_redundant_entry: Assertion policy failed; aborting."},
		// Output without tor's log lines: the exit says it.
		{"", "exit 3", "tor --verify-config exited with status 3"},
		{"", "kill -SEGV $$", "tor --verify-config was killed by segmentation fault"},
	}
	for _, tt := range tests {
		t.Run(tt.file+tt.exit, func(t *testing.T) {
			var out []byte
			if tt.file != "" {
				var err error
				if out, err = os.ReadFile(filepath.Join("testdata/torverify", tt.file+".txt")); err != nil {
					t.Fatal(err)
				}
			}
			var runErr error
			if tt.exit != "" {
				runErr = exitWith(t, tt.exit)
			}
			v := readTorVerdict(out, runErr)
			if v.err != nil {
				t.Fatal(v.err)
			}
			if tt.file != "" && v.version != "0.4.9.11" {
				t.Errorf("version %q, want 0.4.9.11", v.version)
			}
			got := ""
			if v.refusal != nil {
				got = v.refusal.Reason
			}
			if got != tt.reason {
				t.Errorf("reason\n got %q\nwant %q", got, tt.reason)
			}
		})
	}
}

// TestTorRefusalLine: the refusal names the line of the option tor's
// reason names, in the file that set it.
func TestTorRefusalLine(t *testing.T) {
	dir := t.TempDir()
	defaults := filepath.Join(dir, "defaults")
	torrc := filepath.Join(dir, "torrc")
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(defaults, "User debian-tor\nLog notice syslog\nDataDirectory /var/lib/tor\n")
	write(torrc, "ORPort 9001\nnickname bad-name!\nLog notice stdout\nLog notice stdeer\nMyFamily $NOTAFINGERPRINT\nUser nosuchuser\nAccountingStart month 40 25:00\nDataDirectory /var/lib/tor\nKeyDirectory /etc\n")
	dl, err := torconf.Read(defaults)
	if err != nil {
		t.Fatal(err)
	}
	tl, err := torconf.Read(torrc)
	if err != nil {
		t.Fatal(err)
	}
	inst := &Instance{Torrc: torrc, lines: append(dl, tl...)}
	tests := []struct{ reason, want string }{
		{"Nickname 'bad-name!', nicknames must be between 1 and 19 characters inclusive", torrc + ":2:"},
		{"Failed to validate Log options: Couldn't parse log levels in Log option 'Log notice stdeer'", torrc + ":4:"},
		{"Invalid nickname '$NOTAFINGERPRINT' in MyFamily line", torrc + ":5:"},
		{"Problem with User value: Error setting configured user: nosuchuser not found", torrc + ":6:"},
		{"Failed to parse accounting options: Monthly accounting must begin on a day between 1 and 28", torrc + ":7:"},
		{`Couldn't access private data directory "/etc": /etc is not owned by this user`, torrc + ":9:"},
		{`Couldn't access private data directory "/var/lib/tor": Directory /var/lib/tor cannot be read: Permission denied`, torrc + ":8:"}, // the torrc's DataDirectory overrides the defaults file's
		{"Could not parse NumCPUs: Integer two is malformed", torrc + ": tor"},
	}
	for _, tt := range tests {
		err := inst.refusalError(&TorRefusal{Version: "0.4.9.11", Reason: tt.reason})
		want := "torrc " + tt.want
		if got := err.Error(); !strings.HasPrefix(got, want) || !strings.HasSuffix(got, tt.reason) {
			t.Errorf("%q:\n got %q\nwant %q...", tt.reason, got, want)
		}
	}
}

// TestVerifyCall: tor is run as the instance's unit runs it; what relayfw
// makes for tor (an empty defaults file, Debian's instance template with
// its name, an empty torrc for --policy alone) is a memfd tor reads as
// /proc/self/fd/N, which no other user can swap; --policy replaces or
// clears the ExitPolicy lines on tor's command line.
func TestVerifyCall(t *testing.T) {
	dir := t.TempDir()
	tmpl := filepath.Join(dir, "tor-service-defaults-torrc-instances")
	if err := os.WriteFile(tmpl, []byte("User _tor-@@NAME@@\nDataDirectory /var/lib/tor-instances/@@NAME@@\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The template as relayfw reads it, with the instance's name.
	torrc := filepath.Join(dir, "torrc")
	if err := os.WriteFile(torrc, []byte("ORPort 9001\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, template, err := newInputs(Options{System: testSystem(t)}).readInstance(instanceSource{name: "exit1", torrc: torrc, defaults: tmpl, defaultsName: "exit1"})
	if err != nil {
		t.Fatal(err)
	}
	policy, none := "accept *:443,reject *:*", ""
	const fd3, fd4 = "/proc/self/fd/3", "/proc/self/fd/4"
	tests := []struct {
		name   string
		inst   Instance
		policy *string
		args   []string
		files  []string // what tor reads at fd 3, 4, ...
	}{
		{"no defaults", Instance{Torrc: "/etc/tor/torrc"}, nil,
			[]string{"--verify-config", "--defaults-torrc", fd3, "-f", "/etc/tor/torrc", "--RunAsDaemon", "0"}, []string{""}},
		{"defaults", Instance{Torrc: "/etc/tor/torrc", Defaults: "/usr/share/tor/tor-service-defaults-torrc"}, &policy,
			[]string{"--verify-config", "--defaults-torrc", "/usr/share/tor/tor-service-defaults-torrc", "-f", "/etc/tor/torrc", "--RunAsDaemon", "0", "--ExitPolicy", policy}, nil},
		{"instance template", Instance{Torrc: "/etc/tor/instances/exit1/torrc", Defaults: tmpl, defaultsName: "exit1", template: template}, nil,
			[]string{"--verify-config", "--defaults-torrc", fd3, "-f", "/etc/tor/instances/exit1/torrc", "--RunAsDaemon", "0"},
			[]string{"User _tor-exit1\nDataDirectory /var/lib/tor-instances/exit1\n"}},
		{"policy alone, cleared", Instance{Torrc: "/etc/tor/torrc", torrcMissing: true}, &none,
			[]string{"--verify-config", "--defaults-torrc", fd3, "-f", fd4, "--RunAsDaemon", "0", "--/ExitPolicy"}, []string{"", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			call, err := verifyCall(&tt.inst, tt.policy)
			if err != nil {
				t.Fatal(err)
			}
			defer call.close()
			if diff := cmp.Diff(tt.args, call.args); diff != "" {
				t.Error(diff)
			}
			var files []string
			for _, f := range call.files {
				data, err := os.ReadFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
				if err != nil {
					t.Fatal(err)
				}
				files = append(files, string(data))
			}
			if diff := cmp.Diff(tt.files, files); diff != "" {
				t.Errorf("files tor reads (-want +got):\n%s", diff)
			}
			if call.cred != nil {
				t.Errorf("runs as %+v, want root (no DataDirectory of another user)", call.cred)
			}
		})
	}
}

// TestDataDirectoryOwner: a torrc without User is judged as the owner of
// its DataDirectory when that is not root (a unit with User= starts tor so);
// with User (Debian), as root.
func TestDataDirectoryOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown a directory to another user")
	}
	data := t.TempDir()
	if err := os.Chown(data, 1, 1); err != nil { // daemon on Debian
		t.Fatal(err)
	}
	withData := Instance{Options: torconf.Options{DataDirectory: data}}
	if c := dataDirectoryOwner(&withData); c == nil || c.Uid != 1 || c.Gid != 1 || len(c.Groups) != 0 {
		t.Errorf("no User, DataDirectory of uid 1: %+v", c)
	}
	withUser := Instance{Options: torconf.Options{DataDirectory: data, User: "debian-tor"}}
	if c := dataDirectoryOwner(&withUser); c != nil {
		t.Errorf("with User: %+v, want root", c)
	}
	rootData := Instance{Options: torconf.Options{DataDirectory: t.TempDir()}}
	if c := dataDirectoryOwner(&rootData); c != nil {
		t.Errorf("root's DataDirectory: %+v, want root", c)
	}
}

// TestFindTor: tor is looked for in the given directories, never $PATH; a
// binary another user could replace is never run.
func TestFindTor(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("tor judges only as root")
	}
	safe, unsafe, empty := t.TempDir(), t.TempDir(), t.TempDir()
	for _, d := range []string{safe, unsafe} {
		if err := os.WriteFile(filepath.Join(d, "tor"), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(unsafe, "tor"), 0o777); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", safe)
	off := false
	tests := []struct {
		name             string
		cfg              config.Config
		dirs             []string
		path, notConsult string
		err              string
	}{
		{"found", config.Config{}, []string{empty, safe}, filepath.Join(safe, "tor"), "", ""},
		{"not in the directories (PATH ignored)", config.Config{}, []string{empty}, "", "tor is not installed", ""},
		{"turned off", config.Config{Tor: config.Tor{Verify: &off}}, []string{safe}, "", "[tor] verify = false", ""},
		{"writable by others", config.Config{}, []string{unsafe}, filepath.Join(unsafe, "tor"), "", "is writable by others"},
		{"[tor] path", config.Config{Tor: config.Tor{Path: filepath.Join(safe, "tor")}}, []string{empty}, filepath.Join(safe, "tor"), "", ""},
		{"[tor] path missing", config.Config{Tor: config.Tor{Path: filepath.Join(empty, "tor")}}, nil, filepath.Join(empty, "tor"), "", "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := (&System{TorDirs: tt.dirs}).FindTor(tt.cfg)
			gotErr := ""
			if j.Err != nil {
				gotErr = j.Err.Error()
			}
			if j.Path != tt.path || !strings.Contains(j.NotConsulted, tt.notConsult) || (tt.notConsult == "") != (j.NotConsulted == "") ||
				!strings.Contains(gotErr, tt.err) || (tt.err == "") != (gotErr == "") {
				t.Errorf("got path %q, not consulted %q, err %q; want %q, %q, %q", j.Path, j.NotConsulted, gotErr, tt.path, tt.notConsult, tt.err)
			}
		})
	}
}

// TestHeadTail keeps the first and last lines of a long output.
func TestHeadTail(t *testing.T) {
	var h headTail
	first := "Dec 02 06:45:28.233 [notice] Tor 0.4.9.11 running on Linux.\n"
	h.Write([]byte(first))
	for range 10000 {
		h.Write([]byte("Dec 02 06:45:28.233 [warn] a warning about one of many policy entries\n"))
	}
	last := "Dec 02 06:45:28.240 [err] the reason\n"
	h.Write([]byte(last))
	out := h.bytes()
	if len(out) > torOutputCap+1 || !strings.HasPrefix(string(out), first) || !strings.HasSuffix(string(out), last) {
		t.Errorf("kept %d bytes, head %q, tail %q", len(out), out[:80], out[len(out)-80:])
	}
}

// FuzzReadTorVerdict: any output tor may print gives a verdict with a
// bounded reason and never a panic.
func FuzzReadTorVerdict(f *testing.F) {
	for _, name := range []string{"valid", "log", "abort", "user"} {
		out, err := os.ReadFile(filepath.Join("testdata/torverify", name+".txt"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(out)
	}
	f.Add([]byte("Dec 02 06:45:28.236 [warn] Failed to parse/validate config: See logs for details.\n"))
	exitErr := exec.Command("sh", "-c", "exit 1").Run()
	f.Fuzz(func(t *testing.T, out []byte) {
		v := readTorVerdict(out, exitErr)
		if v.refusal == nil || v.err != nil {
			t.Fatalf("a failed run must be a refusal: %+v", v)
		}
		if len(v.refusal.Reason) > maxReason+len("…") || v.refusal.Reason == "" {
			t.Fatalf("reason of %d bytes: %q", len(v.refusal.Reason), v.refusal.Reason)
		}
		if ok := readTorVerdict(out, nil); ok.refusal != nil || ok.err != nil {
			t.Fatalf("a run that exited 0 is an acceptance: %+v", ok)
		}
	})
}

// TestTorVerdictUnasked: the zero TorJudge (a library caller that does not
// ask tor) leaves no verdict; a judge that says why tor is not consulted
// gives every instance that reason.
func TestTorVerdictUnasked(t *testing.T) {
	for _, tt := range []struct {
		judge TorJudge
		want  string
	}{
		{TorJudge{}, ""},
		{TorJudge{NotConsulted: "tor is not installed"}, "tor not consulted: tor is not installed"},
	} {
		in := newInputs(Options{System: testSystem(t), Tor: tt.judge})
		in.Instances = []*Instance{{Name: "a"}, {Name: "b"}}
		if err := in.judgeByTor(context.Background()); err != nil || in.TorVerdict() != tt.want {
			t.Errorf("%+v: verdict %q, %v; want %q", tt.judge, in.TorVerdict(), err, tt.want)
		}
	}
}
