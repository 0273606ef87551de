// Command relayfw turns a Tor relay's ExitPolicy into a host firewall.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
