package torconf

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"github.com/relayfw/relayfw/internal/endpoint"
)

// Resolved is a port line whose Host resolved to addrs, as tor's
// port_parse_config takes it (tor_addr_port_lookup: the first IPv4
// answer, else the first IPv6 one): an explicit address from then on.
// The error is the one tor refuses to start with.
func (p PortConfig) Resolved(addrs []netip.Addr) (PortConfig, error) {
	var best netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if a.Is4() {
			best = a
			break
		}
		if !best.IsValid() {
			best = a
		}
	}
	switch {
	case !best.IsValid():
		return p, fmt.Errorf("%s host name %q has no address", p.Kind, p.Host)
	case p.IPv4Only && !best.Is4():
		return p, fmt.Errorf("could not interpret %s address %s (%s) as IPv4", p.Kind, best, p.Host)
	case p.IPv6Only && best.Is4():
		return p, fmt.Errorf("could not interpret %s address %s (%s) as IPv6", p.Kind, best, p.Host)
	}
	p.Addr = best.WithZone("")
	p.IPv4, p.IPv6 = best.Is4(), !best.Is4()
	return p, nil
}

// listener is one entry of tor's list of configured ports.
type listener struct {
	addr     netip.Addr
	port     uint16
	explicit bool
	cfg      *PortConfig
}

// ListenEndpoints are the TCP endpoints tor listens on for the ORPorts
// (and with dirPorts the DirPorts) of ports, as port_parse_ports_relay
// and remove_duplicate_orports make them: a line without an address
// listens on 0.0.0.0 and, an ORPort, on [::] (IPv4Only and IPv6Only keep
// one of them); an explicit address of a family supersedes a line without
// one on the same port ("ORPort 443" with "ORPort [2001:db8::1]:443"
// listens on 0.0.0.0:443 and [2001:db8::1]:443); a NoListen port is
// advertised, not listened on. Lines that name no endpoint are said in
// skipped ("torrc:3 ORPort auto is not a fixed port"): "auto" ports, and
// host names not resolved (Resolved). The result is normalized
// (NormalizeEndpoints).
func ListenEndpoints(ports []PortConfig, dirPorts bool) (eps []netip.AddrPort, skipped []string) {
	var ors []listener
	fixed := func(p *PortConfig) (uint16, bool) {
		var why string
		n, err := strconv.ParseUint(p.Port, 10, 16)
		switch {
		case err != nil || n == 0:
			why = fmt.Sprintf("%s %s %s is not a fixed port", p.Where.Where(), p.Kind, p.Port)
		case !p.Addr.IsValid() && p.Host != "":
			why = fmt.Sprintf("%s %s %s:%s names a host not resolved", p.Where.Where(), p.Kind, p.Host, p.Port)
		default:
			return uint16(n), true
		}
		if !slices.Contains(skipped, why) {
			skipped = append(skipped, why)
		}
		return 0, false
	}
	// The ORPort lines with 0.0.0.0 for a missing address, then with
	// [::]; an explicit address the second time is a duplicate of the
	// first, which remove_duplicate_orports drops.
	for pass, def := range []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
		for i := range ports {
			p := &ports[i]
			explicit := p.Addr.IsValid() || p.Host != ""
			if p.Kind != "ORPort" || explicit && pass > 0 || !explicit && (def.Is4() && !p.IPv4 || def.Is6() && !p.IPv6) {
				continue
			}
			port, ok := fixed(p)
			switch {
			case !ok:
			case explicit:
				ors = append(ors, listener{p.Addr.Unmap(), port, true, p})
			default:
				ors = append(ors, listener{def, port, false, p})
			}
		}
	}
	for _, l := range removeDuplicateORPorts(ors) {
		if !l.cfg.NoListen {
			eps = append(eps, netip.AddrPortFrom(l.addr, l.port))
		}
	}
	if dirPorts {
		for i := range ports {
			p := &ports[i]
			if p.Kind != "DirPort" || p.NoListen || !p.Addr.IsValid() && p.Host == "" && !p.IPv4 {
				continue
			}
			port, ok := fixed(p)
			if !ok {
				continue
			}
			addr := netip.IPv4Unspecified() // tor's DirPort default
			if p.Addr.IsValid() {
				addr = p.Addr.Unmap()
			}
			eps = append(eps, netip.AddrPortFrom(addr, port))
		}
	}
	return endpoint.Normalize(eps), skipped
}

// removeDuplicateORPorts is tor's remove_duplicate_orports: of two
// equal ports the later goes, and a port without an explicit address goes
// when another of its family has the same port (an explicit address
// supersedes it; of two without, the later goes).
func removeDuplicateORPorts(ls []listener) []listener {
	removing := make([]bool, len(ls))
	for i, cur := range ls {
		if removing[i] {
			continue
		}
		for j, next := range ls {
			switch {
			case i == j || removing[j]:
			case cur.equal(next):
				removing[j] = true
			case cur.addr.Is4() != next.addr.Is4():
			case cur.addr != next.addr && cur.explicit && next.explicit:
			case cur.port == next.port && !(!cur.explicit && next.explicit):
				removing[j] = true
			}
		}
	}
	var out []listener
	for i, l := range ls {
		if !removing[i] {
			out = append(out, l)
		}
	}
	return out
}

// equal is port_cfg_eq for server ports: address, port, whether the
// address was explicit, and the server options.
func (l listener) equal(o listener) bool {
	a, b := l.cfg, o.cfg
	return l.addr == o.addr && l.port == o.port && l.explicit == o.explicit &&
		a.NoAdvertise == b.NoAdvertise && a.NoListen == b.NoListen && a.IPv4Only == b.IPv4Only && a.IPv6Only == b.IPv6Only
}
