package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/relayfw/relayfw/host"
)

// pathUnit is the unit that re-applies when an input changes.
const pathUnit = "relayfw-reapply.path"

func newPathsCommand(g *globals) *cobra.Command {
	var update bool
	var unitDir string
	cmd := &cobra.Command{
		Use:   "paths",
		Short: "List the files relayfw's firewall depends on (for relayfw-reapply.path)",
		Long: `Print every file and directory relayfw reads to build the firewall, one per
line: each tor instance's torrc, its defaults file and every file or
directory it %includes, relayfw.toml, the resolv.conf files, and Debian's
/etc/tor/instances, where new instances appear.

With --update-path-unit, write them as PathChanged= lines into a drop-in of
relayfw-reapply.path under --unit-dir; when that changed and systemd runs,
reload systemd and restart the path unit so that it watches them. Each path
is written as systemd reads PathChanged=: literally (a space or a backslash
stands for itself), "%" as "%%". A path no unit line can name — a control
character such as a newline, bytes that are not UTF-8, a trailing space or
backslash — is refused (exit 65), and so is such a file name in a directory
a torrc %includes, by every command that reads the torrcs.
relayfw.service and relayfw-reapply.service run this after every apply.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			g.torrcsOnly = true
			in, err := loadInputs(cmd, g)
			if err != nil {
				return err
			}
			paths := in.Paths()
			if !update {
				_, err := fmt.Fprintln(g.stdout, strings.Join(paths, "\n"))
				return err
			}
			changed, err := writePathDropIn(unitDir, paths)
			var refused *host.RefusedFileError
			switch {
			case errors.As(err, &refused):
				return err // exit 65, naming the file
			case err != nil:
				return &exitError{code: exitCantCreate, err: err}
			}
			if !changed {
				g.log.Debug("path unit drop-in unchanged")
				return nil
			}
			g.log.Info(fmt.Sprintf("%s now watches %d paths", pathUnit, len(paths)))
			if _, err := os.Stat("/run/systemd/system"); err != nil {
				return nil // systemd is not running: nothing to reload
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			for _, args := range [][]string{{"daemon-reload"}, {"try-restart", pathUnit}} {
				if out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput(); err != nil {
					return fmt.Errorf("systemctl %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&update, "update-path-unit", false, "write the paths into "+pathUnit+"'s drop-in and reload systemd when they changed")
	cmd.Flags().StringVar(&unitDir, "unit-dir", "/run/systemd/system", "where the drop-in directory "+pathUnit+".d is")
	return cmd
}

// writePathDropIn writes the drop-in; changed reports whether its content
// is new.
func writePathDropIn(unitDir string, paths []string) (changed bool, err error) {
	var b strings.Builder
	b.WriteString("# Written by \"relayfw paths --update-path-unit\": every file relayfw read.\n[Path]\n")
	for _, p := range paths {
		// As systemd reads PathChanged=: literally, but for specifiers.
		v, err := host.PathChangedValue(p)
		if err != nil {
			return false, err
		}
		fmt.Fprintf(&b, "PathChanged=%s\n", v)
	}
	dir := filepath.Join(unitDir, pathUnit+".d")
	file := filepath.Join(dir, "50-inputs.conf")
	if old, err := os.ReadFile(file); err == nil && string(old) == b.String() {
		return false, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return false, err
	}
	return true, os.Rename(tmp, file)
}
