package rules

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Options are the torrc options relayfw needs, with tor's defaults.
type Options struct {
	// ExitPolicy lines in order; nil when torrc has none (tor's "default
	// exit options" test looks at exactly that).
	ExitPolicy []ConfigLine

	ExitRelay                       int // -1 auto, 0, 1
	IPv6Exit                        bool
	ReducedExitPolicy               bool
	ExitPolicyRejectPrivate         bool
	ExitPolicyRejectLocalInterfaces bool
	BridgeRelay                     bool

	// Address lines (IPv4/IPv6 literals or host names), in order.
	Address []ConfigLine
	// Ports are the listener options (ORPort, DirPort, ControlPort, …) in
	// tor's order of get_configured_ports.
	Ports []PortConfig

	// OutboundBindAddresses in tor's order: Exit, OR, PT, any; each with
	// its IPv4 address before its IPv6 one.
	OutboundBindExit []netip.Addr
	OutboundBindOR   []netip.Addr
	OutboundBindPT   []netip.Addr
	OutboundBindAny  []netip.Addr

	DataDirectory           string
	User                    string
	ServerDNSResolvConfFile string

	// DirAuthority and FallbackDir values; empty means tor's compiled-in
	// lists apply.
	DirAuthority []string
	FallbackDir  []string

	// Warnings about lines relayfw read differently from tor, or not at all.
	Warnings []string

	// Origin is the line that last set each option (lower-case name).
	Origin map[string]ConfigLine
}

// PortConfig is one listener line such as "ORPort 198.51.100.7:443".
type PortConfig struct {
	Kind string     // "ORPort", "DirPort", "ControlPort", …
	Addr netip.Addr // explicit address; invalid when only a port was given
	Port string
	// IPv4 and IPv6 tell which families the listener serves.
	IPv4, IPv6  bool
	NoAdvertise bool
	Where       ConfigLine
}

// DefaultOptions are tor 0.4.9's defaults for the options relayfw reads.
func DefaultOptions() Options {
	return Options{ExitRelay: -1, ExitPolicyRejectPrivate: true}
}

// portOptions are tor's listener options in get_configured_ports order
// (parse_ports in config.c, then port_parse_ports_relay).
var portOptions = []string{
	"SocksPort", "DNSPort", "TransPort", "NATDPort", "HTTPTunnelPort",
	"MetricsPort", "ControlPort", "ORPort", "ExtORPort", "DirPort",
}

// OptionsFromLines interprets torrc lines as tor's config_assign does: option
// names are case-insensitive, the last value of a single-valued option
// wins, an empty value or "/Option" resets it, list options accumulate.
// Unknown options are ignored.
func OptionsFromLines(lines []ConfigLine) (Options, error) {
	o := DefaultOptions()
	o.Origin = map[string]ConfigLine{}
	boolOpt := map[string]*bool{
		"ipv6exit":                        &o.IPv6Exit,
		"reducedexitpolicy":               &o.ReducedExitPolicy,
		"exitpolicyrejectprivate":         &o.ExitPolicyRejectPrivate,
		"exitpolicyrejectlocalinterfaces": &o.ExitPolicyRejectLocalInterfaces,
		"bridgerelay":                     &o.BridgeRelay,
	}
	boolDefault := map[string]bool{"exitpolicyrejectprivate": true}
	stringOpt := map[string]*string{
		"datadirectory":           &o.DataDirectory,
		"user":                    &o.User,
		"serverdnsresolvconffile": &o.ServerDNSResolvConfFile,
	}
	listLines := map[string][]ConfigLine{}
	listKeys := map[string]bool{"exitpolicy": true, "address": true,
		"outboundbindaddress": true, "outboundbindaddressor": true,
		"outboundbindaddressexit": true, "outboundbindaddresspt": true,
		"dirauthority": true, "fallbackdir": true}
	for _, p := range portOptions {
		listKeys[strings.ToLower(p)] = true
	}

	known := []string{"exitrelay"}
	for k := range listKeys {
		known = append(known, k)
	}
	for k := range boolOpt {
		known = append(known, k)
	}
	for k := range stringOpt {
		known = append(known, k)
	}
	for _, l := range lines {
		key := strings.ToLower(l.Key)
		switch key { // tor's aliases
		case "resolvconf":
			key = "serverdnsresolvconffile"
		case "dirserver":
			key = "dirauthority"
		}
		o.Origin[key] = l
		switch {
		case listKeys[key]:
			if l.Clear {
				delete(listLines, key)
			} else if l.Value != "" { // tor: "Linelist option has no value. Skipping."
				listLines[key] = append(listLines[key], l)
			}
		case key == "exitrelay":
			switch {
			case l.Clear || l.Value == "":
				o.ExitRelay = -1
			case l.Value == "0" || l.Value == "1":
				o.ExitRelay = int(l.Value[0] - '0')
			case strings.EqualFold(l.Value, "auto"):
				o.ExitRelay = -1
			default:
				return o, lineError(l, fmt.Errorf("ExitRelay %q: allowed values are 0, 1 and auto", l.Value))
			}
		case boolOpt[key] != nil:
			switch {
			case l.Clear || l.Value == "":
				*boolOpt[key] = boolDefault[key]
			case l.Value == "0" || l.Value == "1":
				*boolOpt[key] = l.Value == "1"
			default:
				return o, lineError(l, fmt.Errorf("%s %q: allowed values are 0 and 1", l.Key, l.Value))
			}
		case stringOpt[key] != nil:
			*stringOpt[key] = l.Value
		default:
			for _, k := range known {
				if strings.HasPrefix(k, key) {
					o.Warnings = append(o.Warnings, fmt.Sprintf(
						"torrc %s: %q looks like an abbreviation tor may expand; relayfw ignores it (write the full option name)",
						l.Where(), l.Key))
					break
				}
			}
		}
	}

	o.ExitPolicy = listLines["exitpolicy"]
	for _, l := range listLines["dirauthority"] {
		o.DirAuthority = append(o.DirAuthority, l.Value)
	}
	for _, l := range listLines["fallbackdir"] {
		o.FallbackDir = append(o.FallbackDir, l.Value)
	}
	o.Address = listLines["address"]
	for _, p := range portOptions {
		for _, l := range listLines[strings.ToLower(p)] {
			pc, err := parsePortConfig(p, l)
			if err != nil {
				return o, lineError(l, err)
			}
			if pc != nil {
				o.Ports = append(o.Ports, *pc)
			}
		}
	}
	var err error
	if o.OutboundBindExit, err = outboundAddrs(listLines["outboundbindaddressexit"]); err != nil {
		return o, err
	}
	if o.OutboundBindOR, err = outboundAddrs(listLines["outboundbindaddressor"]); err != nil {
		return o, err
	}
	if o.OutboundBindPT, err = outboundAddrs(listLines["outboundbindaddresspt"]); err != nil {
		return o, err
	}
	if o.OutboundBindAny, err = outboundAddrs(listLines["outboundbindaddress"]); err != nil {
		return o, err
	}
	return o, nil
}

