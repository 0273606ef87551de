package ruleset

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/relayfw/relayfw/internal/endpoint"
)

// Inbound is the opt-in protection of the relays' ORPorts against
// connection floods. It looks only at new TCP connections to Endpoints;
// everything else reaching the host is left to the host's own input
// policy. Per source (an IPv4 address, an IPv6 /64 by default):
//
//  1. a trusted source (directory authorities, optionally the relays of
//     the consensus, the operator's own list) is never limited;
//  2. a blocked source's new connections are dropped until its block
//     expires;
//  3. a source that opens more than PerMinute (burst Burst) or PerHour new
//     connections is blocked for BlockSeconds, and that connection
//     dropped;
//  4. a source that already holds MaxConns connections gets a TCP reset
//     for the next one (relays sharing an address fail fast instead of
//     waiting for a timeout).
//
// Established connections are never touched: only the first packet of a
// connection reaches these rules.
type Inbound struct {
	// Endpoints are the protected TCP endpoints, where tor listens: every
	// relay instance's ORPorts, and their DirPorts when asked for. An
	// unspecified address (0.0.0.0, ::) stands for every address of its
	// family, as tor writes it. Sorted, without duplicates, none inside
	// another (ListenEndpoints, Compile).
	Endpoints []netip.AddrPort `json:"endpoints"`
	// V4Prefix and V6Prefix are the source masks: a source is an address
	// (32) or a network (IPv6 /64: one host usually holds a whole /64).
	V4Prefix int `json:"v4_prefix"`
	V6Prefix int `json:"v6_prefix"`
	// PerMinute and Burst: new connections a source may open a minute,
	// with a bucket of Burst; PerHour: a minute's budget does not add up
	// to more than this an hour.
	PerMinute uint `json:"per_minute"`
	Burst     uint `json:"burst"`
	PerHour   uint `json:"per_hour"`
	// BlockSeconds is how long a source that broke a rate stays blocked.
	BlockSeconds uint `json:"block_seconds"`
	// MaxConns is how many connections one source may hold at once.
	MaxConns uint `json:"max_conns"`
	// SetSize bounds each per-source set (meters, connection counts, the
	// block list): when full, new sources are not metered and not
	// blocked, never refused for it.
	SetSize uint `json:"set_size"`
	// Trusted are sources never limited, sorted and merged.
	Trusted []netip.Prefix `json:"trusted"`
}

// DefaultInbound are the limits of toralf/torutils' ipv4-rules.sh and
// ipv6-rules.sh (2026-08), the scripts the Tor Project's relay guide
// points operators to: 8 new connections a minute (burst 8) and 24 an
// hour per source, blocked for a day when exceeded, at most 8 connections
// at once (8 relays may share an address); IPv4 /32 and IPv6 /64 sources;
// sets of 256Ki entries (the host package scales them with its memory).
func DefaultInbound() Inbound {
	return Inbound{V4Prefix: 32, V6Prefix: 64, PerMinute: 8, Burst: 8, PerHour: 24,
		BlockSeconds: 86400, MaxConns: 8, SetSize: 1 << 18}
}

// InboundPortsSet names the ports protected on every address of both
// families, where a backend keeps them in one set for both.
const (
	InboundPortsSet = "inbound_ports"
)

// InboundSetName names an inbound set of a family: kind is "ports" (ports
// protected on every address of the family), "endpoints" (address-bound
// ports), "trust", "block", "minute", "hour" or "conns".
func InboundSetName(kind string, fam Family) string {
	return "inbound_" + kind + suffix(fam)
}

// Inbound rule names, per family (InboundRuleName adds 4 or 6): the
// counters of status and metrics, one per cause.
const (
	InboundRuleJump    = "inbound"         // new connections to the ORPorts
	InboundRuleTrusted = "inbound-trusted" // from a trusted source
	InboundRuleBlocked = "inbound-blocked" // dropped: the source is blocked
	InboundRuleMinute  = "inbound-minute"  // dropped and blocked: over the per-minute rate
	InboundRuleHour    = "inbound-hour"    // dropped and blocked: over the per-hour rate
	InboundRuleConns   = "inbound-conns"   // reset: over the concurrent limit
	// InboundRuleLimited (iptables only) drops the connection a meter
	// has just blocked the source for (the meter's SET is no verdict);
	// the meter's own counter counts it as its cause.
	InboundRuleLimited = "inbound-limited"
)

