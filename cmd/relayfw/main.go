// Command relayfw turns a Tor relay's ExitPolicy into a host firewall.
package main

import (
	"os"

	"github.com/relayfw/relayfw/host"
)

func main() {
	os.Exit(run(host.DefaultSystem(), os.Args[1:], os.Stdout, os.Stderr))
}
