package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/relayfw/relayfw/config"
	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/host"
)

// backendChoice is the backend a command uses (host.BackendChoice).
func backendChoice(cmd *cobra.Command, g *globals, cfg config.Config) string {
	return g.sys.BackendChoice(g.backend, g.backendSet(cmd), cfg)
}

// chooseBackend returns the backend named, checked to work here.
func chooseBackend(ctx context.Context, g *globals, name string) (firewall.Backend, error) {
	b, err := host.ChooseBackend(ctx, name, g.log)
	return b, backendError(err)
}
