package torconf

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/relayfw/relayfw/internal/torcompat"
)

// DirServer is one DirAuthority or FallbackDir line: the addresses a relay
// contacts it on.
type DirServer struct {
	Addr    netip.Addr     // IPv4 for authorities; fallbacks may use IPv6
	DirPort uint16         // 0 when the line has none (fallbacks)
	ORPort  uint16         // 0 when the line has none or an invalid one
	IPv6    netip.AddrPort // the ipv6= flag, when present
}

// ParseDirAuthority is tor's parse_dir_authority_line with
// validate_only: the errors are the lines tor refuses to start with, the
// warnings what tor only logs.
func ParseDirAuthority(value string) (DirServer, []string, error) {
	var ds DirServer
	var warns []string
	items := strings.Fields(value)
	if len(items) < 1 {
		return ds, nil, errors.New("no arguments on DirAuthority line")
	}
	if isLegalNickname(items[0]) {
		items = items[1:]
	}
	var extraDirports []string
	for len(items) > 0 {
		flag := items[0]
		if torcompat.IsDigit(flag[0]) {
			break
		}
		lower := strings.ToLower(flag)
		switch {
		case lower == "hs" || lower == "no-hs":
			warns = append(warns, "the DirAuthority options 'hs' and 'no-hs' are obsolete")
		case lower == "bridge", lower == "no-v2":
		case strings.HasPrefix(lower, "orport="):
			if p, ok := torcompat.ParseLongAll(flag[len("orport="):], 1, 65535); ok {
				ds.ORPort = uint16(p)
			} else {
				warns = append(warns, fmt.Sprintf("invalid orport %q on DirAuthority line", flag[len("orport="):]))
			}
		case strings.HasPrefix(flag, "weight="): // tor: case-sensitive
		case strings.HasPrefix(lower, "v3ident="):
			id := flag[len("v3ident="):]
			if _, err := hex.DecodeString(id); len(id) != 40 || err != nil {
				warns = append(warns, fmt.Sprintf("bad v3 identity digest %q on DirAuthority line", flag))
			}
		case strings.HasPrefix(lower, "ipv6="):
			if err := ds.ipv6Flag(flag, "DirAuthority", &warns); err != nil {
				return ds, warns, err
			}
		case strings.HasPrefix(lower, "upload="), strings.HasPrefix(lower, "download="), strings.HasPrefix(lower, "vote="):
			extraDirports = append(extraDirports, flag)
		default:
			warns = append(warns, fmt.Sprintf("unrecognized flag %q on DirAuthority line", flag))
		}
		items = items[1:]
	}
	if len(items) < 2 {
		return ds, warns, errors.New("too few arguments to DirAuthority line")
	}
	host, port, ok := torcompat.AddrPortSplit(items[0])
	if !ok {
		return ds, warns, fmt.Errorf("error parsing DirAuthority address %q", items[0])
	}
	a, ok := torcompat.InetAton(host)
	if !ok {
		return ds, warns, fmt.Errorf("error parsing DirAuthority address %q (invalid IPv4 address)", host)
	}
	if port == 0 {
		return ds, warns, fmt.Errorf("missing port in DirAuthority address %q", items[0])
	}
	fp := strings.Join(items[1:], "")
	if len(fp) != 40 {
		return ds, warns, fmt.Errorf("key digest %q for DirAuthority is wrong length %d", fp, len(fp))
	}
	if _, err := hex.DecodeString(fp); err != nil {
		return ds, warns, errors.New("unable to decode DirAuthority key digest")
	}
	for _, d := range extraDirports {
		if err := parseDirauthDirport(d); err != nil {
			return ds, warns, err
		}
	}
	ds.Addr, ds.DirPort = a, port
	return ds, warns, nil
}

// parseDirauthDirport is parse_dirauth_dirport: "upload=", "download="
// or "vote=" followed by an address:port.
func parseDirauthDirport(flag string) error {
	_, v, _ := strings.Cut(flag, "=")
	if ap, ok := torcompat.AddrPortParse(v); !ok || ap.Port() == 0 {
		return fmt.Errorf("unable to parse %q on DirAuthority line", flag)
	}
	return nil
}

// ParseFallbackDir is tor's parse_dir_fallback_line with validate_only.
func ParseFallbackDir(value string) (DirServer, []string, error) {
	var ds DirServer
	var warns []string
	var positional []string
	orport := -1
	haveID := false
	for _, cp := range strings.Fields(value) {
		if !strings.Contains(cp, "=") {
			positional = append(positional, cp)
			continue
		}
		ok := true
		switch {
		case strings.HasPrefix(cp, "orport="):
			var p int64
			p, ok = torcompat.ParseLongAll(cp[len("orport="):], 1, 65535)
			orport = int(p)
		case strings.HasPrefix(cp, "id="):
			id, err := hex.DecodeString(cp[len("id="):])
			ok = err == nil && len(id) == 20
			haveID = ok && strings.Trim(cp[len("id="):], "0") != ""
		case strings.HasPrefix(strings.ToLower(cp), "ipv6="):
			if err := ds.ipv6Flag(cp, "FallbackDir", &warns); err != nil {
				return ds, warns, err
			}
		}
		if !ok {
			return ds, warns, fmt.Errorf("bad FallbackDir option %q", cp)
		}
	}
	if len(positional) != 1 {
		return ds, warns, fmt.Errorf("couldn't parse FallbackDir line %q", value)
	}
	if !haveID {
		return ds, warns, errors.New("missing identity on FallbackDir line")
	}
	if orport <= 0 {
		return ds, warns, errors.New("missing orport on FallbackDir line")
	}
	host, port, ok := torcompat.AddrPortSplit(positional[0])
	a, ok2 := torcompat.AddrParse(host)
	if !ok || !ok2 {
		return ds, warns, fmt.Errorf("couldn't parse address:port %q on FallbackDir line", positional[0])
	}
	ds.Addr, ds.DirPort, ds.ORPort = a, port, uint16(orport)
	return ds, warns, nil
}

// ipv6Flag reads an "ipv6=[addr]:port" flag of a kind of line, as both
// of tor's parsers do: a second one is a warning, a bad one an error.
func (ds *DirServer) ipv6Flag(flag, kind string, warns *[]string) error {
	if ds.IPv6.IsValid() {
		*warns = append(*warns, fmt.Sprintf("redundant ipv6 addr/port on %s line", kind))
		return nil
	}
	ap, ok := torcompat.AddrPortParse(flag[len("ipv6="):])
	if !ok || !ap.Addr().Is6() {
		return fmt.Errorf("bad ipv6 addr/port %q on %s line", flag, kind)
	}
	ds.IPv6 = ap
	return nil
}

// isLegalNickname is tor's is_legal_nickname: 1 to 19 ASCII letters and
// digits.
func isLegalNickname(s string) bool {
	if len(s) < 1 || len(s) > 19 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !torcompat.IsDigit(c) && !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}
