// Package relays finds the addresses a relay's tor must always reach: other
// relays' ORPorts from the consensus tor caches, and the directory
// authorities and fallback directories (from torrc, else tor 0.4.9's
// compiled-in lists). It only reads; the firewall installs them.
package relays

import (
	"bufio"
	"bytes"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/relayfw/relayfw/ruleset"
	"github.com/relayfw/relayfw/torconf"
)

//go:embed defaults/authorities.txt
var defaultAuthorities string

//go:embed defaults/fallbacks.txt
var defaultFallbacks string

// Links is a deduplicated, sorted set of (address, TCP port) pairs.
type Links []netip.AddrPort

// IPv4 links (most of a consensus) are sorted as integers, address and
// port in one: sorting 12,000 links with AddrPort.Compare took 10 ms, a
// third of reading the consensus. IPv4 sorts before IPv6, as Compare
// has it.
func (l Links) normalize() Links {
	v4 := make([]uint64, 0, len(l))
	var v6 Links
	for _, ap := range l {
		if a := ap.Addr(); a.Is4() {
			b := a.As4()
			v4 = append(v4, uint64(binary.BigEndian.Uint32(b[:]))<<16|uint64(ap.Port()))
		} else {
			v6 = append(v6, ap)
		}
	}
	slices.Sort(v4)
	slices.SortFunc(v6, netip.AddrPort.Compare)
	out := l[:0]
	for _, k := range slices.Compact(v4) {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(k>>16))
		out = append(out, netip.AddrPortFrom(netip.AddrFrom4(b), uint16(k)))
	}
	return append(out, slices.Compact(v6)...)
}

// ConsensusFiles are tor's cached consensus files in DataDirectory, in
// the order relayfw tries them.
var ConsensusFiles = []string{"cached-microdesc-consensus", "cached-consensus"}

// The caps on a consensus. The user tor runs as writes it, so its size and
// its number of entries are bounded here, not by trust: the Tor network's
// microdesc consensus has about 9,000 relays in 3 MiB, its full consensus
// some 5 MiB. A consensus over a cap is refused.
const (
	// MaxConsensusBytes is the largest consensus file relayfw reads.
	MaxConsensusBytes = 32 << 20
	// MaxConsensusRelays is the most entries a consensus may list: relays
	// ("r" lines) and directory sources ("dir-source" lines) together.
	MaxConsensusRelays = 50000
)

// Network is what relayfw reads from a consensus.
type Network struct {
	// Links are the ORPorts and DirPorts tor connects to; each passes
	// ruleset.CheckRelayLink.
	Links Links
	// Authorities are the directory authorities' addresses: their
	// dir-source lines, and relays with the Authority flag.
	Authorities []netip.Addr
	// Relays are the addresses of every relay listed.
	Relays []netip.Addr
	// ValidAfter and ValidUntil are the consensus's valid-after and
	// valid-until times (UTC); zero when it has none.
	ValidAfter, ValidUntil time.Time
	// LeftOut counts the entries (addresses with their port) left out, by
	// reason: those ruleset.CheckRelayLink refuses, and those tor itself does
	// not use.
	LeftOut map[string]int
}

// LeftOutTotal is the number of entries left out.
func (n Network) LeftOutTotal() int {
	total := 0
	for _, c := range n.LeftOut {
		total += c
	}
	return total
}

// LeftOutSummary says in one line how many entries were left out and why
// ("" when none was).
func (n Network) LeftOutSummary() string {
	if len(n.LeftOut) == 0 {
		return ""
	}
	reasons := make([]string, 0, len(n.LeftOut))
	for r := range n.LeftOut {
		reasons = append(reasons, r)
	}
	slices.Sort(reasons)
	var b strings.Builder
	fmt.Fprintf(&b, "%d entries left out:", n.LeftOutTotal())
	for i, r := range reasons {
		if i > 0 {
			b.WriteString(";")
		}
		fmt.Fprintf(&b, " %d %s", n.LeftOut[r], r)
	}
	return b.String()
}

// Options say how to read a consensus.
type Options struct {
	// Private lets relay links be internal addresses: the instance runs
	// TestingTorNetwork (ruleset.CheckRelayLink).
	Private bool
}

// RefusedError is a consensus file relayfw does not read: not a regular
// file (a symbolic link, a FIFO, a device), over a cap, or unparsable.
type RefusedError struct {
	Path string
	Err  error
}

