package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/relayfw/relayfw/config"
	"github.com/relayfw/relayfw/host"
	"github.com/relayfw/relayfw/internal/phase"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// globals are the flags every command shares.
type globals struct {
	torrcs        []string
	defaultsTorrc string
	policy        string
	configPath    string
	backend       string
	wait          time.Duration
	// readOnly commands (policy, explain, print) keep quiet about what does
	// not change their answer, such as a missing consensus.
	readOnly bool
	// torrcsOnly commands (policy, paths) need no firewall: the host's
	// resolvers, consensus and host names are not read.
	torrcsOnly bool
	// sys is the host relayfw works on.
	sys    *host.System
	stdout io.Writer
	// flush writes what the command printed so far, before it waits.
	flush func()
	log   *slog.Logger
	// level is the log's level, --log-level's.
	level    slog.LevelVar
	logLevel string
}

func (g *globals) torrcSet(cmd *cobra.Command) bool   { return cmd.Flags().Changed("torrc") }
func (g *globals) backendSet(cmd *cobra.Command) bool { return cmd.Flags().Changed("backend") }
func (g *globals) defaultsSet(cmd *cobra.Command) bool {
	return cmd.Flags().Changed("defaults-torrc")
}
func (g *globals) policySet(cmd *cobra.Command) bool { return cmd.Flags().Changed("policy") }
func (g *globals) configSet(cmd *cobra.Command) bool { return cmd.Flags().Changed("config") }

