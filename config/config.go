// Package config reads relayfw's own settings, /etc/relayfw/relayfw.toml.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/relayfw/relayfw/ruleset"
)

// DefaultPath is where relayfw looks for its settings when --config is
// not given; the file is optional there.
const DefaultPath = "/etc/relayfw/relayfw.toml"

// Config is relayfw.toml.
type Config struct {
	// Torrc is the torrc to read when --torrc is not given.
	Torrc string `toml:"torrc"`
	// Backend is the firewall backend when --backend is not given: "auto"
	// (the default: the backend of the last apply, else nftables when the
	// kernel has it, else iptables), "nftables" or "iptables".
	Backend string `toml:"backend"`
	// Instances are the tor instances to read when --torrc is not given,
	// instead of Torrc and of the Debian layout.
	Instances []Instance `toml:"instance"`
	// DataDirectory is tor's, where relayfw reads the cached consensus;
	// default: the torrc's DataDirectory, else /var/lib/tor (Debian).
	DataDirectory string `toml:"data_directory"`
	// Allow are the host allowances; each is on unless set to false.
	Allow Allow `toml:"allow"`
	// Log switches the logging of rejected packets.
	Log Log `toml:"log"`
	// Inbound is the opt-in protection of the ORPorts.
	Inbound Inbound `toml:"inbound"`
	// StrictModes refuses a torrc, defaults file, %include'd file or
	// directory that a user other than root (or the one running relayfw)
	// could change, like sshd's StrictModes; false uses it with a
	// warning. On unless set to false. relayfw.toml itself is always
	// checked.
	StrictModes *bool `toml:"strict_modes"`
	// Tor is how relayfw has tor itself judge the torrcs.
	Tor Tor `toml:"tor"`
}

// Tor is the [tor] table. Where tor is installed, every command that reads
// a torrc has tor judge each instance's configuration as Debian's units do
// before they start it (tor --verify-config), and refuses what tor refuses.
type Tor struct {
	// Verify asks tor; false leaves the judgement to relayfw's own checks.
	// On unless set to false.
	Verify *bool `toml:"verify"`
	// Path is tor's binary; default: tor in /usr/bin, /usr/sbin,
	// /usr/local/bin, /usr/local/sbin, /bin or /sbin (never $PATH:
	// relayfw runs it as root).
	Path string `toml:"path"`
	// VerifyTimeout bounds each tor --verify-config (a duration such as
	// "30s"; default DefaultVerifyTimeout). tor checks a long ExitPolicy
	// slowly: about 1 s for 10,000 entries, 25 s for 50,000.
	VerifyTimeout string `toml:"verify_timeout"`
}

// DefaultVerifyTimeout bounds tor --verify-config when [tor] sets no
// verify_timeout.
const DefaultVerifyTimeout = 30 * time.Second

// Timeout is VerifyTimeout read, or DefaultVerifyTimeout.
func (t Tor) Timeout() (time.Duration, error) {
	if t.VerifyTimeout == "" {
		return DefaultVerifyTimeout, nil
	}
	d, err := time.ParseDuration(t.VerifyTimeout)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("verify_timeout %q: want a positive duration such as 30s or 2m", t.VerifyTimeout)
	}
	return d, nil
}

// Inbound is the [inbound] table: limits on new connections to the
// relays' ORPorts, per source. Off unless enabled; a limit left out (0 or
// "") is the default of ruleset.DefaultInbound.
type Inbound struct {
	Enabled bool `toml:"enabled"`
	// DirPorts protects the DirPorts too.
	DirPorts       bool   `toml:"dir_ports"`
	PerMinute      uint   `toml:"per_minute"`
	Burst          uint   `toml:"burst"`
	PerHour        uint   `toml:"per_hour"`
	Block          string `toml:"block"` // a duration: "24h", "30m"
	MaxConnections uint   `toml:"max_connections"`
	IPv4Prefix     int    `toml:"ipv4_prefix"`
	IPv6Prefix     int    `toml:"ipv6_prefix"`
	// SetSize bounds each per-source set; 0: by the host's memory.
	SetSize uint `toml:"set_size"`
	// TrustRelays exempts every relay of the cached consensus, not only
	// the directory authorities.
	TrustRelays bool `toml:"trust_relays"`
	// Trusted are more sources never limited (addresses or prefixes),
	// e.g. the Snowflake bridges.
	Trusted []string `toml:"trusted"`
}

