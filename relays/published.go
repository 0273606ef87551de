package relays

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strings"
	"time"
)

// What a relay's clients believe: the relay's own entry in the microdesc
// consensus its tor caches, and the exit-policy summaries of its
// microdescriptor. In the microdesc flavour (tor 0.4.9, dirvote.c) the
// consensus entry holds no exit policy: the authorities write the IPv4
// summary ("p") into the microdescriptor, and copy the relay's own IPv6
// summary (its descriptor's "ipv6-policy") there as "p6"; the full
// consensus's "p" line is the IPv4 summary again, for clients that do not
// use microdescriptors. The consensus names the microdescriptor by the
// SHA-256 of its text ("m" line); the microdescriptors are in
// cached-microdescs and its journal cached-microdescs.new, each starting
// at an "onion-key" line, after "@" annotations. All of these, and the
// fingerprint file, are written by the user tor runs as: they are opened
// as the consensus is (no symbolic link, no FIFO, a regular file) and
// read up to caps.

// Files of tor's DataDirectory read here.
const (
	FingerprintFile      = "fingerprint"
	MicrodescConsensus   = "cached-microdesc-consensus"
	MicrodescCache       = "cached-microdescs"
	MicrodescJournal     = "cached-microdescs.new"
	maxFingerprintBytes  = 1 << 10
	maxMicrodescLineSize = 64 << 10
	// maxMicrodescBodyBytes bounds one microdescriptor: the authorities
	// make it from a server descriptor of at most 20,000 bytes
	// (MAX_DESCRIPTOR_UPLOAD_SIZE), so a longer one is in no consensus
	// and is skipped rather than kept whole in memory.
	maxMicrodescBodyBytes = 64 << 10
)

// MaxMicrodescBytes is the largest microdescriptor file relayfw reads: the
// Tor network's 9,000 microdescriptors take about 5 MiB, and tor rebuilds
// its cache when the journal grows past a few MiB.
const MaxMicrodescBytes = 64 << 20

// Identity is a relay's RSA identity digest, its fingerprint.
type Identity [20]byte

// String is the fingerprint as tor writes it: 40 upper-case hex digits.
func (id Identity) String() string { return strings.ToUpper(hex.EncodeToString(id[:])) }

// ReadFingerprint reads DataDirectory/fingerprint, which tor writes when
// it runs as a relay: "Nickname FINGERPRINT".
func ReadFingerprint(dataDir string) (nickname string, id Identity, err error) {
	path := filepath.Join(dataDir, FingerprintFile)
	f, err := openRegular(path, maxFingerprintBytes)
	if err != nil {
		return "", id, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFingerprintBytes+1))
	if err != nil {
		return "", id, &RefusedError{Path: path, Err: err}
	}
	nickname, id, err = ParseFingerprint(data)
	if err != nil {
		return "", id, &RefusedError{Path: path, Err: err}
	}
	return nickname, id, nil
}

// ParseFingerprint reads the text of a fingerprint file: one line,
// "Nickname FINGERPRINT" (40 hex digits).
func ParseFingerprint(data []byte) (nickname string, id Identity, err error) {
	if len(data) > maxFingerprintBytes {
		return "", id, fmt.Errorf("larger than %d bytes", maxFingerprintBytes)
	}
	f := strings.Fields(string(data))
	if len(f) != 2 || len(f[1]) != 40 {
		return "", id, errors.New(`not "Nickname FINGERPRINT"`)
	}
	if _, err := hex.Decode(id[:], []byte(f[1])); err != nil {
		return "", id, fmt.Errorf("fingerprint %q is not 40 hex digits", clipLine(f[1]))
	}
	return f[0], id, nil
}

// ConsensusEntry is a relay's entry in a microdesc consensus.
type ConsensusEntry struct {
	Nickname string
	// Published is the publication time of the descriptor the entry is
	// made from.
	Published time.Time
	// Microdesc is the SHA-256 digest of its microdescriptor ("m").
	Microdesc [32]byte
	HasDigest bool
	// Flags are its "s" line's flags (Exit, BadExit, Running …).
	Flags []string
}

// HasFlag says whether the entry carries a flag.
func (e ConsensusEntry) HasFlag(flag string) bool {
	for _, f := range e.Flags {
		if f == flag {
			return true
		}
	}
	return false
}

// ConsensusListing is what a microdesc consensus says of one relay.
type ConsensusListing struct {
	// ValidAfter is the consensus's valid-after (zero when it has none).
	ValidAfter time.Time
	// Listed says whether the relay is in it; Entry is its entry then.
	Listed bool
	Entry  ConsensusEntry
}