// InboundRuleName names an inbound rule of a family; base is one of the
// InboundRule names but InboundRuleJump (one rule for both families).
func InboundRuleName(base string, fam Family) string { return base + suffix(fam) }

// InboundCauses are the rule names whose counters count dropped or
// refused connections, as metric label values.
var InboundCauses = []string{"blocked", "minute", "hour", "conns"}

// Validate checks the settings; endpoints must not be empty.
func (in Inbound) Validate() error {
	if len(in.Endpoints) == 0 {
		return fmt.Errorf("inbound: no ORPort to protect")
	}
	for i, e := range in.Endpoints {
		a := e.Addr()
		switch {
		case !a.IsValid() || a.Zone() != "" || a.Is4In6():
			return fmt.Errorf("inbound: endpoint %s: not a plain IPv4 or IPv6 address", e)
		case e.Port() == 0:
			return fmt.Errorf("inbound: endpoint %s: port 0", e)
		case i > 0 && in.Endpoints[i-1].Compare(e) >= 0:
			return fmt.Errorf("inbound: endpoints not sorted or not unique at %s", e)
		case !a.IsUnspecified() && slices.Contains(in.Endpoints, netip.AddrPortFrom(anyAddr(FamilyOf(a)), e.Port())):
			return fmt.Errorf("inbound: endpoint %s is inside %s", e, netip.AddrPortFrom(anyAddr(FamilyOf(a)), e.Port()))
		}
	}
	switch {
	case in.V4Prefix < 1 || in.V4Prefix > 32:
		return fmt.Errorf("inbound: ipv4_prefix %d is not 1-32", in.V4Prefix)
	case in.V6Prefix < 1 || in.V6Prefix > 128:
		return fmt.Errorf("inbound: ipv6_prefix %d is not 1-128", in.V6Prefix)
	case in.PerMinute == 0 || in.Burst == 0 || in.PerHour == 0:
		return fmt.Errorf("inbound: per_minute, burst and per_hour must be at least 1")
	case in.PerMinute > 1<<20 || in.PerHour > 1<<26 || in.Burst > 1<<20:
		return fmt.Errorf("inbound: rates above a million a minute are no limit")
	case in.BlockSeconds == 0 || in.BlockSeconds > 2147483:
		return fmt.Errorf("inbound: block_seconds %d is not 1-2147483", in.BlockSeconds)
	case in.MaxConns == 0 || in.MaxConns > 1<<16:
		return fmt.Errorf("inbound: max_connections %d is not 1-65536", in.MaxConns)
	case in.SetSize < 1024 || in.SetSize > 1<<24:
		return fmt.Errorf("inbound: set_size %d is not 1024-16777216", in.SetSize)
	}
	for _, p := range in.Trusted {
		if !p.IsValid() || p != p.Masked() {
			return fmt.Errorf("inbound: trusted %s is not a network address", p)
		}
	}
	return nil
}

// Prefix is a family's source mask length.
func (in Inbound) Prefix(fam Family) int {
	if fam == IPv6 {
		return in.V6Prefix
	}
	return in.V4Prefix
}

// Source is the source network a packet from a is metered and blocked as.
func (in Inbound) Source(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	p, _ := a.Prefix(in.Prefix(FamilyOf(a)))
	return p
}

// TrustedOf are the trusted prefixes of a family.
func (in Inbound) TrustedOf(fam Family) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range in.Trusted {
		if p.Addr().Is4() == (fam == IPv4) {
			out = append(out, p)
		}
	}
	return out
}

// Trusts reports whether a source address is never limited.
func (in Inbound) Trusts(a netip.Addr) bool {
	return prefixesContain(in.Trusted, a.Unmap())
}

// Protects reports whether new connections to dst are limited.
func (in Inbound) Protects(dst netip.AddrPort) bool {
	a := dst.Addr().Unmap()
	return slices.Contains(in.Endpoints, netip.AddrPortFrom(a, dst.Port())) ||
		slices.Contains(in.Endpoints, netip.AddrPortFrom(anyAddr(FamilyOf(a)), dst.Port()))
}

