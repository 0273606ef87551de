package exitpolicy

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/relayfw/relayfw/internal/digits"
	"github.com/relayfw/relayfw/internal/torcompat"
	"github.com/relayfw/relayfw/torconf"
)

// DescriptorLimit is tor's MAX_DESCRIPTOR_UPLOAD_SIZE: a directory
// authority refuses a server descriptor longer than this many bytes
// (dirserv_add_descriptor: "Router descriptor was too large."), so the
// relay is not published.
const DescriptorLimit = 20000

// Sizes of the parts of a tor 0.4.9.11 server descriptor that do not
// depend on the torrc (router_dump_router_to_string), each with its
// newlines, measured on descriptors tor built: the PEM blocks of fixed-size
// keys, certificates and signatures, and lines of fixed length. Lines
// with numbers tor chooses at run time are counted at their longest:
// uptime with 8 digits (three years), the three bandwidth figures with 10
// (tor's maximum, 2^31-1), and an overload-general line, which tor writes
// only after an overload in the last 72 hours. So the estimate is what the
// descriptor can reach, and tor's real one is up to about 60 bytes shorter.
const (
	descIdentityEd25519 = 264 // identity-ed25519 and its ED25519 CERT block
	descMasterKey       = 63  // master-key-ed25519 KEY
	descPlatform        = 31  // platform Tor 0.4.9.11 on Linux
	descProto           = 143 // proto Conflux=1 Cons=1-2 ... Relay=2-6
	descPublished       = 30  // published YYYY-MM-DD HH:MM:SS
	descFingerprint     = 62  // fingerprint in ten groups of four
	descUptime          = 16  // uptime NNNNNNNN
	descBandwidth       = 43  // bandwidth RATE BURST OBSERVED
	descExtraInfo       = 103 // extra-info-digest SHA1 SHA256
	descOnionKey        = 261 // onion-key and its RSA PUBLIC KEY block
	descSigningKey      = 263 // signing-key and its RSA PUBLIC KEY block
	descOnionCrosscert  = 245 // onion-key-crosscert and its CROSSCERT block
	descNtorCrosscert   = 226 // ntor-onion-key-crosscert and its ED25519 CERT block
	descHSDir           = 19  // hidden-service-dir
	descNtorKey         = 59  // ntor-onion-key KEY
	descTunnelledDir    = 21  // tunnelled-dir-server
	descOverload        = 39  // overload-general 1 YYYY-MM-DD HH:MM:SS
	descSigEd25519      = 106 // router-sig-ed25519 SIG
	descSignature       = 242 // router-signature and its SIGNATURE block
	descFamilyCert      = 257 // family-cert and its FAMILY CERT block, per FamilyId

	descFixed = descIdentityEd25519 + descMasterKey + descPlatform + descProto + descPublished +
		descFingerprint + descUptime + descBandwidth + descExtraInfo + descOnionKey + descSigningKey +
		descOnionCrosscert + descNtorCrosscert + descHSDir + descNtorKey + descTunnelledDir +
		descOverload + descSigEd25519 + descSignature
)

// Descriptor is the estimated size of the server descriptor tor would
// upload for an instance, as the authorities count it (from "router " to
// the end of the signature), and what merging the configured entries would
// save when it is over DescriptorLimit.
type Descriptor struct {
	Size int
	// Policy is the exit policy's share: tor writes every IPv4 entry of
	// the effective policy as a line ("reject *:*" alone when the relay
	// exits nowhere). IPv6 entries take no line of their own; IPv6 is the
	// ipv6-policy port summary (IPv6Summary, IPv6Exit only).
	PolicyBytes, PolicyEntries int
	IPv6SummaryBytes           int
	// Merge is filled in only when Size is over the limit.
	Merge *Merge
}

// Over reports whether the authorities would refuse the descriptor.
func (d Descriptor) Over() bool { return d.Size > DescriptorLimit }

// Merge is what rewriting the configured ExitPolicy entries without
// changing what they mean would save: within each run of consecutive
// IPv4 entries with the same action (whose order does not matter, since
// whichever matches first decides the same), entries with the same ports
// whose prefixes together make a larger prefix become that prefix, and
// entries with the same prefix whose port ranges touch become one.
type Merge struct {
	// Entries and Bytes saved in the descriptor, after tor's own
	// redundancy removal of the merged policy; Size is the descriptor's
	// estimated size then.
	Entries, Bytes, Size int
	// Example is one merge: the entries From become To.
	Example struct {
		From []Entry
		To   Entry
	}
}

