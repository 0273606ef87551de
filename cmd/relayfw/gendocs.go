package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/cpuguy83/go-md2man/v2/md2man"
	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	"github.com/spf13/pflag"
)

// The manual has one source per fact: the commands' Long texts and flags
// (relayfw(8) and a page per command), the tables of manual.go (relayfw(8)'s
// EXIT STATUS, FILES and EXAMPLES) and the comments of the shipped
// relayfw.toml (relayfw.toml(5)). gendocs renders them; nothing is written
// twice.

// newGendocsCommand writes man pages and shell completions generated from
// the commands themselves, for packaging.
func newGendocsCommand(g *globals) *cobra.Command {
	var man, toml, completions string
	cmd := &cobra.Command{
		Use:    "gendocs",
		Short:  "Write man pages and shell completions (for packaging)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			root := cmd.Root()
			if man != "" {
				if err := writeManPages(root, man, toml); err != nil {
					return err
				}
			}
			if completions != "" {
				return writeCompletions(root, completions)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&man, "man", "", "directory for the man pages (man8/ and, with --toml, man5/)")
	cmd.Flags().StringVar(&toml, "toml", "", "the annotated relayfw.toml (examples/relayfw.toml) that relayfw.toml(5) is made from")
	cmd.Flags().StringVar(&completions, "completions", "", "directory for bash, zsh and fish completions")
	return cmd
}

// manDate is the pages' date: SOURCE_DATE_EPOCH when set (reproducible
// builds), else now.
func manDate() (time.Time, error) {
	if epoch := os.Getenv("SOURCE_DATE_EPOCH"); epoch != "" {
		var sec int64
		if _, err := fmt.Sscan(epoch, &sec); err != nil {
			return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", epoch, err)
		}
		return time.Unix(sec, 0).UTC(), nil
	}
	return time.Now().UTC(), nil
}

// writeManPages writes DIR/man8: relayfw.8 and relayfw-COMMAND.8 for each
// command, and with tomlPath DIR/man5/relayfw.toml.5.
func writeManPages(root *cobra.Command, dir, tomlPath string) error {
	date, err := manDate()
	if err != nil {
		return err
	}
	man8 := filepath.Join(dir, "man8")
	if err := os.MkdirAll(man8, 0o755); err != nil {
		return err
	}
	header := &doc.GenManHeader{Title: "RELAYFW", Section: "8", Date: &date, Source: "relayfw " + version, Manual: "relayfw"}
	if err := doc.GenManTree(root, header, man8); err != nil {
		return fmt.Errorf("man pages: %w", err)
	}
	// cobra's page for the root command lists the commands by name only;
	// relayfw(8) is the whole manual.
	if err := os.WriteFile(filepath.Join(man8, "relayfw.8"), relayfwManPage(root, date), 0o644); err != nil {
		return err
	}
	if tomlPath == "" {
		return nil
	}
	data, err := os.ReadFile(tomlPath)
	if err != nil {
		return err
	}
	page, err := configManPage(tomlPath, data, date)
	if err != nil {
		return err
	}
	man5 := filepath.Join(dir, "man5")
	if err := os.MkdirAll(man5, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(man5, "relayfw.toml.5"), page, 0o644)
}

func writeCompletions(root *cobra.Command, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for file, gen := range map[string]func(string) error{
		"relayfw.bash": func(p string) error { return root.GenBashCompletionFileV2(p, true) },
		"_relayfw":     root.GenZshCompletionFile,
		"relayfw.fish": func(p string) error { return root.GenFishCompletionFile(p, true) },
	} {
		if err := gen(filepath.Join(dir, file)); err != nil {
			return fmt.Errorf("completion %s: %w", file, err)
		}
	}
	return nil
}

// manCommands are the commands relayfw(8) documents: relayfw's own, in
// the order of the root command's list.
func manCommands(root *cobra.Command) []*cobra.Command {
	var cmds []*cobra.Command
	for _, c := range root.Commands() {
		if c.IsAvailableCommand() && c.Name() != "help" && c.Name() != "completion" {
			cmds = append(cmds, c)
		}
	}
	return cmds
}

// relayfwManPage renders relayfw(8).
func relayfwManPage(root *cobra.Command, date time.Time) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%% \"RELAYFW\" \"8\" %q \"relayfw %s\" \"relayfw\"\n", date.Format("Jan 2006"), version)
	fmt.Fprintf(&b, "# NAME\nrelayfw \\- %s\n\n", root.Short)
	fmt.Fprintf(&b, "# SYNOPSIS\n**relayfw** [*OPTIONS*] *COMMAND* [*ARGS*...]\n\n")
	fmt.Fprintf(&b, "# DESCRIPTION\n%s\n\n", root.Long)
	b.WriteString("# COMMANDS\n")
	for _, c := range manCommands(root) {
		fmt.Fprintf(&b, "### %s\n", strings.TrimSuffix(c.UseLine(), " [flags]"))
		text := c.Long
		if text == "" {
			text = c.Short + "."
		}
		b.WriteString(text + "\n\n")
		manFlags(&b, c.NonInheritedFlags())
		if c.Example != "" {
			fmt.Fprintf(&b, "Examples:\n\n```\n%s\n```\n\n", c.Example)
		}
	}
	b.WriteString("# OPTIONS\nThese options apply to every command.\n\n")
	manFlags(&b, root.PersistentFlags())
	b.WriteString("# EXIT STATUS\n")
	for _, e := range exitStatuses {
		fmt.Fprintf(&b, "**%d**\n: %s\n\n", e.code, e.meaning)
	}
	b.WriteString(manExitNote + "\n\n")
	b.WriteString("# FILES\n")
	for _, f := range manFiles {
		fmt.Fprintf(&b, "*%s*\n: %s\n\n", f.path, f.what)
	}
	b.WriteString("# EXAMPLES\n")
	for _, e := range manExamples {
		fmt.Fprintf(&b, "%s\n\n```\n%s\n```\n\n", e.what, e.session)
	}
	b.WriteString("# SEE ALSO\n")
	also := []string{"**relayfw.toml**(5)"}
	for _, c := range manCommands(root) {
		also = append(also, fmt.Sprintf("**relayfw-%s**(8)", c.Name()))
	}
	also = append(also, "**tor**(1)", "**nft**(8)", "**iptables**(8)", "**ipset**(8)", "**systemd.path**(5)")
	b.WriteString(strings.Join(also, ", ") + "\n\n" + manSeeAlsoNote + "\n")
	return md2man.Render(b.Bytes())
}

