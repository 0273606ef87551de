package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/relayfw/relayfw/config"
	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/firewall/ipt"
	"github.com/relayfw/relayfw/firewall/nft"
	"github.com/relayfw/relayfw/ruleset"
)

// BackendChoice is the backend to use: flag (--backend) when set, else
// relayfw.toml's backend, else the backend of the last apply (so that a
// firewall is never lost track of), else "auto".
func (s *System) BackendChoice(flag string, flagSet bool, cfg config.Config) string {
	switch {
	case flagSet:
		return flag
	case cfg.Backend != "" && cfg.Backend != "auto":
		return cfg.Backend
	}
	if st, ok := s.ReadState(); ok && (st.Backend == "nftables" || st.Backend == "iptables") {
		return st.Backend
	}
	return "auto"
}

// Kind is "nftables" or "iptables": what --backend and the state name (a
// backend's Name says more, e.g. "iptables 1.8.9 (legacy)").
func Kind(b firewall.Backend) string {
	if strings.HasPrefix(b.Name(), "iptables") {
		return "iptables"
	}
	return "nftables"
}

// ChooseBackend returns the backend named ("auto", "nftables",
// "iptables"), checked to work here. auto: nftables when the kernel
// answers over netlink, else iptables (logged). Errors wrap
// firewall.ErrUnavailable or firewall.ErrNotPermitted.
func ChooseBackend(ctx context.Context, name string, log *slog.Logger) (firewall.Backend, error) {
	iptables := func() (firewall.Backend, error) {
		b, err := ipt.New()
		if err != nil {
			return nil, err
		}
		if err := b.Available(ctx); err != nil {
			return nil, err
		}
		return b, nil
	}
	nftables := &nft.Backend{}
	switch name {
	case "nftables":
		if err := nftables.Available(ctx); err != nil {
			return nil, err
		}
		return nftables, nil
	case "iptables":
		return iptables()
	case "auto", "":
	default:
		return nil, fmt.Errorf("backend %q: want auto, nftables or iptables", name)
	}
	err := nftables.Available(ctx)
	if err == nil {
		return nftables, nil
	}
	if errors.Is(err, firewall.ErrNotPermitted) {
		return nil, err
	}
	b, ierr := iptables()
	if ierr != nil {
		return nil, fmt.Errorf("no firewall backend: %v; %w", err, ierr)
	}
	if log != nil {
		log.Info(fmt.Sprintf("nftables is not available (%v); using %s", err, b.Name()))
	}
	return b, nil
}

// Render is rs in one of the backends' formats (print --format): "nft",
// or "iptables", "ip6tables" or "ipset". It goes through Backend.Render,
// which needs neither privileges nor the kernel.
func Render(rs ruleset.Ruleset, format string) (string, error) {
	var b firewall.Backend = &ipt.Backend{}
	if format == "nft" {
		b = &nft.Backend{}
	}
	listings, err := b.Render(rs)
	if err != nil {
		return "", err
	}
	for _, l := range listings {
		if l.Format == format {
			return l.Text, nil
		}
	}
	return "", fmt.Errorf("format %q: want nft, iptables, ip6tables or ipset", format)
}

// AllBackends are the backends that work on this host.
func AllBackends(ctx context.Context) []firewall.Backend { return workingBackends(ctx, "") }

// OtherBackends are the working backends of another kind than b that may
// hold relayfw's objects. Next to nftables, the iptables backend (whose
// construction and Installed run five commands) is only looked at when
// ipt.Detect, which runs none, cannot rule relayfw's chains and ipsets out.
func OtherBackends(ctx context.Context, b firewall.Backend) []firewall.Backend {
	if Kind(b) == "nftables" {
		if p, _ := ipt.Detect(ctx); p == ipt.Absent {
			return nil
		}
	}
	return workingBackends(ctx, Kind(b))
}

// workingBackends are the backends that work on this host but those of
// kind skip, which are not even looked at (for iptables that is four
// commands).
func workingBackends(ctx context.Context, skip string) []firewall.Backend {
	var out []firewall.Backend
	if n := (&nft.Backend{}); skip != Kind(n) && n.Available(ctx) == nil {
		out = append(out, n)
	}
	if skip != "iptables" {
		if i, err := ipt.New(); err == nil && i.Available(ctx) == nil {
			out = append(out, i)
		}
	}
	return out
}

// RemoveOthers removes relayfw's objects from the backends other than b:
// never two relayfw firewalls at once.
func (s *System) RemoveOthers(ctx context.Context, b firewall.Backend, log *slog.Logger) {
	s.removeOthers(ctx, b, log, nil)
}

func (s *System) removeOthers(ctx context.Context, b firewall.Backend, log *slog.Logger, others func(context.Context, firewall.Backend) []firewall.Backend) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if others == nil {
		others = s.otherBackends
	}
	for _, o := range others(ctx, b) {
		installed, err := o.Installed(ctx)
		if err != nil || !installed {
			continue
		}
		if _, err := o.Remove(ctx); err != nil {
			log.Warn(fmt.Sprintf("relayfw's %s firewall is still installed next to the %s one: removing it failed: %v (relayfw remove --backend %s)", o.Name(), b.Name(), err, Kind(o)))
			continue
		}
		log.Info(fmt.Sprintf("removed relayfw's %s firewall: the %s one replaces it", o.Name(), b.Name()))
	}
}