func newRootCommand(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "relayfw",
		Short: "Turn a Tor relay's ExitPolicy into a host firewall",
		Long: `relayfw reads a Tor relay's torrc, computes the exit policy exactly as tor
does, and compiles it into a reject-by-default outbound firewall that lets out
what the relay's ExitPolicy allows, while the host keeps working.

The files that decide the firewall must be root's, as sshd's StrictModes
wants: a torrc, defaults file, %include'd file or directory, or relayfw.toml
that is owned by a user other than root (or the user running relayfw), or
that its group or others can write, or that lies below a directory they can
write (a sticky directory such as /tmp excepted: there others cannot replace
what is not theirs), is refused with exit 65, one line naming it, its owner
and mode, and the fix. strict_modes = false in relayfw.toml uses such torrcs
and included files with a warning; relayfw.toml itself is always checked.

Where tor is installed and relayfw runs as root, tor judges each torrc too:
after relayfw's own checks, every command that reads a torrc runs
tor --verify-config with the instance's defaults file, as Debian's units do
before they start tor, and refuses what tor refuses with exit 65 and tor's
own reason. Without tor, relayfw's checks stand and a warning says tor was
not consulted; [tor] verify = false in relayfw.toml turns it off.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			switch g.backend {
			case "auto", "nftables", "iptables":
			default:
				return usageError(fmt.Errorf("--backend %q: want auto, nftables or iptables", g.backend))
			}
			if err := g.level.UnmarshalText([]byte(g.logLevel)); err != nil {
				return usageError(fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel))
			}
			cmd.SetContext(phase.WithLog(cmd.Context(), g.log))
			return nil
		},
	}
	pf := root.PersistentFlags()
	pf.StringArrayVar(&g.torrcs, "torrc", nil, "torrc of a tor instance, repeatable (%include is followed); default: relayfw.toml's, else Debian's /etc/tor/torrc and /etc/tor/instances/*/torrc")
	pf.StringVar(&g.defaultsTorrc, "defaults-torrc", "", "tor's --defaults-torrc for every --torrc (default: Debian's defaults file for Debian's torrcs, else none)")
	pf.StringVar(&g.policy, "policy", "", "exit policy in torrc syntax; replaces the torrc's ExitPolicy lines")
	pf.StringVar(&g.configPath, "config", config.DefaultPath, "relayfw's own settings (optional at the default path)")
	pf.StringVar(&g.backend, "backend", "auto", "firewall backend: auto, nftables or iptables (default: relayfw.toml's, else the one of the last apply, else nftables when the kernel has it)")
	pf.StringVar(&g.logLevel, "log-level", "info", "least severe log messages shown on stderr: debug (with how long each phase of the command took), info, warn or error")
	pf.DurationVar(&g.wait, "wait", 0, "when another relayfw is changing the firewall, wait this long for it (default: fail at once, exit 75)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError(err) })

	root.AddCommand(newPolicyCommand(g), newExplainCommand(g), newPrintCommand(g),
		newApplyCommand(g), newBootCommand(g), newCheckCommand(g), newRemoveCommand(g), newRefreshCommand(g),
		newStatusCommand(g), newMetricsCommand(g), newConfirmCommand(g), newRollbackCommand(g), newRollbackWatcherCommand(g), newRecoverCommand(g),
		newPathsCommand(g), newUnblockCommand(g), newGendocsCommand(g))
	return root
}

// run executes relayfw on sys with args and returns the exit code. Errors
// are one line on stderr; nothing reaches stdout on error.
func run(sys *host.System, args []string, stdout, stderr io.Writer) int {
	host.Version = version
	g := &globals{sys: sys}
	g.log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{
		Level: &g.level,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	start := time.Now()
	defer func() { g.log.Debug("command done", "took", time.Since(start).Round(10*time.Microsecond)) }()
	var out strings.Builder
	g.stdout = &out
	g.flush = func() { _, _ = io.WriteString(stdout, out.String()); out.Reset() }
	root := newRootCommand(g)
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(stderr)
	err := root.ExecuteContext(context.Background())
	var status *exitStatus
	if errors.As(err, &status) {
		_, _ = io.WriteString(stdout, out.String())
		return status.code
	}
	if err != nil {
		if isCobraUsageError(err) {
			err = usageError(err)
		}
		fmt.Fprintf(stderr, "relayfw: %s\n", oneLine(err.Error()))
		return exitCode(err)
	}
	_, _ = io.WriteString(stdout, out.String())
	return exitOK
}

// oneLine keeps an error message on one line: a control character (a
// newline in a file name, say) is written as a Go escape.
func oneLine(msg string) string {
	if !strings.ContainsFunc(msg, unicode.IsControl) {
		return msg
	}
	q := strconv.Quote(msg)
	return q[1 : len(q)-1]
}

// isCobraUsageError recognises cobra's own argument errors, which it
// returns as plain errors.
func isCobraUsageError(err error) bool {
	var ee *exitError
	var status *exitStatus
	if errors.As(err, &ee) || errors.As(err, &status) {
		return false
	}
	msg := err.Error()
	for _, prefix := range []string{"unknown command", "unknown flag", "unknown shorthand flag",
		"accepts ", "requires at least", "requires at most", "invalid argument", "flag needs an argument"} {
		if strings.HasPrefix(msg, prefix) {
			return true
		}
	}
	return false
}

// loadConfig reads relayfw.toml; the default one is optional.
func loadConfig(cmd *cobra.Command, g *globals) (config.Config, error) {
	return g.sys.LoadConfig(g.configPath, !g.configSet(cmd))
}

// loadInputs reads relayfw.toml and the tor instances the flags name.
func loadInputs(cmd *cobra.Command, g *globals) (*host.Inputs, error) {
	cfg, err := loadConfig(cmd, g)
	if err != nil {
		return nil, err
	}
	opts := inputOptions(cmd, g, cfg)
	opts.ReadOnly = g.readOnly
	opts.TorrcsOnly = g.torrcsOnly
	return host.Load(cmd.Context(), opts)
}

// inputOptions are the inputs the flags name, read with cfg.
func inputOptions(cmd *cobra.Command, g *globals, cfg config.Config) host.Options {
	opts := host.Options{Torrcs: g.torrcs, Config: cfg, ConfigPath: g.configPath, Log: g.log, Tor: g.sys.FindTor(cfg), System: g.sys}
	if !g.torrcSet(cmd) {
		opts.Torrcs = nil
	}
	if g.defaultsSet(cmd) {
		opts.DefaultsTorrc = &g.defaultsTorrc
	}
	if g.policySet(cmd) {
		opts.Policy = &g.policy
	}
	return opts
}