// Descriptor estimates the server descriptor tor 0.4.9 would build for
// options o with this effective policy (router_dump_router_to_string):
// the parts that do not depend on the torrc, the router line (Nickname,
// address, ORPort), or-address for an advertised IPv6 ORPort, family
// (MyFamily, with the relay itself, which tor adds), one family-cert per
// FamilyId, contact (ContactInfo), the IPv4 exit policy lines exactly as
// tor writes them, and the ipv6-policy line with IPv6Exit. Not counted:
// "hibernating 1" (AccountingMax, while hibernating) and
// caches-extra-info (DownloadExtraInfo).
func (eff Effective) Descriptor(o torconf.Options) Descriptor {
	var d Descriptor
	d.PolicyBytes, d.PolicyEntries = policyLines(eff.Policy)
	if o.IPv6Exit {
		if s := eff.Policy.Summarize(true).Text; s != RejectAllSummary {
			d.IPv6SummaryBytes = len("ipv6-policy ") + len(s) + 1
		}
	}
	d.Size = descFixed + eff.routerLine(o) + eff.orAddressLine(o) + familyLine(o) + descFamilyCert*o.FamilyIDs +
		d.PolicyBytes + d.IPv6SummaryBytes
	if o.ContactInfo != "" {
		d.Size += len("contact ") + len(o.ContactInfo) + 1
	}
	if d.Over() && eff.exit {
		d.Merge = eff.merge(d)
	}
	return d
}

// policyLines is the size of the exit policy as the descriptor has it
// (router_dump_exit_policy_to_string(router, 1, 0) and a newline), and
// its number of lines.
func policyLines(p ExitPolicy) (bytes, lines int) {
	if p.IsRejectStar() {
		return len("reject *:*\n"), 1
	}
	for _, e := range p.Entries {
		if !e.IPv6() {
			bytes += len(e.String()) + 1
			lines++
		}
	}
	if lines == 0 {
		return 1, 0 // an empty policy string, then the newline
	}
	return bytes, lines
}

// routerLine is "router NICKNAME ADDRESS ORPORT 0 0": tor 0.4.9 writes
// SOCKSPort and DirPort as 0. An address or port relayfw cannot know
// (a host name it did not resolve, ORPort auto) counts at its longest.
func (eff Effective) routerLine(o torconf.Options) int {
	nick := o.Nickname
	if nick == "" {
		nick = "Unnamed"
	}
	addr := len("255.255.255.255")
	if eff.published4.IsValid() {
		addr = len(eff.published4.String())
	}
	return len("router ") + len(nick) + 1 + addr + 1 + orPortLen(o, false) + len(" 0 0\n")
}

// orAddressLine is "or-address [IPV6]:PORT" when the relay publishes an
// IPv6 ORPort.
func (eff Effective) orAddressLine(o torconf.Options) int {
	if !eff.published6.IsValid() {
		return 0
	}
	return len("or-address ") + len(torcompat.AddrString(eff.published6)) + 1 + orPortLen(o, true) + 1
}

// orPortLen is the length of the advertised ORPort of a family.
func orPortLen(o torconf.Options, v6 bool) int {
	for _, p := range o.Ports {
		if p.Kind != "ORPort" || p.NoAdvertise || (v6 && !p.IPv6) || (!v6 && !p.IPv4) {
			continue
		}
		if n, err := strconv.Atoi(p.Port); err == nil && n > 0 {
			return len(strconv.Itoa(n))
		}
		break
	}
	return len("65535")
}

// familyLine is "family MEMBER...": tor lists each MyFamily member once
// (a fingerprint as "$" and 40 hex digits, a nickname as written, its
// own nickname left out) and adds the relay's own fingerprint. relayfw
// does not know that fingerprint, so a MyFamily that lists the relay
// itself is counted one member (42 bytes) too long.
func familyLine(o torconf.Options) int {
	seen := map[string]bool{}
	size := 0
	for _, m := range o.MyFamily {
		if o.Nickname != "" && strings.EqualFold(m, o.Nickname) {
			continue
		}
		key := strings.ToLower(m)
		if hex, ok := familyFingerprint(m); ok {
			key = "$" + hex
		}
		if seen[key] {
			continue
		}
		seen[key] = true
		size += len(key) + 1
	}
	if size == 0 {
		return 0
	}
	return len("family") + size + len(" $") + 40 + 1
}