// Settings are the limits with the defaults filled in and the operator's
// trusted sources; the endpoints and the authorities are the host's to add.
func (c Inbound) Settings() (ruleset.Inbound, error) {
	in := ruleset.DefaultInbound()
	set := func(dst *uint, v uint) {
		if v != 0 {
			*dst = v
		}
	}
	set(&in.PerMinute, c.PerMinute)
	set(&in.Burst, c.Burst)
	set(&in.PerHour, c.PerHour)
	set(&in.MaxConns, c.MaxConnections)
	set(&in.SetSize, c.SetSize) // 0: the host sizes it by its memory
	if c.IPv4Prefix != 0 {
		in.V4Prefix = c.IPv4Prefix
	}
	if c.IPv6Prefix != 0 {
		in.V6Prefix = c.IPv6Prefix
	}
	if c.Block != "" {
		d, err := time.ParseDuration(c.Block)
		if err != nil || d < time.Second || d%time.Second != 0 {
			return in, fmt.Errorf("block %q: want a duration of whole seconds such as 24h or 30m", c.Block)
		}
		in.BlockSeconds = uint(d / time.Second)
	}
	for _, t := range c.Trusted {
		p, err := ruleset.ParsePrefixOrAddr(t)
		if err != nil {
			return in, fmt.Errorf("trusted %q: not an address or prefix", t)
		}
		if p.Bits() == 0 {
			return in, fmt.Errorf("trusted %q trusts every source: leave [inbound] off instead", t)
		}
		in.Trusted = append(in.Trusted, p.Masked())
	}
	check := in
	check.Endpoints = []netip.AddrPort{netip.AddrPortFrom(netip.IPv4Unspecified(), 1)} // the host adds the real ones
	return in, check.Validate()
}

// Instance is one [[instance]]: a tor process of its own.
type Instance struct {
	Name          string `toml:"name"`           // used in messages and rule comments
	Torrc         string `toml:"torrc"`          // its torrc
	DefaultsTorrc string `toml:"defaults_torrc"` // its --defaults-torrc; none: no defaults file
}

// Log is the [log] table.
type Log struct {
	// RejectsPerMinute logs rejected packets to the kernel log, at most
	// this many a minute; 0 (the default) logs nothing.
	RejectsPerMinute uint `toml:"rejects_per_minute"`
}

// Allow switches the traffic the host itself needs.
type Allow struct {
	DNS  *bool `toml:"dns"`
	DHCP *bool `toml:"dhcp"`
	NTP  *bool `toml:"ntp"`
	Ping *bool `toml:"ping"`
	// NDP is IPv6 neighbour and router discovery and MLD: off breaks IPv6.
	NDP *bool `toml:"ndp"`
	// Resolvers replaces the resolvers read from resolv.conf.
	Resolvers []string `toml:"resolvers"`
	// ResolverUser is the user of the host's own recursive resolver, which
	// may query any name server (UDP and TCP 53); by default, when
	// resolv.conf points at loopback, the service user of unbound, bind9,
	// knot-resolver or pdns-recursor (unbound, bind, knot-resolver, pdns)
	// when the password database has it. No running program's name counts.
	ResolverUser string `toml:"resolver_user"`
	// Updates lets the user apt downloads as (_apt) reach TCP 80 and 443
	// anywhere, so that security updates keep flowing whatever the exit
	// policy; on unless set to false.
	Updates *bool `toml:"updates"`
	// Extra are the admin's own allowances.
	Extra []Extra `toml:"extra"`
}

// Extra lets the host reach more, e.g. package mirrors for the user _apt.
type Extra struct {
	Name  string   `toml:"name"`  // used in rule comments: relayfw: extra-<name>4
	Proto string   `toml:"proto"` // tcp (default) or udp
	To    []string `toml:"to"`    // addresses, prefixes or host names (resolved by apply and refresh); none: anywhere
	Ports []string `toml:"ports"` // "443" or "8000-8999"; none: any port
	User  string   `toml:"user"`  // only sockets of this user (name or uid)
}

// On reports a switch's value, true when unset.
func On(b *bool) bool { return b == nil || *b }

// SyntaxError is a problem at a line of the file; relayfw exits 65.
type SyntaxError struct {
	Path string
	Line int
	Msg  string
}

func (e *SyntaxError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("config %s:%d: %s", e.Path, e.Line, e.Msg)
	}
	return fmt.Sprintf("config %s: %s", e.Path, e.Msg)
}

// Load reads the file at path. A missing file is an *os.PathError
// wrapping fs.ErrNotExist.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	return Parse(path, data)
}

// Parse decodes relayfw.toml; unknown keys and bad values are errors that
// name the line.
func Parse(path string, data []byte) (Config, error) {
	var c Config
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, decodeError(path, err)
	}
	for _, check := range []func(string, []byte) error{c.checkSettings, c.checkInstances, c.checkExtra} {
		if err := check(path, data); err != nil {
			return Config{}, err
		}
	}
	return c, nil
}

// decodeError is the SyntaxError of a TOML decoding error: an unknown
// key, or a syntax error at its line.
func decodeError(path string, err error) error {
	var strict *toml.StrictMissingError
	var de *toml.DecodeError
	switch {
	case errors.As(err, &strict) && len(strict.Errors) > 0:
		e := strict.Errors[0]
		row, _ := e.Position()
		return &SyntaxError{Path: path, Line: row, Msg: fmt.Sprintf("unknown key %q", joinKey(e.Key()))}
	case errors.As(err, &de):
		row, _ := de.Position()
		return &SyntaxError{Path: path, Line: row, Msg: de.Error()}
	}
	return &SyntaxError{Path: path, Msg: err.Error()}
}