func lineError(l ConfigLine, err error) error {
	return &SyntaxError{File: l.File, Line: l.Line, Err: err}
}

// TorAddrParse is tor_addr_parse: an IPv4 address, or an IPv6 address
// with or without brackets.
func TorAddrParse(s string) (netip.Addr, bool) {
	if len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' {
		return torInetPton6(s[1 : len(s)-1])
	}
	if a, ok := torInetPton6(s); ok {
		return a, true
	}
	return torInetAton(s)
}

// outboundAddrs is parse_outbound_address_lines: one IPv4 and one IPv6
// address at most, returned IPv4 first.
func outboundAddrs(lines []ConfigLine) ([]netip.Addr, error) {
	var v4, v6 netip.Addr
	for _, l := range lines {
		a, ok := TorAddrParse(l.Value)
		switch {
		case !ok:
			return nil, lineError(l, fmt.Errorf("%s %q is not an IP address", l.Key, l.Value))
		case a.Is4() && v4.IsValid(), !a.Is4() && v6.IsValid():
			return nil, lineError(l, fmt.Errorf("multiple %s addresses of one family configured: %s", l.Key, l.Value))
		case a.Is4():
			v4 = a
		default:
			v6 = a
		}
	}
	var out []netip.Addr
	for _, a := range []netip.Addr{v4, v6} {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	return out, nil
}

// parsePortConfig reads the address part of a listener line. It returns
// nil for a disabled port ("0") or a unix socket.
func parsePortConfig(kind string, l ConfigLine) (*PortConfig, error) {
	fields := strings.Fields(l.Value)
	if len(fields) == 0 {
		return nil, nil
	}
	first := fields[0]
	if strings.HasPrefix(first, "unix:") {
		return nil, nil
	}
	pc := &PortConfig{Kind: kind, Where: l, IPv4: true, IPv6: kind == "ORPort"}
	for _, f := range fields[1:] {
		switch strings.ToLower(f) {
		case "ipv4only":
			pc.IPv6 = false
		case "ipv6only":
			pc.IPv4 = false
		case "noadvertise":
			pc.NoAdvertise = true
		}
	}
	if first == "auto" || isAllDigits(first) {
		if first == "0" {
			return nil, nil
		}
		pc.Port = first
		return pc, nil
	}
	// [addr]:port, addr:port, or addr alone (then the default port).
	host, port := first, ""
	if i := strings.LastIndexByte(first, ':'); i >= 0 && (strings.HasPrefix(first, "[") == strings.Contains(first[:i], "]")) {
		host, port = first[:i], first[i+1:]
	}
	a, ok := TorAddrParse(host)
	if !ok {
		if strings.Contains(host, ":") {
			return nil, errors.New(kind + " " + first + ": malformed address")
		}
		// A host name: tor resolves it; it never names a public address
		// relayfw could reject without resolving, so record only the port.
		pc.Port = port
		return pc, nil
	}
	pc.Addr, pc.Port = a, port
	pc.IPv4, pc.IPv6 = a.Is4(), !a.Is4()
	return pc, nil
}

func isAllDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}
