package host

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relayfw/relayfw/config"
)

// TestStrictModes: a torrc, defaults file, %include'd file or directory
// that a user other than root (or the one running relayfw) could change
// is refused, with the file, its owner and mode and the fix; with
// strict_modes = false it is used with a warning.
func TestStrictModes(t *testing.T) {
	var sys *System // each case's host
	requireRootForChown(t)
	const nobody = 65534
	for _, tc := range []struct {
		name string
		// setup builds the inputs in dir and returns the torrc and the
		// defaults file ("" for none).
		setup func(t *testing.T, dir string) (torrc, defaults string)
		want  string // in the refusal; "": accepted
	}{
		{"root's 0644", func(t *testing.T, dir string) (string, string) {
			return file(t, dir, "torrc", 0o644, -1), ""
		}, ""},
		{"root's 0600", func(t *testing.T, dir string) (string, string) {
			return file(t, dir, "torrc", 0o600, -1), ""
		}, ""},
		{"group-writable", func(t *testing.T, dir string) (string, string) {
			return file(t, dir, "torrc", 0o664, -1), ""
		}, "torrc {dir}/torrc: it is writable by its group (owner root, mode 0664), so a user other than root could change the firewall; fix: chmod go-w {dir}/torrc"},
		{"writable by others", func(t *testing.T, dir string) (string, string) {
			return file(t, dir, "torrc", 0o646, -1), ""
		}, "it is writable by others (owner root, mode 0646)"},
		{"another user's", func(t *testing.T, dir string) (string, string) {
			return file(t, dir, "torrc", 0o644, nobody), ""
		}, "it is owned by another user (owner nobody, mode 0644), so a user other than root could change the firewall; fix: chown root:root {dir}/torrc && chmod go-w {dir}/torrc"},
		{"the running user's", func(t *testing.T, dir string) (string, string) {
			sys.TrustedOwner = func(uid uint32) bool { return uid == 0 || uid == nobody }
			return file(t, dir, "torrc", 0o644, nobody), ""
		}, ""},
		{"a group-writable directory above", func(t *testing.T, dir string) (string, string) {
			sub := mkdir(t, dir, "etc", 0o775)
			return file(t, sub, "torrc", 0o644, -1), ""
		}, "its directory {dir}/etc is writable by its group (owner root, mode 0775)"},
		{"a sticky directory above", func(t *testing.T, dir string) (string, string) {
			sticky := mkdir(t, dir, "tmp", 0o777|os.ModeSticky)
			return file(t, sticky, "torrc", 0o644, -1), ""
		}, ""},
		{"a sticky directory above owned by another user", func(t *testing.T, dir string) (string, string) {
			sticky := mkdir(t, dir, "tmp", 0o777|os.ModeSticky)
			chown(t, sticky, nobody)
			return file(t, sticky, "torrc", 0o644, -1), ""
		}, "its directory {dir}/tmp is owned by another user"},
		{"an included file", func(t *testing.T, dir string) (string, string) {
			inc := file(t, dir, "exit.conf", 0o664, -1)
			return write(t, dir, "torrc", "%include "+inc+"\n"), ""
		}, "torrc {dir}/exit.conf: %include at {dir}/torrc:1: it is writable by its group"},
		{"an included directory", func(t *testing.T, dir string) (string, string) {
			inc := mkdir(t, dir, "torrc.d", 0o775)
			file(t, inc, "50-exit.conf", 0o644, -1)
			return write(t, dir, "torrc", "%include "+inc+"\n"), ""
		}, "torrc {dir}/torrc.d: %include at {dir}/torrc:1: it is writable by its group (owner root, mode 0775)"},
		{"a sticky included directory", func(t *testing.T, dir string) (string, string) {
			// Anyone may add a file to it: sticky protects only entries.
			inc := mkdir(t, dir, "torrc.d", 0o777|os.ModeSticky)
			file(t, inc, "50-exit.conf", 0o644, -1)
			return write(t, dir, "torrc", "%include "+inc+"\n"), ""
		}, "it is writable by others (owner root, mode 1777)"},
		{"a globbed directory", func(t *testing.T, dir string) (string, string) {
			inc := mkdir(t, dir, "torrc.d", 0o775)
			file(t, inc, "50-exit.conf", 0o644, -1)
			return write(t, dir, "torrc", "%include "+inc+"/*.conf\n"), ""
		}, `torrc {dir}/torrc:1: %include "{dir}/torrc.d/*.conf": its directory {dir}/torrc.d is writable by its group (owner root, mode 0775)`},
		{"the defaults file", func(t *testing.T, dir string) (string, string) {
			return file(t, dir, "torrc", 0o644, -1), file(t, dir, "defaults", 0o664, -1)
		}, "torrc {dir}/defaults: it is writable by its group"},
		{"a link to a file in a writable directory", func(t *testing.T, dir string) (string, string) {
			open := mkdir(t, dir, "open", 0o777)
			target := file(t, open, "torrc", 0o644, -1)
			link := filepath.Join(dir, "torrc")
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			return link, ""
		}, "its directory {dir}/open is writable by others"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sys = DefaultSystem()
			dir := mkdir(t, t.TempDir(), "d", 0o755)
			torrc, defaults := tc.setup(t, dir)
			want := strings.ReplaceAll(tc.want, "{dir}", dir)
			for _, lax := range []bool{false, true} {
				cfg := config.Config{Allow: config.Allow{Resolvers: []string{"192.0.2.53"}}}
				if lax {
					off := false
					cfg.StrictModes = &off
				}
				var log bytes.Buffer
				opts := Options{Torrcs: []string{torrc}, Config: cfg, System: sys, Log: slog.New(slog.NewTextHandler(&log, nil))}
				if defaults != "" {
					opts.DefaultsTorrc = &defaults
				}
				_, err := Load(context.Background(), opts)
				var unsafe *UnsafeFileError
				switch {
				case want == "" && err != nil:
					t.Errorf("strict_modes %v: %v", !lax, err)
				case want == "":
				case !lax && (!errors.As(err, &unsafe) || !strings.Contains(err.Error(), want)):
					t.Errorf("refusal: %v\nwant it to contain %q", err, want)
				case lax && (err != nil || !strings.Contains(log.String(), "used anyway (strict_modes = false)")):
					t.Errorf("strict_modes = false: %v; log %q", err, log.String())
				}
			}
		})
	}
}