// manFlagArgs names the arguments of flags whose type says little.
var manFlagArgs = map[string]string{"torrc": "path", "defaults-torrc": "path", "config": "path", "policy": "text",
	"backend": "name", "format": "format", "instance": "name", "user": "user", "to": "addr", "proto": "proto",
	"output": "file", "unit-dir": "dir"}

// manFlags lists flags as cobra's pages do.
func manFlags(b *bytes.Buffer, flags *pflag.FlagSet) {
	flags.VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Deprecated != "" || f.Name == "help" || f.Name == "version" {
			return
		}
		name := "**--" + f.Name + "**"
		if f.Shorthand != "" {
			name = "**-" + f.Shorthand + "**, " + name
		}
		if arg, _ := pflag.UnquoteUsage(f); arg != "" {
			if a, ok := manFlagArgs[f.Name]; ok {
				arg = a
			}
			name += " *" + strings.ToUpper(arg) + "*"
		}
		usage := f.Usage
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0s" && f.DefValue != "[]" &&
			!strings.Contains(usage, "(default") && !strings.Contains(usage, "default:") {
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(b, "%s\n: %s\n\n", name, usage)
	})
}

// A setting line of the annotated relayfw.toml: a table header or a key,
// commented out, with an optional description after "  # ".
var (
	tomlSetting = regexp.MustCompile(`^# (\[\[?[a-z_.]+\]\]?|[a-z_0-9]+ = .*)$`)
	tomlComment = regexp.MustCompile(`\s{2,}# `)
)

// tomlTable is one table of relayfw.toml(5) ("" for the top level).
type tomlTable struct {
	header, text string
	entries      []tomlEntry
}

// tomlEntry is one or more keys of a table and what they do.
type tomlEntry struct {
	names, values []string
	text          string
}