// familyFingerprint reads "$HEX", "HEX", "$HEX~NICK" or "$HEX=NICK" as
// tor's hex_digest_nickname_decode does: the 40 hex digits, upper case.
func familyFingerprint(m string) (string, bool) {
	m = strings.TrimPrefix(m, "$")
	if len(m) < 40 || (len(m) > 40 && m[40] != '~' && m[40] != '=') {
		return "", false
	}
	for _, c := range m[:40] {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return "", false
		}
	}
	return strings.ToUpper(m[:40]), true
}

// merge rewrites the configured entries as Merge describes and measures
// the policy tor would then build.
func (eff Effective) merge(before Descriptor) *Merge {
	merged, from, to := mergeRuns(eff.configured)
	if len(from) == 0 {
		return &Merge{Size: before.Size} // nothing merges
	}
	after := eff.withConfigured(merged)
	bytes, entries := policyLines(after)
	m := &Merge{Entries: before.PolicyEntries - entries, Bytes: before.PolicyBytes - bytes}
	m.Size = before.Size - m.Bytes
	m.Example.From, m.Example.To = from, to
	if m.Bytes < 0 { // cannot happen: merging never lengthens the policy
		m.Entries, m.Bytes, m.Size = 0, 0, before.Size
	}
	return m
}

// mergeRuns merges each maximal run of consecutive same-action IPv4
// entries of the list (IPv6 entries in between do not end a run: they
// never match an IPv4 destination). It returns the new list and the
// largest single merge, as an example.
func mergeRuns(entries []Entry) (out []Entry, exampleFrom []Entry, exampleTo Entry) {
	var run []Entry
	var runAction Action
	flush := func() {
		merged, from, to := mergeRun(run)
		if len(from) > len(exampleFrom) {
			exampleFrom, exampleTo = from, to
		}
		out = append(out, merged...)
		run = nil
	}
	var v6 []Entry // IPv6 entries met inside the current run, kept after it
	for _, e := range entries {
		if e.IPv6() {
			if len(run) == 0 {
				out = append(out, e)
			} else {
				v6 = append(v6, e)
			}
			continue
		}
		if len(run) > 0 && e.Action != runAction {
			flush()
			out = append(out, v6...)
			v6 = nil
		}
		run, runAction = append(run, e), e.Action
	}
	flush()
	out = append(out, v6...)
	return out, exampleFrom, exampleTo
}

// mergeRun rewrites one run of same-action IPv4 entries: entries with the
// same port range have their prefixes aggregated (two halves of a prefix
// become it; a prefix inside another goes), entries with the same prefix
// have touching port ranges joined, until nothing changes. The union of
// what the run matches stays exactly the same. Entries nothing merged
// keep their place and their text.
func mergeRun(run []Entry) (out []Entry, exampleFrom []Entry, exampleTo Entry) {
	if len(run) < 2 {
		return run, nil, Entry{}
	}
	items := make([]mergeItem, len(run))
	for i, e := range run {
		items[i] = mergeItem{e: e, from: []int{i}}
	}
	for changed := true; changed; {
		var byPorts, byPrefix bool
		items, byPorts = mergeSamePorts(items)
		items, byPrefix = mergeSamePrefix(items)
		changed = byPorts || byPrefix
	}
	// Back in the run's order (by the first original entry of each).
	for i := range items {
		slices.Sort(items[i].from)
	}
	slices.SortFunc(items, func(a, b mergeItem) int { return cmp.Compare(a.from[0], b.from[0]) })
	for _, it := range items {
		if len(it.from) == 1 {
			out = append(out, run[it.from[0]])
			continue
		}
		out = append(out, it.e)
		if len(it.from) > len(exampleFrom) {
			exampleFrom = exampleFrom[:0]
			for _, i := range it.from {
				exampleFrom = append(exampleFrom, run[i])
			}
			exampleTo = it.e
		}
	}
	return out, exampleFrom, exampleTo
}

// mergeItem is an entry of a run being merged, with the indexes of the
// original entries it stands for.
type mergeItem struct {
	e    Entry
	from []int
}

