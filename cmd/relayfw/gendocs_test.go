package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/relayfw/relayfw/config"
)

// TestGendocs: gendocs writes relayfw(8) with every section, a page per
// command, relayfw.toml(5) from the shipped relayfw.toml, and the
// completions.
func TestGendocs(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "1764547200")
	dir := t.TempDir()
	var stdout, stderr strings.Builder
	if code := run(testSystem(), []string{"gendocs", "--man", dir, "--toml", "../../examples/relayfw.toml", "--completions", filepath.Join(dir, "completions")}, &stdout, &stderr); code != 0 {
		t.Fatalf("gendocs: exit %d: %s", code, stderr.String())
	}
	page := readFile(t, filepath.Join(dir, "man8", "relayfw.8"))
	for _, want := range []string{`.TH "RELAYFW" "8" "Dec 2025"`, ".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION", ".SH COMMANDS",
		".SH OPTIONS", ".SH EXIT STATUS", ".SH FILES", ".SH EXAMPLES", ".SH SEE ALSO", `\fB--confirm\fP \fIDURATION\fP`, "/var/lib/relayfw/"} {
		if !strings.Contains(page, want) {
			t.Errorf("relayfw.8 lacks %q", want)
		}
	}
	root := newRootCommand(&globals{})
	for _, c := range manCommands(root) {
		if !strings.Contains(page, `.SS relayfw `+c.Name()) {
			t.Errorf("relayfw.8 lacks the command %s", c.Name())
		}
		readFile(t, filepath.Join(dir, "man8", "relayfw-"+c.Name()+".8"))
	}
	if strings.Contains(page, "gendocs") || strings.Contains(page, "rollback-watcher") {
		t.Error("relayfw.8 documents a hidden command")
	}
	toml := readFile(t, filepath.Join(dir, "man5", "relayfw.toml.5"))
	for _, want := range []string{`.TH "RELAYFW.TOML" "5"`, ".SH SETTINGS", ".SS [inbound]", `\fBper_minute\fP = 8`} {
		if !strings.Contains(toml, want) {
			t.Errorf("relayfw.toml.5 lacks %q", want)
		}
	}
	for _, f := range []string{"relayfw.bash", "_relayfw", "relayfw.fish"} {
		readFile(t, filepath.Join(dir, "completions", f))
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestManExitStatus: EXIT STATUS lists every exit code this package
// defines (its exit* constants), and no other.
func TestManExitStatus(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	defined := map[int]string{}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, s := range gd.Specs {
				vs := s.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if !strings.HasPrefix(n.Name, "exit") || i >= len(vs.Values) {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.INT {
						continue
					}
					code, err := strconv.Atoi(lit.Value)
					if err != nil {
						t.Fatalf("%s: %v", n.Name, err)
					}
					defined[code] = n.Name
				}
			}
		}
	}
	if len(defined) < 10 {
		t.Fatalf("found only the exit codes %v", defined)
	}
	documented := map[int]bool{}
	for _, e := range exitStatuses {
		documented[e.code] = true
		if _, ok := defined[e.code]; !ok {
			t.Errorf("EXIT STATUS documents %d, which no exit* constant defines", e.code)
		}
	}
	for code, name := range defined {
		if !documented[code] {
			t.Errorf("EXIT STATUS lacks %d (%s)", code, name)
		}
	}
}

// TestManConfigKeys: relayfw.toml(5), made from examples/relayfw.toml,
// describes every key config.Config reads, and no other.
func TestManConfigKeys(t *testing.T) {
	data := readFile(t, "../../examples/relayfw.toml")
	_, tables, err := parseAnnotatedConfig("relayfw.toml", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if name == "" || name == "-" {
				continue
			}
			ft := f.Type
			for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				walk(prefix+name+".", ft)
				continue
			}
			want = append(want, prefix+name)
		}
	}
	walk("", reflect.TypeOf(config.Config{}))
	sort.Strings(want)
	if got := configKeys(tables); !reflect.DeepEqual(got, want) {
		t.Errorf("relayfw.toml(5) documents\n%v\nconfig.Config reads\n%v", got, want)
	}
}

// TestAnnotatedConfigRefuses: what the generator cannot make a manual of.
func TestAnnotatedConfigRefuses(t *testing.T) {
	refused := map[string]struct{ text, want string }{
		"undescribed key":       {"# intro\n\n# [allow]\n# dns = true\n", "key dns has no description"},
		"keys after a header":   {"# intro\n\n# A table.\n# [t]\n# a = 1\n", "x.toml:5: key a has no description"},
		"prose after a setting": {"# intro\n\n# A.\n# a = 1\n# more\n", "prose after a setting"},
		"a live setting":        {"# intro\n\na = 1\n", "not commented out"},
		"prose alone":           {"# intro\n\n# A.\n# a = 1\n\n# stray\n", "a paragraph without a setting"},
	}
	for name, tc := range refused {
		if _, _, err := parseAnnotatedConfig("x.toml", []byte(tc.text)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", name, err, tc.want)
		}
	}
	_, tables, err := parseAnnotatedConfig("x.toml", []byte("# intro\n\n# The a and c.\n# a = 1\n# c = 3\n\n# A table.\n# [t]\n# b = 2  # the b\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := configKeys(tables); !reflect.DeepEqual(got, []string{"a", "c", "t.b"}) || len(tables[0].entries) != 1 || tables[1].text != "A table." || tables[1].entries[0].text != "the b" {
		t.Fatalf("parsed %v %+v", got, tables[1])
	}
}
