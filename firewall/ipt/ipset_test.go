package ipt

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeIpset writes an ipset stand-in that logs each script it is fed and
// answers the n-th run with the n-th of replies: "" succeeds, anything
// else is printed on stderr with exit status 1. Runs past the replies
// succeed.
func fakeIpset(t *testing.T, replies ...string) (path string, scripts func() []string) {
	t.Helper()
	dir := t.TempDir()
	var sh strings.Builder
	sh.WriteString("#!/bin/sh\nd=" + dir + "\nn=$(ls $d | grep -c '^run')\ncat > $d/run$n\ncase $n in\n")
	for i, r := range replies {
		if r != "" {
			sh.WriteString(" " + string(rune('0'+i)) + ") echo '" + r + "' >&2; exit 1;;\n")
		}
	}
	sh.WriteString("esac\n")
	path = filepath.Join(dir, "ipset")
	if err := os.WriteFile(path, []byte(sh.String()), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, func() []string {
		var out []string
		for i := 0; ; i++ {
			data, err := os.ReadFile(filepath.Join(dir, "run"+string(rune('0'+i))))
			if err != nil {
				return out
			}
			out = append(out, string(data))
		}
	}
}

func TestRestoreResumesAtTheBusyLine(t *testing.T) {
	const script = "create a-new hash:ip\nflush a-new\nadd a-new 192.0.2.1\nswap a-new a\ndestroy a-new\ndestroy b\ndestroy c\n"
	const (
		swapBusy    = "ipset v7.17: Error in line 4: Kernel error received: Device or resource busy"
		destroyBusy = "ipset v7.17: Error in line 3: Set cannot be destroyed: it is in use by a kernel component"
	)
	tests := []struct {
		name    string
		replies []string
		want    []string // the scripts ipset was fed
		wantErr string
	}{
		{"no trouble", nil, []string{script}, ""},
		{
			"busy swap, then a busy destroy of what is left",
			[]string{swapBusy, destroyBusy},
			[]string{script, "swap a-new a\ndestroy a-new\ndestroy b\ndestroy c\n", "destroy b\ndestroy c\n"},
			"",
		},
		{
			"another refusal is not retried",
			[]string{"ipset v7.17: Error in line 6: The set with the given name does not exist"},
			[]string{script},
			"does not exist",
		},
		{
			"busy without a line number is not retried",
			[]string{"ipset v7.17: Set cannot be destroyed: it is in use by a kernel component"},
			[]string{script},
			"in use by a kernel component",
		},
		{
			"a line past the script is not retried",
			[]string{"ipset v7.17: Error in line 9: Kernel error received: Device or resource busy"},
			[]string{script},
			"busy",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, scripts := fakeIpset(t, tt.replies...)
			err := ipsets{path: path}.restore(context.Background(), script)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("restore: %v, want error %q", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, scripts()); diff != "" {
				t.Errorf("scripts fed to ipset (-want +got):\n%s", diff)
			}
		})
	}
}
