package torconf

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type kv struct {
	Key, Value string
	Line       int
}

func keyValues(lines []ConfigLine) []kv {
	out := make([]kv, len(lines))
	for i, l := range lines {
		out[i] = kv{l.Key, l.Value, l.Line}
	}
	return out
}

func TestParseTorrcLines(t *testing.T) {
	text := "# comment\n" +
		"ExitRelay 1\n" +
		"  exitpolicy accept *:80 # web\n" +
		"ExitPolicy accept *:443,\\\n" +
		"  # a comment inside a continuation\n" +
		"  reject *:*\n" +
		"Nickname \"quoted \\x41\\101\\t\"   # trailing comment\n" +
		"+ExitPolicy accept *:22\n" +
		"/ExitPolicy\n" +
		"Empty\n" +
		"ContactInfo a@b # c\r\n"
	lines, err := Parse(nil, "torrc", text)
	if err != nil {
		t.Fatal(err)
	}
	want := []kv{
		{"ExitRelay", "1", 2},
		{"exitpolicy", "accept *:80", 3},
		{"ExitPolicy", "accept *:443,    reject *:*", 4},
		{"Nickname", "quoted AA\t", 7},
		{"ExitPolicy", "accept *:22", 8},
		{"ExitPolicy", "", 9},
		{"Empty", "", 10},
		{"ContactInfo", "a@b", 11},
	}
	if diff := cmp.Diff(want, keyValues(lines)); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	if !lines[5].Clear {
		t.Error("/ExitPolicy must be a clear line")
	}
}

func TestParseTorrcErrors(t *testing.T) {
	for _, tc := range []struct {
		text string
		line int
	}{
		{"ExitRelay 1\nNickname \"unterminated\n", 2},
		{"A 1\n\nB \"x\" trailing\n", 3},
		{"C \"bad escape \\q\"\n", 1},
	} {
		_, err := Parse(nil, "torrc", tc.text)
		var se *SyntaxError
		if !errors.As(err, &se) || se.Line != tc.line {
			t.Errorf("%q: want a SyntaxError at line %d, got %v", tc.text, tc.line, err)
		}
	}
}