func (e *RefusedError) Error() string { return fmt.Sprintf("%s: refused: %v", e.Path, e.Err) }
func (e *RefusedError) Unwrap() error { return e.Err }

// Errors of a consensus over a cap.
var (
	ErrTooBig        = fmt.Errorf("larger than %d MiB", MaxConsensusBytes>>20)
	ErrTooManyRelays = fmt.Errorf("more than %d relays", MaxConsensusRelays)
)

// ReadNetwork reads the first consensus found in dataDir. A file that is
// missing is skipped for the next one (the error wraps fs.ErrNotExist when
// none is found); one that exists but is refused is not (the user who can
// put one file there can put the other): the error is a *RefusedError
// naming it. The file is opened without following a symbolic link and
// without blocking, must be a regular file, and is read up to the caps.
func ReadNetwork(dataDir string, o Options) (Network, string, error) {
	var errs []error
	for _, name := range ConsensusFiles {
		path := filepath.Join(dataDir, name)
		n, err := readConsensus(path, o)
		if errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		if err != nil {
			return Network{}, path, &RefusedError{Path: path, Err: err}
		}
		return n, path, nil
	}
	return Network{}, "", errors.Join(errs...)
}

func readConsensus(path string, o Options) (Network, error) {
	f, err := openCapped(path, MaxConsensusBytes, ErrTooBig)
	if err != nil {
		return Network{}, err
	}
	defer f.Close()
	return ParseNetwork(f, o)
}

// openCapped opens a file tor's user writes: without following a symbolic
// link and without blocking, and only a regular file of at most limit
// bytes (larger: tooBig). A missing file is an error wrapping
// fs.ErrNotExist.
func openCapped(path string, limit int64, tooBig error) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, err
	case errors.Is(err, syscall.ELOOP):
		return nil, errors.New("a symbolic link, not a regular file")
	case err != nil:
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, err
	}
	fi, err := f.Stat()
	switch {
	case err != nil:
	case !fi.Mode().IsRegular():
		err = fmt.Errorf("not a regular file (%s)", FileKind(fi.Mode()))
	case fi.Size() > limit:
		err = fmt.Errorf("%d bytes: %w", fi.Size(), tooBig)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// openRegular is openCapped for the files of a relay's own listing: an
// error other than a missing file is a *RefusedError naming the file.
func openRegular(path string, limit int64) (*os.File, error) {
	f, err := openCapped(path, limit, fmt.Errorf("larger than %d bytes", limit))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		err = &RefusedError{Path: path, Err: err}
	}
	return f, err
}

// FileKind names a file type for an operator ("a FIFO", "a directory").
func FileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m.IsDir():
		return "a directory"
	}
	return m.Type().String()
}

// Why an entry is left out, besides what ruleset.CheckRelayLink says.
const (
	leftNotIPv4   = "not an IPv4 address in an \"r\" or \"dir-source\" line"
	leftNotIPv6   = "not an IPv6 address in an \"a\" line (tor reads IPv6 there)"
	leftSecondA   = "a second IPv6 \"a\" line (tor reads the first)"
	leftOutsideA  = "an \"a\" line outside a relay's entry"
	leftMalformed = "a malformed address or port"
)

// ParseNetwork reads a network-status consensus (full or microdesc
// flavour): "r" lines give each relay's IPv4 address and ORPort, the
// first IPv6 "a" line its IPv6 ORPort (as tor reads them), "s" lines its
// flags, "dir-source" lines the authorities' address, DirPort and ORPort,
// "valid-after" and "valid-until" its lifetime. Every address and port
// passes ruleset.CheckRelayLink (with o.Private for a TestingTorNetwork
// instance), or is left out and counted. Reading stops with an error past
// MaxConsensusBytes or MaxConsensusRelays.
func ParseNetwork(r io.Reader, o Options) (Network, error) {
	br := bufio.NewReaderSize(&cappedReader{r: r, left: MaxConsensusBytes}, 64<<10)
	p := &networkParser{o: o}
	p.n.Links = make(Links, 0, 16<<10) // the Tor network's consensus: 12,000 links
	err := eachLine(br, maxLine, func(line []byte) error {
		if f, ok := fieldsOfInterest(line); ok {
			return p.line(f)
		}
		return nil
	})
	if err != nil {
		return Network{}, err
	}
	if !p.sawR {
		return Network{}, errors.New("no relay (\"r\" line) in the consensus")
	}
	n := p.n
	n.Links = n.Links.normalize()
	n.Authorities = uniqueAddrs(n.Authorities)
	n.Relays = uniqueAddrs(n.Relays)
	return n, nil
}