// mergeSamePorts aggregates the prefixes of entries with the same port
// range: a prefix inside another goes, two halves of a prefix become it.
func mergeSamePorts(items []mergeItem) (next []mergeItem, changed bool) {
	slices.SortFunc(items, func(a, b mergeItem) int {
		if c := cmp.Compare(a.e.PortMin, b.e.PortMin); c != 0 {
			return c
		}
		if c := cmp.Compare(a.e.PortMax, b.e.PortMax); c != 0 {
			return c
		}
		if c := a.e.Network().Addr().Compare(b.e.Network().Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.e.Bits, b.e.Bits)
	})
	for _, it := range items {
		for {
			n := len(next)
			if n == 0 || next[n-1].e.PortMin != it.e.PortMin || next[n-1].e.PortMax != it.e.PortMax {
				break
			}
			prev := &next[n-1]
			pn, in := prev.e.Network(), it.e.Network()
			if pn.Contains(in.Addr()) && pn.Bits() <= in.Bits() { // inside: it adds nothing
				prev.from = append(prev.from, it.from...)
				it = mergeItem{}
				changed = true
				break
			}
			if pn.Bits() == in.Bits() && pn.Bits() > 0 {
				parent, _ := pn.Addr().Prefix(pn.Bits() - 1)
				if parent.Contains(in.Addr()) { // the two halves of parent
					merged := Entry{Action: it.e.Action, Addr: parent.Addr(), Bits: parent.Bits(), PortMin: it.e.PortMin, PortMax: it.e.PortMax}
					it = mergeItem{e: merged, from: append(prev.from, it.from...)}
					next = next[:n-1]
					changed = true
					continue // the parent may pair with the one before
				}
			}
			break
		}
		if it.from != nil {
			next = append(next, it)
		}
	}
	return next, changed
}

// mergeSamePrefix joins the touching or overlapping port ranges of
// entries with the same prefix.
func mergeSamePrefix(items []mergeItem) (next []mergeItem, changed bool) {
	slices.SortFunc(items, func(a, b mergeItem) int {
		if c := a.e.Network().Addr().Compare(b.e.Network().Addr()); c != 0 {
			return c
		}
		if c := cmp.Compare(a.e.Bits, b.e.Bits); c != 0 {
			return c
		}
		return cmp.Compare(a.e.PortMin, b.e.PortMin)
	})
	for _, it := range items {
		if n := len(next); n > 0 && next[n-1].e.Network() == it.e.Network() &&
			int(next[n-1].e.PortMax)+1 >= int(it.e.PortMin) {
			prev := &next[n-1]
			prev.e.PortMax = max(prev.e.PortMax, it.e.PortMax)
			prev.e.Addr = prev.e.Network().Addr()
			prev.from = append(prev.from, it.from...)
			changed = true
			continue
		}
		next = append(next, it)
	}
	return next, changed
}

// String says what the estimate means for the relay, in one line: the
// size against the limit, and what merging would save.
func (d Descriptor) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "its server descriptor would be about %s bytes (%s of them the %s IPv4 exit policy lines), over the %s bytes tor's directory authorities accept (MAX_DESCRIPTOR_UPLOAD_SIZE): they refuse it (\"Router descriptor was too large.\"), so the relay would not be published and would carry no exit traffic",
		digits.Grouped(d.Size), digits.Grouped(d.PolicyBytes), digits.Grouped(d.PolicyEntries), digits.Grouped(DescriptorLimit))
	m := d.Merge
	switch {
	case m == nil:
	case m.Bytes == 0:
		b.WriteString("; merging the ExitPolicy entries would save nothing (no adjacent prefixes with the same action and ports): shorten the policy")
	default:
		fmt.Fprintf(&b, "; merging adjacent prefixes with the same action and ports in the ExitPolicy lines (e.g. %s into %q) would save %s bytes (%s entries) without changing what the policy allows",
			quoteEntries(m.Example.From), torrcLine(m.Example.To), digits.Grouped(m.Bytes), digits.Grouped(m.Entries))
		if m.Size > DescriptorLimit {
			fmt.Fprintf(&b, ", still %s bytes: shorten the policy too", digits.Grouped(m.Size))
		} else {
			fmt.Fprintf(&b, ", to about %s bytes", digits.Grouped(m.Size))
		}
	}
	return b.String()
}

// quoteEntries shows up to three entries, then how many more.
func quoteEntries(es []Entry) string {
	var parts []string
	for i, e := range es {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("and %s more", digits.Grouped(len(es)-3)))
			break
		}
		parts = append(parts, strconv.Quote(torrcLine(e)))
	}
	return strings.Join(parts, ", ")
}

// torrcLine is an IPv4 entry as an ExitPolicy line means it: the
// descriptor's "*" for 0.0.0.0/0 is "*4" there, since a torrc's "*" is
// IPv4 and IPv6 alike.
func torrcLine(e Entry) string {
	s := e.String()
	if e.Bits == 0 && !e.IPv6() {
		s = strings.Replace(s, " *:", " *4:", 1)
	}
	return s
}
