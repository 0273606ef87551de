package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/firewall/ipt"
	"github.com/relayfw/relayfw/firewall/nft"
)

// chooseBackend returns the backend --backend names, checked to work here.
// auto: nftables when the kernel answers over netlink, else iptables.
func chooseBackend(ctx context.Context, g *globals) (firewall.Backend, error) {
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
	switch g.backend {
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
