package host

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/relayfw/relayfw/torconf"
)

// hostAnswer is a host name's lookup.
type hostAnswer struct {
	addrs []netip.Addr
	err   error
}

// listenEndpoints are the endpoints an instance's tor listens on for its
// ORPorts (and DirPorts with dirPorts), as tor makes them from the
// torrc's lines (torconf.ListenEndpoints). A host name is resolved as tor
// resolves it; one that does not resolve, or that tor would refuse, is
// left out with a warning, like a port that is not fixed. names caches
// the answers of the run; every lookup shares the run's DNS deadline
// (System.DNSWait) with allow.extra's and Address's.
func (in *Inputs) listenEndpoints(ctx context.Context, t *Instance, dirPorts bool, names map[string]hostAnswer) []netip.AddrPort {
	var ports []torconf.PortConfig
	for _, p := range t.Options.Ports {
		if p.Host != "" && (p.Kind == "ORPort" || dirPorts && p.Kind == "DirPort") && p.Port != "auto" {
			a, ok := names[p.Host]
			if !ok {
				a.addrs, a.err = in.lookupHost(ctx, p.Host)
				names[p.Host] = a
			}
			if a.err != nil {
				in.log().Warn(fmt.Sprintf("inbound: %s %s %s:%s is not protected: %v", p.Where.Where(), p.Kind, p.Host, p.Port, a.err))
				continue
			}
			resolved, err := p.Resolved(a.addrs)
			if err != nil {
				in.log().Warn(fmt.Sprintf("inbound: %s %s %s:%s is not protected: %v (tor refuses to start)", p.Where.Where(), p.Kind, p.Host, p.Port, err))
				continue
			}
			p = resolved
		}
		ports = append(ports, p)
	}
	eps, skipped := torconf.ListenEndpoints(ports, dirPorts)
	for _, s := range skipped {
		in.log().Warn(fmt.Sprintf("inbound: %s and is not protected", s))
	}
	return eps
}