// ParseConsensusEntry finds the relay id in a microdesc consensus: its "r"
// line (the identity is the fingerprint in base64 without padding), then
// the entry's "m" and "s" lines. A relay listed twice, a line longer than
// 1 MiB, more than MaxConsensusRelays entries or more than
// MaxConsensusBytes are refused.
func ParseConsensusEntry(r io.Reader, id Identity) (ConsensusListing, error) {
	want := base64.RawStdEncoding.EncodeToString(id[:])
	wantBytes := []byte(want)
	var out ConsensusListing
	in, entries := false, 0
	br := bufio.NewReaderSize(&cappedReader{r: r, left: MaxConsensusBytes}, 64<<10)
	err := eachLine(br, maxLine, func(line []byte) error {
		kw, rest, _ := bytes.Cut(line, []byte(" "))
		switch string(kw) {
		case "valid-after":
			if entries == 0 && out.ValidAfter.IsZero() {
				out.ValidAfter = parseTime(strings.Fields("valid-after " + string(rest)))
			}
		case "r":
			if entries++; entries > MaxConsensusRelays {
				return ErrTooManyRelays
			}
			in = false
			if !bytes.Contains(rest, wantBytes) {
				return nil // not the relay: no need to split the line
			}
			f := strings.Fields(string(line))
			in = len(f) >= 3 && f[2] == want
			if !in {
				return nil
			}
			if out.Listed {
				return fmt.Errorf("relay %s listed twice", id)
			}
			out.Listed, out.Entry = true, ConsensusEntry{Nickname: f[1]}
			if len(f) >= 5 {
				out.Entry.Published = parseTime(f[2:])
			}
		case "m":
			if !in || out.Entry.HasDigest {
				return nil
			}
			f := strings.Fields(string(rest))
			if len(f) != 1 {
				return fmt.Errorf("relay %s: malformed \"m\" line", id)
			}
			d, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(f[0], "="))
			if err != nil || len(d) != 32 {
				return fmt.Errorf("relay %s: \"m\" line %q is not a SHA-256 digest in base64", id, clipLine(f[0]))
			}
			copy(out.Entry.Microdesc[:], d)
			out.Entry.HasDigest = true
		case "s":
			if in && out.Entry.Flags == nil {
				out.Entry.Flags = append([]string{}, strings.Fields(string(rest))...)
			}
		case "directory-footer":
			in = false
		}
		return nil
	})
	return out, err
}

// Microdesc is the part of a microdescriptor relayfw reads: its exit
// policy summaries, as written (without the "p "/"p6 " keyword); "" where
// the line is absent: tor leaves out a summary that rejects every port.
type Microdesc struct {
	Summary, Summary6 string
}

// FindMicrodesc reads microdescriptors (a cached-microdescs file or its
// journal) for the one whose SHA-256 is digest; found is false when none
// is. A microdescriptor with two "p" or two "p6" lines is one tor refuses:
// an error. Past MaxMicrodescBytes, or a line longer than 64 KiB, it is
// refused.
func FindMicrodesc(r io.Reader, digest [32]byte) (md Microdesc, found bool, err error) {
	err = eachMicrodesc(r, func(body []byte) error {
		if found || sha256.Sum256(body) != digest {
			return nil
		}
		found = true
		md, err = parseMicrodesc(body)
		return err
	})
	return md, found, err
}

// parseMicrodesc reads a microdescriptor's "p" and "p6" lines.
func parseMicrodesc(body []byte) (Microdesc, error) {
	var md Microdesc
	var seen4, seen6 bool
	for _, line := range bytes.Split(body, []byte("\n")) {
		kw, rest, _ := bytes.Cut(line, []byte(" "))
		var dst *string
		var seen *bool
		switch string(kw) {
		case "p":
			dst, seen = &md.Summary, &seen4
		case "p6":
			dst, seen = &md.Summary6, &seen6
		default:
			continue
		}
		if *seen {
			return Microdesc{}, fmt.Errorf("two %q lines in one microdescriptor (tor refuses it)", kw)
		}
		*seen = true
		*dst = strings.Trim(string(rest), " \t\r")
	}
	return md, nil
}

