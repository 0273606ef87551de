package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// newGendocsCommand writes man pages and shell completions generated from
// the commands themselves, for packaging.
func newGendocsCommand(g *globals) *cobra.Command {
	var man, completions string
	cmd := &cobra.Command{
		Use:    "gendocs",
		Short:  "Write man pages and shell completions (for packaging)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			root := cmd.Root()
			if man != "" {
				if err := os.MkdirAll(man, 0o755); err != nil {
					return err
				}
				header := &doc.GenManHeader{Title: "RELAYFW", Section: "8", Source: "relayfw " + version, Manual: "relayfw"}
				if err := doc.GenManTree(root, header, man); err != nil {
					return fmt.Errorf("man pages: %w", err)
				}
			}
			if completions != "" {
				if err := os.MkdirAll(completions, 0o755); err != nil {
					return err
				}
				for file, gen := range map[string]func(string) error{
					"relayfw.bash": func(p string) error { return root.GenBashCompletionFileV2(p, true) },
					"_relayfw":     root.GenZshCompletionFile,
					"relayfw.fish": func(p string) error { return root.GenFishCompletionFile(p, true) },
				} {
					if err := gen(filepath.Join(completions, file)); err != nil {
						return fmt.Errorf("completion %s: %w", file, err)
					}
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&man, "man", "", "directory for the man pages")
	cmd.Flags().StringVar(&completions, "completions", "", "directory for bash, zsh and fish completions")
	return cmd
}