// parseAnnotatedConfig reads the annotated relayfw.toml: paragraphs of
// comments separated by blank lines. The first paragraph describes the
// file. In every other, the prose comes first, then the settings (a
// commented-out "key = value" or "[table]"). The prose describes the table
// when the paragraph has a header, else its keys; a key may carry its own
// description after "  # " instead. Every key must be described.
func parseAnnotatedConfig(name string, data []byte) (intro string, tables []*tomlTable, err error) {
	tables = []*tomlTable{{}}
	var prose, settings []string
	lineNo, first := 0, 0
	flush := func() error {
		defer func() { prose, settings = nil, nil }()
		if len(settings) == 0 {
			if intro != "" || len(tables) > 1 || len(tables[0].entries) > 0 {
				return fmt.Errorf("%s:%d: a paragraph without a setting", name, lineNo)
			}
			intro = strings.Join(prose, "\n")
			return nil
		}
		text := strings.Join(prose, "\n")
		shared := tomlEntry{text: text}
		for i, s := range settings {
			t := tables[len(tables)-1]
			if strings.HasPrefix(s, "[") {
				tables = append(tables, &tomlTable{header: s, text: text})
				shared.text = ""
				continue
			}
			k, v, _ := strings.Cut(s, " = ")
			if loc := tomlComment.FindStringIndex(v); loc != nil {
				t.entries = append(t.entries, tomlEntry{names: []string{k}, values: []string{v[:loc[0]]}, text: v[loc[1]:]})
				continue
			}
			if shared.text == "" {
				return fmt.Errorf("%s:%d: key %s has no description", name, first+i, k)
			}
			shared.names, shared.values = append(shared.names, k), append(shared.values, v)
			if i == len(settings)-1 || strings.HasPrefix(settings[i+1], "[") {
				t.entries = append(t.entries, shared)
				shared = tomlEntry{}
			}
		}
		return nil
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		lineNo++
		line := strings.TrimRight(sc.Text(), " ")
		switch {
		case line == "":
			if len(prose)+len(settings) > 0 {
				if err := flush(); err != nil {
					return "", nil, err
				}
			}
		case tomlSetting.MatchString(line):
			if len(settings) == 0 {
				first = lineNo
			}
			settings = append(settings, strings.TrimPrefix(line, "# "))
		case strings.HasPrefix(line, "#"):
			if len(settings) > 0 {
				return "", nil, fmt.Errorf("%s:%d: prose after a setting: leave a blank line between paragraphs", name, lineNo)
			}
			prose = append(prose, strings.TrimPrefix(strings.TrimPrefix(line, "#"), " "))
		default:
			return "", nil, fmt.Errorf("%s:%d: a setting that is not commented out: the shipped file must change nothing", name, lineNo)
		}
	}
	if len(prose)+len(settings) > 0 {
		if err := flush(); err != nil {
			return "", nil, err
		}
	}
	return intro, tables, sc.Err()
}

// configManPage renders relayfw.toml(5) from the annotated relayfw.toml.
func configManPage(name string, data []byte, date time.Time) ([]byte, error) {
	intro, tables, err := parseAnnotatedConfig(name, data)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%% \"RELAYFW.TOML\" \"5\" %q \"relayfw %s\" \"relayfw\"\n", date.Format("Jan 2006"), version)
	b.WriteString("# NAME\nrelayfw.toml \\- relayfw's own settings\n\n")
	b.WriteString("# SYNOPSIS\n*/etc/relayfw/relayfw.toml*\n\n")
	fmt.Fprintf(&b, "# DESCRIPTION\n%s\n\n%s\n\n", manText(intro), configManIntro)
	b.WriteString("# SETTINGS\n")
	for _, t := range tables {
		title := "Top level"
		if t.header != "" {
			title = strings.ReplaceAll(strings.ReplaceAll(t.header, "[", `\[`), "]", `\]`)
		}
		fmt.Fprintf(&b, "### %s\n", title)
		if t.text != "" {
			b.WriteString(manText(t.text) + "\n\n")
		}
		for _, e := range t.entries {
			var terms []string
			for i, n := range e.names {
				terms = append(terms, fmt.Sprintf("**%s** = %s", manText(n), manText(e.values[i])))
			}
			fmt.Fprintf(&b, "%s\n: %s\n\n", strings.Join(terms, ", "), manText(e.text))
		}
	}
	b.WriteString("# SEE ALSO\n**relayfw**(8), **tor**(1)\n")
	return md2man.Render(b.Bytes()), nil
}

// manText keeps the comments' text literal in Markdown: no emphasis, no
// links.
func manText(s string) string {
	r := strings.NewReplacer(`\`, `\\`, "*", `\*`, "_", `\_`, "[", `\[`, "]", `\]`, "`", "\\`", "<", `\<`)
	return r.Replace(s)
}

// configKeys lists the documented keys as "table.key" ("key" at the top
// level), sorted.
func configKeys(tables []*tomlTable) []string {
	var keys []string
	for _, t := range tables {
		for _, e := range t.entries {
			for _, n := range e.names {
				keys = append(keys, strings.TrimPrefix(strings.Trim(t.header, "[]")+"."+n, "."))
			}
		}
	}
	sort.Strings(keys)
	return keys
}