// PortsOn are the ports protected on every address of a family, sorted.
func (in Inbound) PortsOn(fam Family) []uint16 {
	var out []uint16
	for _, e := range in.Endpoints {
		if e.Addr() == anyAddr(fam) {
			out = append(out, e.Port())
		}
	}
	return out
}

// BoundEndpoints are the address-bound endpoints of a family, sorted.
func (in Inbound) BoundEndpoints(fam Family) []netip.AddrPort {
	var out []netip.AddrPort
	for _, e := range in.Endpoints {
		if !e.Addr().IsUnspecified() && FamilyOf(e.Addr()) == fam {
			out = append(out, e)
		}
	}
	return out
}

// ProtectedOn says where port is protected in a family: on every address
// (all), or on these addresses only.
func (in Inbound) ProtectedOn(fam Family, port uint16) (all bool, addrs []netip.Addr) {
	for _, e := range in.Endpoints {
		switch {
		case e.Port() != port || FamilyOf(e.Addr()) != fam:
		case e.Addr().IsUnspecified():
			all = true
		default:
			addrs = append(addrs, e.Addr())
		}
	}
	return all, addrs
}

// EndpointsText is the endpoints in an operator's words: "port
// 443,9001" for ports on every address of both families, "port 9030
// (IPv4)" for one family's, then the address-bound ones
// ("192.0.2.11:443").
func (in Inbound) EndpointsText() string {
	v4, v6 := in.PortsOn(IPv4), in.PortsOn(IPv6)
	var both, only4, only6 []string
	for _, p := range v4 {
		if slices.Contains(v6, p) {
			both = append(both, fmt.Sprint(p))
		} else {
			only4 = append(only4, fmt.Sprint(p))
		}
	}
	for _, p := range v6 {
		if !slices.Contains(v4, p) {
			only6 = append(only6, fmt.Sprint(p))
		}
	}
	var parts []string
	if len(both) > 0 {
		parts = append(parts, "port "+strings.Join(both, ","))
	}
	if len(only4) > 0 {
		parts = append(parts, "port "+strings.Join(only4, ",")+" (IPv4)")
	}
	if len(only6) > 0 {
		parts = append(parts, "port "+strings.Join(only6, ",")+" (IPv6)")
	}
	for _, fam := range []Family{IPv4, IPv6} {
		for _, e := range in.BoundEndpoints(fam) {
			parts = append(parts, e.String())
		}
	}
	return strings.Join(parts, ", ")
}