// maxLine is the longest consensus line relayfw reads.
const maxLine = 1 << 20

// fieldsOfInterest splits a line into its fields (as strings.Fields)
// when its keyword is one networkParser.line reads: most lines of a
// consensus (m, v, pr, w, and s without Authority) are skipped without
// splitting them, which made reading 9,000 relays four times faster.
func fieldsOfInterest(line []byte) ([]string, bool) {
	end := 0
	for end < len(line) && line[end] > ' ' && line[end] < utf8.RuneSelf {
		end++
	}
	if end == 0 || (end < len(line) && line[end] != ' ') {
		// Leading space, a tab, a control or non-ASCII byte: the slow,
		// general way.
		return strings.Fields(string(line)), true
	}
	switch string(line[:end]) {
	case "r", "a", "dir-source", "valid-after", "valid-until":
	case "s":
		if !bytes.Contains(line, []byte("Authority")) {
			return nil, false
		}
	default:
		return nil, false
	}
	return strings.Fields(string(line)), true
}

// networkParser is ParseNetwork's state between lines.
type networkParser struct {
	o       Options
	n       Network
	sawR    bool
	entries int          // "r" and "dir-source" lines, up to MaxConsensusRelays
	inEntry bool         // within an "r" entry
	sawA    bool         // its IPv6 "a" line seen
	current []netip.Addr // the accepted addresses of the last "r" entry
}

// line reads one line's fields.
func (p *networkParser) line(f []string) error {
	if len(f) == 0 {
		return nil
	}
	switch f[0] {
	case "valid-after", "valid-until":
		if p.sawR {
			return nil
		}
		at := &p.n.ValidAfter
		if f[0] == "valid-until" {
			at = &p.n.ValidUntil
		}
		if at.IsZero() {
			*at = parseTime(f)
		}
	case "r":
		return p.relay(f)
	case "a":
		p.ipv6(f)
	case "s":
		if slices.Contains(f[1:], "Authority") {
			p.n.Authorities = append(p.n.Authorities, p.current...)
		}
	case "dir-source":
		return p.dirSource(f)
	}
	return nil
}

// parseTime reads "keyword YYYY-MM-DD HH:MM:SS"; zero when malformed.
func parseTime(f []string) time.Time {
	if len(f) < 3 {
		return time.Time{}
	}
	t, err := time.Parse(time.DateTime, f[1]+" "+f[2])
	if err != nil {
		return time.Time{}
	}
	return t
}

// leave counts an entry left out, by why.
func (p *networkParser) leave(why string) {
	if p.n.LeftOut == nil {
		p.n.LeftOut = map[string]int{}
	}
	p.n.LeftOut[why]++
}

// link admits (a, port) as a link, or counts why not.
func (p *networkParser) link(a netip.Addr, port uint16) bool {
	if err := ruleset.CheckRelayLink(netip.AddrPortFrom(a, port), p.o.Private); err != nil {
		p.leave(err.Error())
		return false
	}
	p.n.Links = append(p.n.Links, netip.AddrPortFrom(a, port))
	return true
}

// count counts an entry, and stops reading past MaxConsensusRelays.
func (p *networkParser) count() error {
	if p.entries++; p.entries > MaxConsensusRelays {
		return ErrTooManyRelays
	}
	return nil
}

// relay reads "r nick id [digest] date time IP ORPort DirPort".
func (p *networkParser) relay(f []string) error {
	p.current, p.inEntry, p.sawA = nil, false, false
	if len(f) < 8 {
		return nil
	}
	if err := p.count(); err != nil {
		return err
	}
	p.sawR, p.inEntry = true, true
	a, err := netip.ParseAddr(f[len(f)-3])
	orport, perr := strconv.ParseUint(f[len(f)-2], 10, 16)
	switch {
	case err != nil || perr != nil:
		p.leave(leftMalformed)
	case !a.Is4():
		p.leave(leftNotIPv4)
	case p.link(a, uint16(orport)):
		p.current = append(p.current, a)
		p.n.Relays = append(p.n.Relays, a)
	}
	return nil
}

