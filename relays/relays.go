// Package relays finds the addresses a relay's tor must always reach: other
// relays' ORPorts from the consensus tor caches, and the directory
// authorities and fallback directories (from torrc, else tor 0.4.9's
// compiled-in lists). It only reads; the firewall installs them.
package relays

import (
	"bufio"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/relayfw/relayfw/rules"
)

//go:embed defaults/authorities.txt
var defaultAuthorities string

//go:embed defaults/fallbacks.txt
var defaultFallbacks string

// Links is a deduplicated, sorted set of (address, TCP port) pairs.
type Links []netip.AddrPort

func (l *Links) add(a netip.Addr, port uint16) {
	if a.IsValid() && port != 0 {
		*l = append(*l, netip.AddrPortFrom(a.Unmap(), port))
	}
}

func (l Links) normalize() Links {
	slices.SortFunc(l, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return slices.Compact(l)
}

// ConsensusFiles are tor's cached consensus files in DataDirectory, in
// the order relayfw tries them.
var ConsensusFiles = []string{"cached-microdesc-consensus", "cached-consensus"}

// Network is what relayfw reads from a consensus.
type Network struct {
	// Links are the ORPorts and DirPorts tor connects to.
	Links Links
	// Authorities are the directory authorities' addresses: their
	// dir-source lines, and relays with the Authority flag.
	Authorities []netip.Addr
	// Relays are the addresses of every relay listed.
	Relays []netip.Addr
}

// ReadNetwork reads the first consensus found in dataDir.
func ReadNetwork(dataDir string) (Network, string, error) {
	var errs []error
	for _, name := range ConsensusFiles {
		path := filepath.Join(dataDir, name)
		f, err := os.Open(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n, err := ParseNetwork(f)
		f.Close()
		if err != nil {
			return Network{}, path, fmt.Errorf("%s: %w", path, err)
		}
		return n, path, nil
	}
	return Network{}, "", errors.Join(errs...)
}

// ParseNetwork reads a network-status consensus (full or microdesc
// flavour): "r" lines give each relay's IPv4 address and ORPort, "a" lines
// its other (IPv6) ORPorts, "s" lines its flags, "dir-source" lines the
// authorities' address, DirPort and ORPort.
func ParseNetwork(r io.Reader) (Network, error) {
	var n Network
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	sawR := false
	var current []netip.Addr // the addresses of the last "r" entry
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "r":
			// r nick id [digest] date time IP ORPort DirPort
			current = nil
			if len(f) < 8 {
				continue
			}
			sawR = true
			a, err := netip.ParseAddr(f[len(f)-3])
			orport, perr := strconv.ParseUint(f[len(f)-2], 10, 16)
			if err == nil && perr == nil && orport != 0 {
				n.Links.add(a, uint16(orport))
				current = append(current, a.Unmap())
				n.Relays = append(n.Relays, a.Unmap())
			}
		case "a":
			if len(f) >= 2 {
				if ap, err := netip.ParseAddrPort(f[1]); err == nil && ap.Port() != 0 {
					n.Links.add(ap.Addr(), ap.Port())
					current = append(current, ap.Addr().Unmap())
					n.Relays = append(n.Relays, ap.Addr().Unmap())
				}
			}
		case "s":
			if slices.Contains(f[1:], "Authority") {
				n.Authorities = append(n.Authorities, current...)
			}
		case "dir-source":
			// dir-source nick id address IP dirport orport
			if len(f) >= 7 {
				a, err := netip.ParseAddr(f[4])
				dirport, e1 := strconv.ParseUint(f[5], 10, 16)
				orport, e2 := strconv.ParseUint(f[6], 10, 16)
				if err == nil && e1 == nil && e2 == nil && dirport+orport != 0 {
					n.Links.add(a, uint16(dirport))
					n.Links.add(a, uint16(orport))
					n.Authorities = append(n.Authorities, a.Unmap())
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return Network{}, err
	}
	if !sawR {
		return Network{}, errors.New("no relay (\"r\" line) in the consensus")
	}
	n.Links = n.Links.normalize()
	n.Authorities = uniqueAddrs(n.Authorities)
	n.Relays = uniqueAddrs(n.Relays)
	return n, nil
}

// Addrs are the links' addresses, each once.
func (l Links) Addrs() []netip.Addr {
	out := make([]netip.Addr, len(l))
	for i, ap := range l {
		out[i] = ap.Addr()
	}
	return uniqueAddrs(out)
}

func uniqueAddrs(as []netip.Addr) []netip.Addr {
	slices.SortFunc(as, netip.Addr.Compare)
	return slices.Compact(as)
}

// dirServerLinks is the addresses one DirAuthority or FallbackDir line
// makes tor contact: its ORPort and DirPort on IPv4, its ipv6= ORPort.
func dirServerLinks(ds rules.DirServer) Links {
	var links Links
	links.add(ds.Addr, ds.ORPort)
	links.add(ds.Addr, ds.DirPort)
	if ds.IPv6.IsValid() {
		links.add(ds.IPv6.Addr(), ds.IPv6.Port())
	}
	return links
}

// DirServers parses DirAuthority or FallbackDir values; where torrc has
// none, tor's compiled-in list applies (defaults: "authorities" or
// "fallbacks").
func DirServers(values []string, defaults string) (Links, error) {
	if len(values) == 0 {
		list := defaultAuthorities
		if defaults == "fallbacks" {
			list = defaultFallbacks
		}
		for _, l := range strings.Split(list, "\n") {
			if l != "" && !strings.HasPrefix(l, "#") {
				values = append(values, l)
			}
		}
	}
	parse := rules.ParseDirAuthorityLine
	if defaults == "fallbacks" {
		parse = rules.ParseFallbackDirLine
	}
	var links Links
	for _, v := range values {
		ds, _, err := parse(v)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", v, err)
		}
		links = append(links, dirServerLinks(ds)...)
	}
	return links.normalize(), nil
}

// Merge joins link sets.
func Merge(sets ...Links) Links {
	var all Links
	for _, s := range sets {
		all = append(all, s...)
	}
	return all.normalize()
}
