package torconf

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/relayfw/relayfw/internal/torcompat"
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
	// TestingTorNetwork switches tor to its test-network defaults, of
	// which relayfw reads ExitPolicyRejectPrivate (0).
	TestingTorNetwork bool

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

	// What tor writes into the server descriptor besides the exit policy
	// (they count towards its size): the Nickname ("" is tor's
	// "Unnamed"), ContactInfo, the MyFamily members (each comma-separated
	// item of every line, as tor's normalize_nickname_list splits them)
	// and how many FamilyId lines there are.
	Nickname    string
	ContactInfo string
	MyFamily    []string
	FamilyIDs   int

	// ControlSockets are the unix sockets tor's controllers connect to
	// (ControlSocket PATH, ControlPort unix:PATH), in the torrc's order;
	// ControlSocketOff says a "ControlSocket 0" line turned them off.
	// TCP control ports are in Ports (Kind "ControlPort").
	ControlSockets   []string
	ControlSocketOff bool
	// CookieAuthentication and CookieAuthFile: where tor writes the
	// control cookie ("" : DataDirectory/control_auth_cookie).
	CookieAuthentication bool
	CookieAuthFile       string

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
	Addr netip.Addr // explicit address; invalid when only a port (or Host) was given
	// Host is a host name given instead of an address
	// ("ORPort relay.example.org:443"): tor resolves it when it reads the
	// line (Resolved); "" otherwise.
	Host string
	Port string
	// IPv4 and IPv6 tell which families the listener serves.
	IPv4, IPv6  bool
	NoAdvertise bool
	// NoListen: tor advertises the port but does not listen on it.
	NoListen bool
	// IPv4Only and IPv6Only as given on the line.
	IPv4Only, IPv6Only bool
	Where              ConfigLine
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
// wins, list options accumulate, and an empty value or "/Option" clears
// the option to its type's zero (config_clear: ExitPolicyRejectPrivate
// becomes 0 and ExitRelay 0, not their defaults).
// Option names are resolved against tor's own option table: a name tor
// does not know, or one it refuses to assign, is a SyntaxError, as it is
// for tor; abbreviations, aliases and obsolete names get tor's warnings.
func OptionsFromLines(lines []ConfigLine) (Options, error) {
	return OptionsFromGroups(lines)
}

// OptionsFromGroups is tor's options_init_from_string: each group (the
// defaults file, then the torrc) is assigned in turn, and after a group
// its list options are "fragile": the next group's first line of a list
// replaces it, unless written "+Option", which appends.
func OptionsFromGroups(groups ...[]ConfigLine) (Options, error) {
	o := DefaultOptions()
	o.Origin = map[string]ConfigLine{}
	boolOpt := map[string]*bool{
		"ipv6exit":                        &o.IPv6Exit,
		"reducedexitpolicy":               &o.ReducedExitPolicy,
		"exitpolicyrejectprivate":         &o.ExitPolicyRejectPrivate,
		"exitpolicyrejectlocalinterfaces": &o.ExitPolicyRejectLocalInterfaces,
		"bridgerelay":                     &o.BridgeRelay,
		"testingtornetwork":               &o.TestingTorNetwork,
		"cookieauthentication":            &o.CookieAuthentication,
	}
	stringOpt := map[string]*string{
		"datadirectory":           &o.DataDirectory,
		"user":                    &o.User,
		"serverdnsresolvconffile": &o.ServerDNSResolvConfFile,
		"nickname":                &o.Nickname,
		"contactinfo":             &o.ContactInfo,
		"cookieauthfile":          &o.CookieAuthFile,
	}
	listLines := map[string][]ConfigLine{}
	listKeys := map[string]bool{"exitpolicy": true, "address": true,
		"outboundbindaddress": true, "outboundbindaddressor": true,
		"outboundbindaddressexit": true, "outboundbindaddresspt": true,
		"dirauthority": true, "fallbackdir": true, "myfamily": true, "familyid": true, "controlsocket": true}
	for _, p := range portOptions {
		listKeys[strings.ToLower(p)] = true
	}

	fragile := map[string]bool{}
	for _, lines := range groups {
		if err := o.assign(lines, listKeys, listLines, fragile, stringOpt, boolOpt); err != nil {
			return o, err
		}
		for k := range listLines {
			fragile[k] = true
		}
	}
	if o.TestingTorNetwork {
		if _, set := o.Origin["exitpolicyrejectprivate"]; !set {
			o.ExitPolicyRejectPrivate = false // testnet.inc
		}
		set := func(k string) bool { l, ok := o.Origin[k]; return ok && !l.Clear && l.Value != "" }
		if len(listLines["dirauthority"]) == 0 && !(set("alternatedirauthority") && set("alternatebridgeauthority")) {
			return o, lineError(o.Origin["testingtornetwork"], errors.New(
				"TestingTorNetwork may only be configured in combination with a non-default set of DirAuthority (tor refuses to start)"))
		}
	}
	return o.finish(listLines)
}