// checkSettings checks the resolvers, the backend, [inbound] and [tor].
func (c Config) checkSettings(path string, data []byte) error {
	for _, r := range c.Allow.Resolvers {
		if _, err := netip.ParseAddr(r); err != nil {
			return &SyntaxError{Path: path, Line: lineOf(data, r), Msg: fmt.Sprintf("allow.resolvers: %q is not an IP address", r)}
		}
	}
	switch c.Backend {
	case "", "auto", "nftables", "iptables":
	default:
		return &SyntaxError{Path: path, Line: lineOf(data, "backend"), Msg: fmt.Sprintf("backend %q: want auto, nftables or iptables", c.Backend)}
	}
	if _, err := c.Inbound.Settings(); err != nil {
		return &SyntaxError{Path: path, Line: lineOf(data, "[inbound]"), Msg: "[inbound] " + strings.TrimPrefix(err.Error(), "inbound: ")}
	}
	if _, err := c.Tor.Timeout(); err != nil {
		return &SyntaxError{Path: path, Line: lineOf(data, "verify_timeout"), Msg: "[tor] " + err.Error()}
	}
	return nil
}

// checkInstances checks the [[instance]] tables: unique valid names, a
// torrc each, and no top-level torrc beside them.
func (c Config) checkInstances(path string, data []byte) error {
	names := map[string]bool{}
	for i, in := range c.Instances {
		line := lineOf(data[max(nthIndex(data, "[[instance]]", i), 0):], "[[instance]]") + bytes.Count(data[:max(nthIndex(data, "[[instance]]", i), 0)], []byte("\n"))
		switch {
		case !validName(in.Name):
			return &SyntaxError{Path: path, Line: line, Msg: fmt.Sprintf("instance[%d]: name %q: want 1-20 letters, digits, - or _", i, in.Name)}
		case names[in.Name]:
			return &SyntaxError{Path: path, Line: line, Msg: fmt.Sprintf("instance[%d]: name %q used twice", i, in.Name)}
		case in.Torrc == "":
			return &SyntaxError{Path: path, Line: line, Msg: fmt.Sprintf("instance[%d] %s: torrc is required", i, in.Name)}
		}
		names[in.Name] = true
	}
	if len(c.Instances) > 0 && c.Torrc != "" {
		return &SyntaxError{Path: path, Line: lineOf(data, "torrc"), Msg: "torrc and [[instance]] together: list every torrc as an [[instance]]"}
	}
	return nil
}

// checkExtra checks the [[allow.extra]] tables, naming the line within
// each.
func (c Config) checkExtra(path string, data []byte) error {
	for i, e := range c.Allow.Extra {
		start := nthIndex(data, "[[allow.extra]]", i)
		bad := func(value, msg string) error {
			line := lineOf(data[max(start, 0):], value)
			if start >= 0 {
				line += bytes.Count(data[:start], []byte("\n"))
			}
			return &SyntaxError{Path: path, Line: line, Msg: fmt.Sprintf("allow.extra[%d]: %s", i, msg)}
		}
		if !validName(e.Name) {
			return bad("[[allow.extra]]", fmt.Sprintf("name %q: want 1-20 letters, digits, - or _", e.Name))
		}
		if e.Proto != "" && e.Proto != "tcp" && e.Proto != "udp" {
			return bad(e.Proto, fmt.Sprintf("proto %q: want tcp or udp", e.Proto))
		}
		for _, p := range e.Ports {
			if _, _, err := ParsePortRange(p); err != nil {
				return bad(p, err.Error())
			}
		}
		for _, to := range e.To {
			if strings.Contains(to, "/") {
				if _, err := netip.ParsePrefix(to); err != nil {
					return bad(to, fmt.Sprintf("to %q: not a prefix", to))
				}
			}
		}
	}
	return nil
}

func validName(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// ParsePortRange reads "443" or "8000-8999".
func ParsePortRange(s string) (first, last uint16, err error) {
	a, b, isRange := strings.Cut(s, "-")
	lo, err1 := strconv.ParseUint(a, 10, 16)
	hi := lo
	var err2 error
	if isRange {
		hi, err2 = strconv.ParseUint(b, 10, 16)
	}
	if err1 != nil || err2 != nil || lo == 0 || hi < lo {
		return 0, 0, fmt.Errorf("port %q: want N or N-M with 1 <= N <= M <= 65535", s)
	}
	return uint16(lo), uint16(hi), nil
}

func joinKey(k toml.Key) string {
	s := ""
	for i, p := range k {
		if i > 0 {
			s += "."
		}
		s += p
	}
	return s
}

// nthIndex is the offset of the n-th (0-based) occurrence of s, or -1.
func nthIndex(data []byte, s string, n int) int {
	off := 0
	for ; n >= 0; n-- {
		i := bytes.Index(data[off:], []byte(s))
		if i < 0 {
			return -1
		}
		if n == 0 {
			return off + i
		}
		off += i + len(s)
	}
	return -1
}

// lineOf is the first line containing s, for values the decoder accepted
// but relayfw refuses.
func lineOf(data []byte, s string) int {
	i := bytes.Index(data, []byte(s))
	if i < 0 {
		return 0
	}
	return bytes.Count(data[:i], []byte("\n")) + 1
}