// ipv6 reads an "a [IPv6]:ORPort" line of the current entry: tor reads
// the first.
func (p *networkParser) ipv6(f []string) {
	if len(f) < 2 {
		return
	}
	ap, err := netip.ParseAddrPort(f[1])
	switch {
	case !p.inEntry:
		p.leave(leftOutsideA)
	case err != nil:
		p.leave(leftMalformed)
	case ap.Addr().Is4():
		p.leave(leftNotIPv6)
	case p.sawA:
		p.leave(leftSecondA)
	default:
		p.sawA = true
		if p.link(ap.Addr(), ap.Port()) {
			p.current = append(p.current, ap.Addr())
			p.n.Relays = append(p.n.Relays, ap.Addr())
		}
	}
}

// dirSource reads "dir-source nick id address IP dirport orport".
func (p *networkParser) dirSource(f []string) error {
	if len(f) < 7 {
		return nil
	}
	if err := p.count(); err != nil {
		return err
	}
	a, err := netip.ParseAddr(f[4])
	dirport, e1 := strconv.ParseUint(f[5], 10, 16)
	orport, e2 := strconv.ParseUint(f[6], 10, 16)
	switch {
	case err != nil || e1 != nil || e2 != nil:
		p.leave(leftMalformed)
	case !a.Is4():
		p.leave(leftNotIPv4)
	default:
		ok := false
		for _, port := range []uint64{dirport, orport} {
			if port != 0 && p.link(a, uint16(port)) {
				ok = true
			}
		}
		if ok {
			p.n.Authorities = append(p.n.Authorities, a)
		}
	}
	return nil
}

// cappedReader reads up to left bytes, then fails with tooBig (nil:
// ErrTooBig).
type cappedReader struct {
	r      io.Reader
	left   int64
	tooBig error
}

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		// One byte more tells a file of exactly the cap from a larger one.
		var one [1]byte
		if n, err := c.r.Read(one[:]); n > 0 {
			if c.tooBig != nil {
				return 0, c.tooBig
			}
			return 0, ErrTooBig
		} else if err != nil {
			return 0, err
		}
		return 0, nil
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
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
	l := make(Links, len(as))
	for i, a := range as {
		l[i] = netip.AddrPortFrom(a, 0)
	}
	l = l.normalize() // IPv4 as integers: fast
	out := as[:0]
	for _, ap := range l {
		out = append(out, ap.Addr())
	}
	return out
}

// dirServerLinks is the addresses one DirAuthority or FallbackDir line
// makes tor contact: its ORPort and DirPort on IPv4, its ipv6= ORPort.
// Those ruleset.CheckRelayLink refuses are returned apart.
func dirServerLinks(ds torconf.DirServer, private bool) (links Links, refused []string) {
	for _, ap := range []netip.AddrPort{netip.AddrPortFrom(ds.Addr, ds.ORPort), netip.AddrPortFrom(ds.Addr, ds.DirPort), ds.IPv6} {
		if !ap.Addr().IsValid() || ap.Port() == 0 {
			continue // no such port (a fallback has no DirPort in use)
		}
		if err := ruleset.CheckRelayLink(ap, private); err != nil {
			refused = append(refused, fmt.Sprintf("%s: %v", ap, err))
			continue
		}
		links = append(links, ap)
	}
	return links, refused
}

// DirServers parses DirAuthority or FallbackDir values; where torrc has
// none, tor's compiled-in list applies (defaults: "authorities" or
// "fallbacks"). The links ruleset.CheckRelayLink refuses (private: the
// instance runs TestingTorNetwork) are left out and said in refused, one
// line each.
func DirServers(values []string, defaults string, private bool) (links Links, refused []string, err error) {
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
	parse := torconf.ParseDirAuthority
	if defaults == "fallbacks" {
		parse = torconf.ParseFallbackDir
	}
	for _, v := range values {
		ds, _, err := parse(v)
		if err != nil {
			return nil, nil, fmt.Errorf("%q: %w", v, err)
		}
		l, r := dirServerLinks(ds, private)
		links = append(links, l...)
		for _, why := range r {
			refused = append(refused, fmt.Sprintf("%q: %s", v, why))
		}
	}
	return links.normalize(), refused, nil
}

// Merge joins link sets.
func Merge(sets ...Links) Links {
	var all Links
	for _, s := range sets {
		all = append(all, s...)
	}
	return all.normalize()
}