// assign is config_assign of one group of lines.
func (o *Options) assign(lines []ConfigLine, listKeys map[string]bool, listLines map[string][]ConfigLine,
	fragile map[string]bool, stringOpt map[string]*string, boolOpt map[string]*bool) error {
	seen := map[string]ConfigLine{}
	for _, l := range lines {
		opt, ok := lookupTorOption(l.Key)
		if !ok {
			return lineError(l, fmt.Errorf("unknown option %q: tor refuses to start (\"Unknown option '%s'.  Failing.\")", l.Key, l.Key))
		}
		if opt.Kind&optVirtual != 0 {
			return lineError(l, fmt.Errorf("%s cannot be set in a torrc: tor refuses to start (\"Cannot assign directly to virtual option.\")", opt.Name))
		}
		for _, w := range opt.Warnings {
			o.Warnings = append(o.Warnings, fmt.Sprintf("torrc %s: %s", l.Where(), w))
		}
		key := strings.ToLower(opt.Name)
		if strings.HasPrefix(key, "__") && listKeys[key[2:]] {
			key = key[2:] // "__ORPort" adds to the ORPort lines
		}
		if opt.Kind&optObsolete != 0 {
			continue
		}
		if !listKeys[key] && !l.Clear && l.Value != "" {
			if prev, dup := seen[key]; dup && prev.File == l.File {
				o.Warnings = append(o.Warnings, fmt.Sprintf("torrc %s: %s is set more than once (first at line %d); tor uses the last value", l.Where(), opt.Name, prev.Line))
			}
			seen[key] = l
		}
		o.Origin[key] = l
		switch {
		case listKeys[key]:
			switch {
			case l.Clear:
				delete(listLines, key)
			case l.Value == "": // tor: "Linelist option has no value. Skipping."
			default:
				if fragile[key] && !l.Append {
					delete(listLines, key) // a new group replaces the list
				}
				fragile[key] = false
				listLines[key] = append(listLines[key], l)
			}
		case key == "exitrelay":
			switch {
			case l.Clear || l.Value == "":
				o.ExitRelay = 0 // config_clear: the type's zero, not the default
			case l.Value == "0" || l.Value == "1":
				o.ExitRelay = int(l.Value[0] - '0')
			case strings.EqualFold(l.Value, "auto"):
				o.ExitRelay = -1
			default:
				return lineError(l, fmt.Errorf("ExitRelay %q: allowed values are 0, 1 and auto", l.Value))
			}
		case boolOpt[key] != nil:
			switch {
			case l.Clear || l.Value == "":
				*boolOpt[key] = false // config_clear, even where tor's default is 1
			case l.Value == "0" || l.Value == "1":
				*boolOpt[key] = l.Value == "1"
			default:
				return lineError(l, fmt.Errorf("%s %q: allowed values are 0 and 1", l.Key, l.Value))
			}
		case stringOpt[key] != nil:
			*stringOpt[key] = l.Value
		}
	}
	return nil
}