// eachMicrodesc calls fn with the text of each microdescriptor, as tor
// cuts it for its digest (microdesc_extract_body): from its "onion-key"
// line up to the next line that starts an annotation ("@") or another
// "onion-key", or the end. One longer than maxMicrodescBodyBytes is
// skipped.
func eachMicrodesc(r io.Reader, fn func(body []byte) error) error {
	br := bufio.NewReaderSize(&cappedReader{r: r, left: MaxMicrodescBytes, tooBig: errMicrodescsTooBig}, 64<<10)
	var body []byte
	in, tooLong := false, false
	flush := func() error {
		if !in {
			return nil
		}
		in = false
		if tooLong {
			return nil
		}
		return fn(body)
	}
	err := eachLineRaw(br, maxMicrodescLineSize, func(line []byte) error {
		switch {
		case bytes.HasPrefix(line, []byte("@")):
			return flush()
		case bytes.HasPrefix(line, []byte("onion-key")):
			if err := flush(); err != nil {
				return err
			}
			in, tooLong, body = true, false, body[:0]
		}
		if in && !tooLong {
			if tooLong = len(body)+len(line) > maxMicrodescBodyBytes; !tooLong {
				body = append(body, line...)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return flush()
}

var errMicrodescsTooBig = fmt.Errorf("larger than %d MiB", MaxMicrodescBytes>>20)

// eachLine calls fn with each line without its newline.
func eachLine(br *bufio.Reader, maxLen int, fn func(line []byte) error) error {
	return eachLineRaw(br, maxLen, func(line []byte) error { return fn(bytes.TrimSuffix(line, []byte("\n"))) })
}

// eachLineRaw calls fn with each line, its newline included (the last
// line may have none); a line longer than maxLen is an error.
func eachLineRaw(br *bufio.Reader, maxLen int, fn func(line []byte) error) error {
	var long []byte
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) || long != nil {
			if long = append(long, line...); len(long) > maxLen {
				return fmt.Errorf("a line longer than %d KiB", maxLen>>10)
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			line, long = long, nil
		}
		if len(line) > maxLen {
			return fmt.Errorf("a line longer than %d KiB", maxLen>>10)
		}
		if len(line) > 0 {
			if ferr := fn(line); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// clipLine shortens what an error quotes of a line.
func clipLine(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}

// Listing is what a relay's DataDirectory says clients believe of it.
type Listing struct {
	Nickname    string
	Fingerprint Identity
	// ConsensusPath is the microdesc consensus read.
	ConsensusPath string
	ConsensusListing
	// MicrodescPath is the file its microdescriptor was found in; ""
	// when it was not (tor has not fetched it yet).
	MicrodescPath string
	Microdesc     Microdesc
}

// Errors of ReadListing that say what is missing.
var (
	// ErrNoFingerprint: DataDirectory has no fingerprint file (tor has
	// not run as a relay with this DataDirectory).
	ErrNoFingerprint = errors.New("no fingerprint file")
	// ErrNoMicrodescConsensus: DataDirectory has no microdesc consensus.
	ErrNoMicrodescConsensus = errors.New("no cached microdesc consensus")
)

// ReadListing reads what dataDir's tor has cached about the relay itself:
// its fingerprint, its entry in the microdesc consensus and, when listed,
// its microdescriptor's exit-policy summaries. A missing file is
// ErrNoFingerprint or ErrNoMicrodescConsensus (wrapping fs.ErrNotExist); a
// file that is refused (not a regular file, over a cap, malformed) is a
// *RefusedError naming it. A relay that is listed but whose
// microdescriptor is in neither file has an empty MicrodescPath.
func ReadListing(dataDir string) (Listing, error) {
	var l Listing
	var err error
	l.Nickname, l.Fingerprint, err = ReadFingerprint(dataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return l, fmt.Errorf("%s: %w (%w)", filepath.Join(dataDir, FingerprintFile), ErrNoFingerprint, fs.ErrNotExist)
	}
	if err != nil {
		return l, err
	}
	l.ConsensusPath = filepath.Join(dataDir, MicrodescConsensus)
	if err := readFile(l.ConsensusPath, MaxConsensusBytes, func(r io.Reader) (err error) {
		l.ConsensusListing, err = ParseConsensusEntry(r, l.Fingerprint)
		return err
	}); errors.Is(err, fs.ErrNotExist) {
		return l, fmt.Errorf("%s: %w (%w)", l.ConsensusPath, ErrNoMicrodescConsensus, fs.ErrNotExist)
	} else if err != nil {
		return l, err
	}
	if !l.Listed || !l.Entry.HasDigest {
		return l, nil
	}
	for _, name := range []string{MicrodescJournal, MicrodescCache} {
		path := filepath.Join(dataDir, name)
		var md Microdesc
		var found bool
		err := readFile(path, MaxMicrodescBytes, func(r io.Reader) (err error) {
			md, found, err = FindMicrodesc(r, l.Entry.Microdesc)
			return err
		})
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return l, err
		case found:
			l.MicrodescPath, l.Microdesc = path, md
			return l, nil
		}
	}
	return l, nil
}

// readFile opens path as the consensus is opened (openRegular) and reads
// it with fn; an error other than a missing file is a *RefusedError.
func readFile(path string, limit int64, fn func(io.Reader) error) error {
	f, err := openRegular(path, limit)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := fn(f); err != nil {
		return &RefusedError{Path: path, Err: err}
	}
	return nil
}