// TestStrictModesConfig: relayfw.toml is always checked, whatever it
// says: whoever could write it could turn the check off.
func TestStrictModesConfig(t *testing.T) {
	requireRootForChown(t)
	sys := DefaultSystem()
	dir := mkdir(t, t.TempDir(), "d", 0o755)
	path := write(t, dir, "relayfw.toml", "strict_modes = false\n")
	if cfg, err := sys.LoadConfig(path, false); err != nil || config.On(cfg.StrictModes) {
		t.Fatalf("root's relayfw.toml: %+v, %v", cfg, err)
	}
	for _, mode := range []os.FileMode{0o664, 0o646} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		var unsafe *UnsafeFileError
		if _, err := sys.LoadConfig(path, true); !errors.As(err, &unsafe) || !strings.Contains(err.Error(), "config "+path+": it is writable") {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}
}

func requireRootForChown(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files to another user") // not counted: CI runs as root
	}
}

func write(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// file writes a torrc with mode and owner (-1: root).
func file(t *testing.T, dir, name string, mode os.FileMode, owner int) string {
	t.Helper()
	p := write(t, dir, name, "ORPort 9001\nExitRelay 1\nExitPolicy accept *:443,reject *:*\n")
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	if owner >= 0 {
		chown(t, p, owner)
	}
	return p
}

func mkdir(t *testing.T, parent, name string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(parent, name)
	if err := os.Mkdir(p, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func chown(t *testing.T, p string, uid int) {
	t.Helper()
	if err := os.Chown(p, uid, -1); err != nil {
		t.Fatal(err)
	}
}