// anyAddr is a family's unspecified address: every address of it.
func anyAddr(fam Family) netip.Addr {
	if fam == IPv6 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

// NormalizeEndpoints sorts endpoints, unmaps IPv4-mapped addresses and
// drops duplicates and address-bound endpoints that a port on every
// address of the family covers.
func NormalizeEndpoints(eps []netip.AddrPort) []netip.AddrPort { return endpoint.Normalize(eps) }

// UnmarshalJSON reads the inbound protection, and the "ports" of
// Ruleset version 2 (a ruleset an older relayfw saved, for a rollback):
// those ports were protected on every address of both families.
func (in *Inbound) UnmarshalJSON(data []byte) error {
	type plain Inbound
	var v struct {
		plain
		Ports []uint16 `json:"ports"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	*in = Inbound(v.plain)
	if len(v.Ports) > 0 {
		for _, p := range v.Ports {
			in.Endpoints = append(in.Endpoints, netip.AddrPortFrom(netip.IPv4Unspecified(), p), netip.AddrPortFrom(netip.IPv6Unspecified(), p))
		}
		in.Endpoints = NormalizeEndpoints(in.Endpoints)
	}
	return nil
}

// MinuteMeterSeconds and HourMeterSeconds are how long a source's meter
// outlives its last new connection: once its bucket is full again, a
// meter that is forgotten and made anew says the same.
func (in Inbound) MinuteMeterSeconds() uint { return ceilDiv(60*in.Burst, in.PerMinute) }

// HourMeterSeconds is MinuteMeterSeconds for the hourly rate, whose
// bucket holds an hour's worth.
func (in Inbound) HourMeterSeconds() uint { return 3600 }

func ceilDiv(a, b uint) uint { return (a + b - 1) / b }

// Summary is the protection in one line, for explain and status.
func (in Inbound) Summary() string {
	return fmt.Sprintf("new TCP connections to %s: per source (IPv4 /%d, IPv6 /%d) at most %d a minute (burst %d) and %d an hour, else blocked for %s; at most %d at once, else reset; %d trusted networks exempt",
		in.EndpointsText(), in.V4Prefix, in.V6Prefix, in.PerMinute, in.Burst, in.PerHour,
		in.BlockText(), in.MaxConns, len(in.Trusted))
}

// BlockText is the block's length as "24h", "30m" or "90s".
func (in Inbound) BlockText() string { return durationText(in.BlockSeconds) }

// durationText is a number of seconds as "24h", "30m", "90s".
func durationText(s uint) string {
	switch {
	case s%3600 == 0:
		return fmt.Sprintf("%dh", s/3600)
	case s%60 == 0:
		return fmt.Sprintf("%dm", s/60)
	}
	return fmt.Sprintf("%ds", s)
}

// ParsePrefixOrAddr reads a prefix ("192.0.2.0/24"), or an address as its
// own /32 or /128 (an IPv4-mapped address as IPv4): how operators name
// sources, and how ipset lists hash:net entries.
func ParsePrefixOrAddr(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or prefix", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// MergePrefixes sorts prefixes, masks them and drops those inside
// another.
func MergePrefixes(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96) // an IPv4 network
		}
		if p.IsValid() {
			out = append(out, p.Masked())
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	merged := out[:0]
	for _, p := range out {
		if n := len(merged); n > 0 && merged[n-1].Contains(p.Addr()) && merged[n-1].Bits() <= p.Bits() {
			continue
		}
		merged = append(merged, p)
	}
	return merged
}

// AddrRange is the addresses First to Last.
type AddrRange struct{ First, Last netip.Addr }

// Ranges joins prefixes (of one family) into the fewest ranges: how an
// interval set holds them, whatever prefixes they were given as.
func Ranges(ps []netip.Prefix) []AddrRange {
	var out []AddrRange
	for _, p := range MergePrefixes(ps) {
		first, last := p.Addr(), LastAddr(p)
		if n := len(out); n > 0 && out[n-1].First.Is4() == first.Is4() && (out[n-1].Last.Next() == first || out[n-1].Last.Compare(first) >= 0) {
			if last.Compare(out[n-1].Last) > 0 {
				out[n-1].Last = last
			}
			continue
		}
		out = append(out, AddrRange{first, last})
	}
	return out
}

// Prefixes are the fewest prefixes that cover exactly the range.
func (r AddrRange) Prefixes() []netip.Prefix {
	var out []netip.Prefix
	first := r.First
	for first.IsValid() && first.Compare(r.Last) <= 0 {
		// The largest prefix that starts at first and ends by r.Last.
		bits := first.BitLen()
		for bits > 0 {
			p := netip.PrefixFrom(first, bits-1)
			if p.Masked().Addr() != first || LastAddr(p).Compare(r.Last) > 0 {
				break
			}
			bits--
		}
		p := netip.PrefixFrom(first, bits)
		out = append(out, p)
		next := LastAddr(p).Next()
		if !next.IsValid() || next.Compare(first) <= 0 {
			break // the family's last address
		}
		first = next
	}
	return out
}

// LastAddr is the last address of a prefix.
func LastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// WithTrustedRanges is the protection with a family's trusted sources
// replaced by ranges (as a kernel set holds them).
func (in Inbound) WithTrustedRanges(fam Family, ranges []AddrRange) Inbound {
	var trusted []netip.Prefix
	for _, p := range in.Trusted {
		if p.Addr().Is4() != (fam == IPv4) {
			trusted = append(trusted, p)
		}
	}
	for _, r := range ranges {
		trusted = append(trusted, r.Prefixes()...)
	}
	in.Trusted = MergePrefixes(trusted)
	return in
}
