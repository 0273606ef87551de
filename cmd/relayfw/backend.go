package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/relayfw/relayfw/config"
	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/firewall/ipt"
	"github.com/relayfw/relayfw/firewall/nft"
)

// backendChoice is the backend a command uses: --backend when given, else
// relayfw.toml's backend, else the backend of the last apply (recorded in
// the state), else auto.
func backendChoice(cmd *cobra.Command, g *globals, cfg config.Config) string {
	switch {
	case g.backendSet(cmd):
		return g.backend
	case cfg.Backend != "" && cfg.Backend != "auto":
		return cfg.Backend
	}
	if st, ok := readState(); ok && (st.Backend == "nftables" || st.Backend == "iptables") {
		return st.Backend
	}
	return "auto"
}

// backendKind is "nftables" or "iptables": what --backend and the state
// name (Name says more, e.g. "iptables 1.8.9 (legacy)").
func backendKind(b firewall.Backend) string {
	if strings.HasPrefix(b.Name(), "iptables") {
		return "iptables"
	}
	return "nftables"
}

// otherBackends are the backends other than b, as far as they work here.
func otherBackends(ctx context.Context, b firewall.Backend) []firewall.Backend {
	var out []firewall.Backend
	for _, o := range allBackends(ctx) {
		if backendKind(o) != backendKind(b) {
			out = append(out, o)
		}
	}
	return out
}

// allBackends are the backends that work on this host.
func allBackends(ctx context.Context) []firewall.Backend {
	var out []firewall.Backend
	if n := (&nft.Backend{}); n.Available(ctx) == nil {
		out = append(out, n)
	}
	if i, err := ipt.New(); err == nil && i.Available(ctx) == nil {
		out = append(out, i)
	}
	return out
}

// removeOthers removes relayfw's objects from the backends other than b:
// never two relayfw firewalls at once.
func removeOthers(ctx context.Context, g *globals, b firewall.Backend) {
	for _, o := range otherBackends(ctx, b) {
		installed, err := o.Installed(ctx)
		if err != nil || !installed {
			continue
		}
		if _, err := o.Remove(ctx); err != nil {
			g.log.Warn(fmt.Sprintf("relayfw's %s firewall is still installed next to the %s one: removing it failed: %v (relayfw remove --backend %s)", o.Name(), b.Name(), err, o.Name()))
			continue
		}
		g.log.Info(fmt.Sprintf("removed relayfw's %s firewall: the %s one replaces it", o.Name(), b.Name()))
	}
}

// chooseBackend returns the backend named, checked to work here. auto:
// nftables when the kernel answers over netlink, else iptables.
func chooseBackend(ctx context.Context, g *globals, name string) (firewall.Backend, error) {
	iptables := func() (firewall.Backend, error) {
		b, err := ipt.New()
		if err != nil {
			return nil, backendError(err)
		}
		if err := b.Available(ctx); err != nil {
			return nil, backendError(err)
		}
		return b, nil
	}
	nftables := &nft.Backend{}
	switch name {
	case "nftables":
		if err := nftables.Available(ctx); err != nil {
			return nil, backendError(err)
		}
		return nftables, nil
	case "iptables":
		return iptables()
	default: // auto
		err := nftables.Available(ctx)
		if err == nil {
			return nftables, nil
		}
		if errors.Is(err, firewall.ErrNotPermitted) {
			return nil, backendError(err)
		}
		b, ierr := iptables()
		if ierr != nil {
			return nil, &exitError{code: exitCode(ierr), err: fmt.Errorf("no firewall backend: %v; %v", err, ierr)}
		}
		g.log.Info(fmt.Sprintf("nftables is not available (%v); using %s", err, b.Name()))
		return b, nil
	}
}

// backendError maps the firewall sentinels to exit codes.
func backendError(err error) error {
	switch {
	case errors.Is(err, firewall.ErrNotPermitted):
		return &exitError{code: exitNoPerm, err: err}
	case errors.Is(err, firewall.ErrUnavailable):
		return &exitError{code: exitUnavailable, err: err}
	}
	return err
}