// finish interprets the list options once every group is assigned.
func (o *Options) finish(listLines map[string][]ConfigLine) (Options, error) {
	o.ExitPolicy = listLines["exitpolicy"]
	for _, d := range []struct {
		lines []ConfigLine
		parse func(string) (DirServer, []string, error)
		out   *[]string
	}{
		{listLines["dirauthority"], ParseDirAuthority, &o.DirAuthority},
		{listLines["fallbackdir"], ParseFallbackDir, &o.FallbackDir},
	} {
		for _, l := range d.lines {
			_, warns, err := d.parse(l.Value)
			for _, w := range warns {
				o.Warnings = append(o.Warnings, fmt.Sprintf("torrc %s: %s", l.Where(), w))
			}
			if err != nil {
				return *o, lineError(l, err)
			}
			*d.out = append(*d.out, l.Value)
		}
	}
	o.Address = listLines["address"]
	for _, l := range listLines["myfamily"] {
		for _, m := range strings.Split(l.Value, ",") {
			if m = strings.TrimSpace(m); m != "" {
				o.MyFamily = append(o.MyFamily, m)
			}
		}
	}
	o.FamilyIDs = len(listLines["familyid"])
	o.ControlSockets, o.ControlSocketOff = controlSockets(listLines["controlport"], listLines["controlsocket"])
	for _, p := range portOptions {
		for _, l := range listLines[strings.ToLower(p)] {
			pc, warns, err := parsePortConfig(p, l)
			for _, w := range warns {
				o.Warnings = append(o.Warnings, fmt.Sprintf("torrc %s: %s", l.Where(), w))
			}
			if err != nil {
				return *o, lineError(l, err)
			}
			if pc != nil {
				o.Ports = append(o.Ports, *pc)
			}
		}
	}
	var err error
	if o.OutboundBindExit, err = outboundAddrs(listLines["outboundbindaddressexit"]); err != nil {
		return *o, err
	}
	if o.OutboundBindOR, err = outboundAddrs(listLines["outboundbindaddressor"]); err != nil {
		return *o, err
	}
	if o.OutboundBindPT, err = outboundAddrs(listLines["outboundbindaddresspt"]); err != nil {
		return *o, err
	}
	if o.OutboundBindAny, err = outboundAddrs(listLines["outboundbindaddress"]); err != nil {
		return *o, err
	}
	return *o, nil
}

func lineError(l ConfigLine, err error) error {
	return &SyntaxError{File: l.File, Line: l.Line, Err: err}
}