func TestOptionsFromLines(t *testing.T) {
	lines, err := Parse(nil, "torrc", "ExitRelay 1\nexitrelay AUTO\nIPv6Exit 1\n/IPv6Exit\nExitPolicyRejectPrivate 0\n"+
		"ExitPolicy accept *:80\n/ExitPolicy\nExitPolicy\nexitpolicy reject *:*\n"+
		"ORPort 443\nORPort [2001:db8::1]:9001 NoListen\nDirPort 198.51.100.1:80\n"+
		"OutboundBindAddressExit 198.51.100.2\nOutboundBindAddressExit [2001:db8::2]\n"+
		"ResolvConf /etc/tor/resolv.conf\nDataDirectory /var/lib/tor\nUser debian-tor\n")
	if err != nil {
		t.Fatal(err)
	}
	o, err := OptionsFromLines(lines)
	if err != nil {
		t.Fatal(err)
	}
	if o.ExitRelay != -1 || o.IPv6Exit || o.ExitPolicyRejectPrivate {
		t.Errorf("ExitRelay %d IPv6Exit %v RejectPrivate %v", o.ExitRelay, o.IPv6Exit, o.ExitPolicyRejectPrivate)
	}
	if len(o.ExitPolicy) != 1 || o.ExitPolicy[0].Value != "reject *:*" {
		t.Errorf("ExitPolicy %+v: /ExitPolicy clears, an empty value is skipped", o.ExitPolicy)
	}
	if len(o.Ports) != 3 || o.Ports[0].Kind != "ORPort" || !o.Ports[0].IPv4 || !o.Ports[0].IPv6 ||
		o.Ports[1].Addr.String() != "2001:db8::1" || o.Ports[2].Kind != "DirPort" {
		t.Errorf("ports %+v", o.Ports)
	}
	if len(o.OutboundBindExit) != 2 || o.ServerDNSResolvConfFile != "/etc/tor/resolv.conf" ||
		o.DataDirectory != "/var/lib/tor" || o.User != "debian-tor" {
		t.Errorf("options %+v", o)
	}

	for _, bad := range []string{"ExitRelay 2\n", "IPv6Exit true\n", "OutboundBindAddressExit 1.2.3.4\nOutboundBindAddressExit 5.6.7.8\n",
		"OutboundBindAddress example.org\n"} {
		lines, _ := Parse(nil, "torrc", bad)
		if _, err := OptionsFromLines(lines); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

func TestIncludes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("torrc.d/b.conf", "ExitPolicy accept *:2\n")
	write("torrc.d/a.conf", "ExitPolicy accept *:1\n")
	write("torrc.d/.hidden", "ExitPolicy accept *:99\n")
	write("torrc.d/empty", "")
	write("extra.conf", "%include "+filepath.Join(dir, "torrc.d")+"\nExitPolicy accept *:3\n")
	write("glob-x.conf", "ExitPolicy accept *:4\n")
	main := write("torrc", "ExitRelay 1\n%include "+filepath.Join(dir, "extra.conf")+"\n%include "+filepath.Join(dir, "glob-*.conf")+"\nExitPolicy reject *:*\n")
	lines, err := Read(main)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range lines {
		got = append(got, filepath.Base(l.File)+":"+l.Value)
	}
	want := []string{"torrc:1", "a.conf:accept *:1", "b.conf:accept *:2", "extra.conf:accept *:3", "glob-x.conf:accept *:4", "torrc:reject *:*"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("include order (-want +got):\n%s", diff)
	}

	loop := write("loop", "%include "+filepath.Join(dir, "loop")+"\n")
	var se *SyntaxError
	if _, err := Read(loop); !errors.As(err, &se) {
		t.Errorf("self-include: want a SyntaxError (too deep), got %v", err)
	}
	missing := write("missing", "ExitRelay 1\n%include "+filepath.Join(dir, "nope.conf")+"\n")
	var fe *FileError
	if _, err := Read(missing); !errors.As(err, &fe) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing include: want a FileError, got %v", err)
	}
}

// TestDescriptorOptions: the options that count towards the server
// descriptor's size, read as tor reads them (MyFamily split on commas,
// list options of the torrc replacing the defaults file's).
func TestDescriptorOptions(t *testing.T) {
	tests := []struct {
		defaults, torrc string
		nick, contact   string
		family          []string
		familyIDs       int
	}{
		{"", "", "", "", nil, 0},
		{"", "Nickname exit1\nContactInfo ops@example.org <pgp 0x1>\n", "exit1", "ops@example.org <pgp 0x1>", nil, 0},
		{"", "MyFamily $" + strings.Repeat("A", 40) + " , exit2,,\nMyFamily exit3\n", "", "", []string{"$" + strings.Repeat("A", 40), "exit2", "exit3"}, 0},
		{"MyFamily exit9\n", "MyFamily exit2\n", "", "", []string{"exit2"}, 0},
		{"MyFamily exit9\n", "+MyFamily exit2\n", "", "", []string{"exit9", "exit2"}, 0},
		{"", "FamilyId AAAA\nFamilyId BBBB\n", "", "", nil, 2},
		{"", "FamilyId AAAA\n/FamilyId\n", "", "", nil, 0},
	}
	for _, tt := range tests {
		o := optionsOf(t, tt.defaults, tt.torrc)
		if diff := cmp.Diff(tt.family, o.MyFamily); diff != "" || o.Nickname != tt.nick || o.ContactInfo != tt.contact || o.FamilyIDs != tt.familyIDs {
			t.Errorf("%q: MyFamily (-want +got):\n%s\nNickname %q ContactInfo %q FamilyIDs %d; want %q %q %d",
				tt.torrc, diff, o.Nickname, o.ContactInfo, o.FamilyIDs, tt.nick, tt.contact, tt.familyIDs)
		}
	}
}
