// Package torcompat ports the small C routines tor 0.4.9 uses to read and print
// addresses and ports (src/lib/net/inaddr.c, src/lib/net/address.c,
// src/lib/string/parse_int.c). They are stricter or looser than Go's
// net/netip in places that matter for fidelity: tor refuses "01.2.3.4",
// accepts "+80" as a port, prints "::1.2.3.4" for IPv4-compatible IPv6
// addresses and compresses only runs of two or more zero words.
package torcompat

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
)

// IsSpace is C's isspace in the "C" locale.
func IsSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

func IsDigit(c byte) bool { return c >= '0' && c <= '9' }

func IsXDigit(c byte) bool {
	return IsDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// Strtol is C's strtol(s, &end, 10) on an LP64 machine. It returns the
// value, the unconverted rest, whether any digit was converted, and whether
// the value overflowed (errno == ERANGE; the value is then saturated).
func Strtol(s string) (v int64, rest string, converted, overflow bool) {
	i := 0
	for i < len(s) && IsSpace(s[i]) {
		i++
	}
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	start := i
	var acc uint64
	for i < len(s) && IsDigit(s[i]) {
		d := uint64(s[i] - '0')
		if acc > (math.MaxUint64-d)/10 {
			overflow = true
		} else {
			acc = acc*10 + d
		}
		i++
	}
	if i == start {
		return 0, s, false, false
	}
	limit := uint64(math.MaxInt64)
	if neg {
		limit++
	}
	if overflow || acc > limit {
		if neg {
			return math.MinInt64, s[i:], true, true
		}
		return math.MaxInt64, s[i:], true, true
	}
	if neg {
		return -int64(acc), s[i:], true, false
	}
	return int64(acc), s[i:], true, false
}

// ParseLong is tor_parse_long(s, 10, min, max, &ok, &next) with a
// non-NULL next: trailing characters are allowed and returned.
func ParseLong(s string, min, max int64) (v int64, rest string, ok bool) {
	v, rest, converted, overflow := Strtol(s)
	if overflow || !converted || v < min || v > max {
		return 0, rest, false
	}
	return v, rest, true
}

// scanOctet is tor_sscanf's "%3u": one to three decimal digits, no sign.
func scanOctet(s string) (v int, rest string, ok bool) {
	i := 0
	for i < len(s) && i < 3 && IsDigit(s[i]) {
		v = v*10 + int(s[i]-'0')
		i++
	}
	return v, s[i:], i > 0
}

// scanDottedQuad is tor_sscanf(s, "%3u.%3u.%3u.%3u%c", ...) == 4.
func scanDottedQuad(s string) (b [4]int, ok bool) {
	rest := s
	for k := 0; k < 4; k++ {
		if k > 0 {
			if rest == "" || rest[0] != '.' {
				return b, false
			}
			rest = rest[1:]
		}
		var good bool
		b[k], rest, good = scanOctet(rest)
		if !good {
			return b, false
		}
	}
	return b, rest == ""
}

// InetAton is tor_inet_aton: exactly four dotted decimal octets of at
// most three digits, no leading zeros, each at most 255.
func InetAton(s string) (netip.Addr, bool) {
	b, ok := scanDottedQuad(s)
	if !ok {
		return netip.Addr{}, false
	}
	for _, octet := range strings.Split(s, ".") {
		if len(octet) > 1 && octet[0] == '0' {
			return netip.Addr{}, false
		}
	}
	var a [4]byte
	for k := range b {
		if b[k] > 255 {
			return netip.Addr{}, false
		}
		a[k] = byte(b[k])
	}
	return netip.AddrFrom4(a), true
}

// InetPton6 is tor_inet_pton(AF_INET6, ...). Port of tor's tor_inet_pton
// (src/lib/net/inaddr.c), line by line, so that it accepts and refuses
// exactly what tor does; it is longer than a function written for Go
// would be.
func InetPton6(src string) (netip.Addr, bool) {
	n := len(src)
	// Reject a needless trailing ':'.
	if n > 2 && src[n-1] == ':' && src[n-2] != ':' {
		return netip.Addr{}, false
	}
	var words [8]uint16
	for i := range words {
		words[i] = 0xf8f8
	}
	gapPos, setWords := -1, 0
	dot := strings.IndexByte(src, '.')
	eow := n
	if dot == 0 {
		return netip.Addr{}, false
	} else if dot > 0 {
		e := dot - 1
		for e > 0 && IsDigit(src[e]) {
			e--
		}
		if src[e] != ':' {
			return netip.Addr{}, false
		}
		e++
		b, ok := scanDottedQuad(src[e:])
		if !ok || b[0] > 255 || b[1] > 255 || b[2] > 255 || b[3] > 255 {
			return netip.Addr{}, false
		}
		words[6] = uint16(b[0]<<8 | b[1])
		words[7] = uint16(b[2]<<8 | b[3])
		setWords += 2
		eow = e
	}
	i, p := 0, 0
	for p < eow {
		if i > 7 {
			return netip.Addr{}, false
		}
		switch {
		case IsXDigit(src[p]):
			// strtol(src, &next, 16): hex digits, "0x" prefix allowed by C.
			q := p
			if q+1 < n && src[q] == '0' && (src[q+1] == 'x' || src[q+1] == 'X') && q+2 < n && IsXDigit(src[q+2]) {
				q += 2
			}
			var r uint64
			for q < n && IsXDigit(src[q]) {
				r = r*16 + uint64(HexVal(src[q]))
				if r > 1<<40 {
					r = 1 << 40
				}
				q++
			}
			next := q
			length := next - p
			if next == n {
				length = eow - p
			}
			if length > 4 {
				return netip.Addr{}, false
			}
			if length > 1 && !IsXDigit(src[p+1]) {
				return netip.Addr{}, false // 0x is not valid
			}
			if r >= 65536 {
				return netip.Addr{}, false
			}
			words[i] = uint16(r)
			i++
			setWords++
			p = next
			if p < n && src[p] != ':' && p != eow {
				return netip.Addr{}, false
			}
			if p == n && p != eow {
				return netip.Addr{}, false
			}
			p++
		case src[p] == ':' && i > 0 && gapPos == -1:
			gapPos = i
			p++
		case src[p] == ':' && i == 0 && p+1 < eow && src[p+1] == ':' && gapPos == -1:
			gapPos = i
			p += 2
		default:
			return netip.Addr{}, false
		}
	}
	if setWords > 8 || (setWords == 8 && gapPos != -1) || (setWords < 8 && gapPos == -1) {
		return netip.Addr{}, false
	}
	if gapPos >= 0 {
		nToMove := setWords - gapPos
		if dot >= 0 {
			nToMove -= 2
		}
		gapLen := 8 - setWords
		if nToMove < 0 {
			return netip.Addr{}, false
		}
		copy(words[gapPos+gapLen:gapPos+gapLen+nToMove], words[gapPos:gapPos+nToMove])
		for k := gapPos; k < gapPos+gapLen; k++ {
			words[k] = 0
		}
	}
	var b [16]byte
	for k, w := range words {
		b[2*k] = byte(w >> 8)
		b[2*k+1] = byte(w)
	}
	return netip.AddrFrom16(b), true
}

func HexVal(c byte) int {
	switch {
	case IsDigit(c):
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	default:
		return int(c-'A') + 10
	}
}

// AddrString is tor_addr_to_str(..., decorate=1): dotted quad for IPv4,
// tor_inet_ntop's format in brackets for IPv6.
func AddrString(a netip.Addr) string {
	if a.Is4() {
		return a.String()
	}
	return "[" + InetNtop6(a.As16()) + "]"
}

// InetNtop6 is tor_inet_ntop(AF_INET6, ...).
func InetNtop6(b [16]byte) string {
	var w [8]uint16
	for i := range w {
		w[i] = uint16(b[2*i])<<8 | uint16(b[2*i+1])
	}
	if w[0] == 0 && w[1] == 0 && w[2] == 0 && w[3] == 0 && w[4] == 0 &&
		((w[5] == 0 && w[6] != 0 && w[7] != 0) || w[5] == 0xffff) {
		if w[5] == 0 {
			return fmt.Sprintf("::%d.%d.%d.%d", b[12], b[13], b[14], b[15])
		}
		return fmt.Sprintf("::%x:%d.%d.%d.%d", w[5], b[12], b[13], b[14], b[15])
	}
	longestPos, longestLen := -1, 0
	for i := 0; i < 8; {
		if w[i] != 0 {
			i++
			continue
		}
		pos, l := i, 0
		for i < 8 && w[i] == 0 {
			i++
			l++
		}
		if l > longestLen {
			longestPos, longestLen = pos, l
		}
	}
	if longestLen <= 1 {
		longestPos = -1
	}
	var sb strings.Builder
	for i := 0; i < 8; i++ {
		if w[i] == 0 && longestPos == i {
			if i == 0 {
				sb.WriteByte(':')
			}
			sb.WriteByte(':')
			for i < 8 && w[i] == 0 {
				i++
			}
			i--
			continue
		}
		fmt.Fprintf(&sb, "%x", w[i])
		if i != 7 {
			sb.WriteByte(':')
		}
	}
	return sb.String()
}

// AddrMaskBits is addr_mask_get_bits: the prefix length of a dotted
// netmask, or -1 when the mask is not a prefix.
func AddrMaskBits(mask uint32) int {
	for bits := 0; bits <= 32; bits++ {
		if mask == ^uint32(0)<<(32-bits) || (bits == 0 && mask == 0) {
			return bits
		}
	}
	return -1
}

// AddrParse is tor_addr_parse: an IPv4 address, or an IPv6 address
// with or without brackets.
func AddrParse(s string) (netip.Addr, bool) {
	if len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' {
		return InetPton6(s[1 : len(s)-1])
	}
	if a, ok := InetPton6(s); ok {
		return a, true
	}
	return InetAton(s)
}

// ParseLongAll is tor_parse_long with a NULL next pointer: the whole
// string must be the number.
func ParseLongAll(s string, min, max int64) (int64, bool) {
	v, rest, ok := ParseLong(s, min, max)
	return v, ok && rest == ""
}

// AddrPortSplit is tor_addr_port_split: "host[:port]", where a bare
// IPv6 address has no port; a port present must be 1..65535.
func AddrPortSplit(s string) (host string, port uint16, ok bool) {
	if a, good := AddrParse(s); good && a.Is6() {
		return s, 0, true
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return s, 0, true
	}
	p, good := ParseLongAll(s[i+1:], 1, 65535)
	if !good {
		return "", 0, false
	}
	return s[:i], uint16(p), true
}

// AddrPortParse is tor_addr_port_parse with no default port: an
// address and a port, an IPv6 address in brackets.
func AddrPortParse(s string) (netip.AddrPort, bool) {
	host, port, ok := AddrPortSplit(s)
	if !ok || port == 0 {
		return netip.AddrPort{}, false
	}
	a, ok := AddrParse(host)
	if !ok {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a, port), true
}
