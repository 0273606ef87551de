// Package config reads relayfw's own settings, /etc/relayfw/relayfw.toml.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/pelletier/go-toml/v2"
)

// DefaultPath is where relayfw looks for its settings when --config is
// not given; the file is optional there.
const DefaultPath = "/etc/relayfw/relayfw.toml"

// Config is relayfw.toml.
type Config struct {
	// Torrc is the torrc to read when --torrc is not given.
	Torrc string `toml:"torrc"`
	// DataDirectory is tor's, where relayfw reads the cached consensus;
	// default: the torrc's DataDirectory, else /var/lib/tor (Debian).
	DataDirectory string `toml:"data_directory"`
	// Allow are the host allowances; each is on unless set to false.
	Allow Allow `toml:"allow"`
}

// Allow switches the traffic the host itself needs.
type Allow struct {
	DNS  *bool `toml:"dns"`
	DHCP *bool `toml:"dhcp"`
	NTP  *bool `toml:"ntp"`
	Ping *bool `toml:"ping"`
	// Resolvers replaces the resolvers read from resolv.conf.
	Resolvers []string `toml:"resolvers"`
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
		var strict *toml.StrictMissingError
		var de *toml.DecodeError
		switch {
		case errors.As(err, &strict) && len(strict.Errors) > 0:
			e := strict.Errors[0]
			row, _ := e.Position()
			return Config{}, &SyntaxError{Path: path, Line: row, Msg: fmt.Sprintf("unknown key %q", joinKey(e.Key()))}
		case errors.As(err, &de):
			row, _ := de.Position()
			return Config{}, &SyntaxError{Path: path, Line: row, Msg: de.Error()}
		default:
			return Config{}, &SyntaxError{Path: path, Msg: err.Error()}
		}
	}
	for _, r := range c.Allow.Resolvers {
		if _, err := netip.ParseAddr(r); err != nil {
			return Config{}, &SyntaxError{Path: path, Line: lineOf(data, r), Msg: fmt.Sprintf("allow.resolvers: %q is not an IP address", r)}
		}
	}
	return c, nil
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

// lineOf is the first line containing s, for values the decoder accepted
// but relayfw refuses.
func lineOf(data []byte, s string) int {
	i := bytes.Index(data, []byte(s))
	if i < 0 {
		return 0
	}
	return bytes.Count(data[:i], []byte("\n")) + 1
}
