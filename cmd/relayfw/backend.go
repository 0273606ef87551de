package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/firewall/nft"
)

// chooseBackend returns the backend --backend names, checked to work here.
func chooseBackend(ctx context.Context, g *globals) (firewall.Backend, error) {
	nftables := &nft.Backend{}
	switch g.backend {
	case "nftables":
		if err := nftables.Available(ctx); err != nil {
			return nil, backendError(err)
		}
		return nftables, nil
	case "iptables":
		return nil, &exitError{code: exitUnavailable, err: errors.New("the iptables backend is not in this build yet; use --backend nftables")}
	default: // auto
		err := nftables.Available(ctx)
		if err == nil {
			return nftables, nil
		}
		if errors.Is(err, firewall.ErrNotPermitted) {
			return nil, backendError(err)
		}
		return nil, &exitError{code: exitUnavailable, err: fmt.Errorf("no firewall backend available: %v (and the iptables backend is not in this build yet)", err)}
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