// outboundAddrs is parse_outbound_address_lines: one IPv4 and one IPv6
// address at most, returned IPv4 first.
func outboundAddrs(lines []ConfigLine) ([]netip.Addr, error) {
	var v4, v6 netip.Addr
	for _, l := range lines {
		a, ok := torcompat.AddrParse(l.Value)
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

// serverPorts take tor's server options (CL_PORT_SERVER_OPTIONS) and no
// unix sockets.
var serverPorts = map[string]bool{"ORPort": true, "DirPort": true}

// parsePortConfig reads a listener line as tor's port_parse_config does
// for the address and, on ORPort and DirPort, the server options; the
// errors are the ones tor refuses to start with. It returns nil for a
// disabled port ("0"), a unix socket, or a line tor ignores.
func parsePortConfig(kind string, l ConfigLine) (*PortConfig, []string, error) {
	fields := strings.Fields(l.Value)
	if len(fields) == 0 {
		return nil, nil, fmt.Errorf("invalid %s line with no address", kind)
	}
	if strings.HasPrefix(fields[0], "unix:") {
		if serverPorts[kind] {
			return nil, nil, fmt.Errorf("%s does not support unix sockets", kind)
		}
		return nil, nil, nil
	}
	pc := &PortConfig{Kind: kind, Where: l, IPv4: true, IPv6: kind == "ORPort"}
	explicit, err := pc.parseAddrPort(fields[0])
	if err != nil || pc.Port == "" {
		return nil, nil, err // pc.Port "": port 0, disabled
	}
	if explicit {
		pc.IPv4, pc.IPv6 = pc.Addr.Is4(), !pc.Addr.Is4()
	}
	if !serverPorts[kind] {
		return pc, nil, nil // client ports: tor only warns about their flags
	}
	warns, err := pc.serverOptions(fields[1:], explicit)
	if err != nil {
		return nil, warns, err
	}
	return pc, warns, nil
}

// parseAddrPort reads the first field of a listener line: "auto",
// ADDR:auto, a port, or ADDR:PORT. It leaves Port "" for port 0 (the
// listener is off); explicit says an address was given.
func (pc *PortConfig) parseAddrPort(first string) (explicit bool, err error) {
	kind := pc.Kind
	switch {
	case strings.EqualFold(first, "auto"):
		pc.Port = "auto"
	case len(first) >= 5 && strings.EqualFold(first[len(first)-5:], ":auto"):
		host := first[:len(first)-5]
		a, ok := torcompat.AddrParse(host)
		if _, _, split := torcompat.AddrPortSplit(host); !split || (!ok && strings.Contains(strings.Trim(host, "[]"), ":")) {
			return false, fmt.Errorf("invalid address %q for %s", first, kind)
		}
		if ok {
			pc.Addr, explicit = a, true
		} else {
			pc.Host = host
		}
		pc.Port = "auto"
	default:
		if p, ok := torcompat.ParseLongAll(first, 0, 65535); ok {
			if p != 0 {
				pc.Port = fmt.Sprint(p)
			}
			return false, nil
		}
		host, port, ok := torcompat.AddrPortSplit(first)
		if !ok {
			return false, fmt.Errorf("couldn't parse address %q for %s", first, kind)
		}
		if port == 0 {
			return false, fmt.Errorf("%s line has address but no port", kind)
		}
		pc.Port = fmt.Sprint(port)
		if a, ok := torcompat.AddrParse(host); ok {
			pc.Addr, explicit = a, true
		} else if strings.Contains(host, ":") || strings.ContainsAny(host, "[]") || host == "" {
			return false, fmt.Errorf("couldn't parse address %q for %s", first, kind)
		}
		// else a host name: tor resolves it (Resolved); until then it
		// names no address relayfw could reject.
		if !explicit {
			pc.Host = host
		}
	}
	return explicit, nil
}

// serverOptions reads the flags of an ORPort or DirPort line; tor warns
// about those it does not know and refuses contradictions.
func (pc *PortConfig) serverOptions(flags []string, explicit bool) ([]string, error) {
	kind := pc.Kind
	var warns []string
	var noAdvertise, noListen, v4Only, v6Only bool
	for _, f := range flags {
		switch strings.ToLower(f) {
		case "noadvertise":
			noAdvertise = true
		case "nolisten":
			noListen = true
		case "ipv4only":
			v4Only = true
		case "ipv6only":
			v6Only = true
		default:
			warns = append(warns, fmt.Sprintf("unrecognized %s option %q", kind, f))
		}
	}
	switch {
	case noAdvertise && noListen:
		return warns, fmt.Errorf("both NoListen and NoAdvertise on %s line %q", kind, pc.Where.Value)
	case v4Only && v6Only:
		return warns, fmt.Errorf("both IPv4Only and IPv6Only on %s line %q", kind, pc.Where.Value)
	case v4Only && explicit && !pc.Addr.Is4():
		return warns, fmt.Errorf("could not interpret %s address as IPv4", kind)
	case v6Only && explicit && pc.Addr.Is4():
		return warns, fmt.Errorf("could not interpret %s address as IPv6", kind)
	}
	pc.NoAdvertise, pc.NoListen = noAdvertise, noListen
	pc.IPv4Only, pc.IPv6Only = v4Only, v6Only
	if v4Only {
		pc.IPv6 = false
	}
	if v6Only {
		pc.IPv4 = false
	}
	return warns, nil
}

// controlSockets are the unix control sockets of the ControlPort
// ("unix:PATH") and ControlSocket lines, as tor's
// port_cfg_line_extract_addrport reads their first word (unix:"PATH" is
// C-quoted); off says a "ControlSocket 0" line turned them off. A line
// tor would refuse (tor --verify-config judges the torrc) names none.
func controlSockets(controlPorts, controlSockets []ConfigLine) (paths []string, off bool) {
	first := func(value string) (path string, unix bool) {
		value = strings.TrimLeft(value, " \t")
		rest, unix := strings.CutPrefix(value, "unix:")
		if unix && strings.HasPrefix(rest, "\"") {
			p, _, ok := unescapeString(rest, 0)
			if !ok {
				return "", true
			}
			return p, true
		}
		if i := strings.IndexAny(rest, " \t"); i >= 0 {
			rest = rest[:i]
		}
		return rest, unix
	}
	for _, l := range controlPorts {
		if p, unix := first(l.Value); unix && p != "" {
			paths = append(paths, p)
		}
	}
	for _, l := range controlSockets {
		switch p, _ := first(l.Value); p {
		case "":
		case "0":
			off = true
		default:
			paths = append(paths, p)
		}
	}
	return paths, off
}
