package relays

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// testMicrodesc is a microdescriptor as tor 0.4.9 caches it (the
// onion-key line without a TAP key), with the policy lines given.
func testMicrodesc(n int, policy ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "onion-key\nntor-onion-key %043d\n", n)
	for _, p := range policy {
		b.WriteString(p + "\n")
	}
	fmt.Fprintf(&b, "id ed25519 %043d\n", n)
	return b.String()
}

func digestOf(md string) [32]byte { return sha256.Sum256([]byte(md)) }

func b64(b []byte) string { return base64.RawStdEncoding.EncodeToString(b) }

// testListing is a DataDirectory with a fingerprint, a microdesc
// consensus listing the relay (and two others) and microdescriptors.
type testListing struct {
	id        Identity
	mine      string // the relay's microdescriptor
	consensus string
	cache     string // cached-microdescs
}

func newTestListing() testListing {
	var l testListing
	for i := range l.id {
		l.id[i] = byte(0xA0 + i)
	}
	other1, other2 := testMicrodesc(1, "p accept 80"), testMicrodesc(2)
	l.mine = testMicrodesc(3, "p accept 80,443,8080", "p6 accept 443")
	d1, d2, d3 := digestOf(other1), digestOf(other2), digestOf(l.mine)
	l.consensus = "network-status-version 3 microdesc\nvote-status consensus\nvalid-after 2026-11-25 12:00:00\n" +
		"r other1 " + b64(bytes.Repeat([]byte{1}, 20)) + " 2026-11-25 11:00:00 203.0.113.1 9001 0\nm " + b64(d1[:]) + "\ns Fast Running Valid\n" +
		"r exitA " + b64(l.id[:]) + " 2026-11-25 11:30:00 203.0.113.2 9001 0\na [2001:db8::2]:9001\nm " + b64(d3[:]) + "\ns Exit Fast Running Valid\nw Bandwidth=20\n" +
		"r other2 " + b64(bytes.Repeat([]byte{2}, 20)) + " 2026-11-25 11:00:00 203.0.113.3 9001 0\nm " + b64(d2[:]) + "\ns Fast Running Valid\n" +
		"directory-footer\nbandwidth-weights Wbd=0\n"
	l.cache = "@last-listed 2026-11-25 12:00:00\n" + other1 + "@last-listed 2026-11-25 12:00:00\n" + l.mine +
		"@last-listed 2026-11-25 12:00:00\n" + other2
	return l
}

func (l testListing) write(t testing.TB, dir string) {
	t.Helper()
	for name, text := range map[string]string{
		FingerprintFile:    "exitA " + l.id.String() + "\n",
		MicrodescConsensus: l.consensus,
		MicrodescCache:     l.cache,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReadListing(t *testing.T) {
	l := newTestListing()
	dir := t.TempDir()
	l.write(t, dir)
	got, err := ReadListing(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := Listing{Nickname: "exitA", Fingerprint: l.id, ConsensusPath: filepath.Join(dir, MicrodescConsensus),
		ConsensusListing: ConsensusListing{ValidAfter: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC), Listed: true,
			Entry: ConsensusEntry{Nickname: "exitA", Published: time.Date(2026, 11, 25, 11, 30, 0, 0, time.UTC), Microdesc: digestOf(l.mine),
				HasDigest: true, Flags: []string{"Exit", "Fast", "Running", "Valid"}}},
		MicrodescPath: filepath.Join(dir, MicrodescCache), Microdesc: Microdesc{Summary: "accept 80,443,8080", Summary6: "accept 443"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ReadListing (-want +got):\n%s", diff)
	}

	// A newer microdescriptor in the journal, one without p6.
	newer := testMicrodesc(4, "p accept 80,443")
	d := digestOf(newer)
	l.consensus = strings.Replace(l.consensus, b64(want.Entry.Microdesc[:]), b64(d[:]), 1)
	l.write(t, dir)
	if err := os.WriteFile(filepath.Join(dir, MicrodescJournal), []byte("@last-listed 2026-11-25 13:00:00\n"+newer), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err = ReadListing(dir)
	if err != nil || got.MicrodescPath != filepath.Join(dir, MicrodescJournal) || got.Microdesc != (Microdesc{Summary: "accept 80,443"}) {
		t.Errorf("from the journal: %+v, %v", got, err)
	}

	// Listed, its microdescriptor not fetched yet.
	if err := os.Remove(filepath.Join(dir, MicrodescJournal)); err != nil {
		t.Fatal(err)
	}
	got, err = ReadListing(dir)
	if err != nil || !got.Listed || got.MicrodescPath != "" {
		t.Errorf("microdescriptor missing: %+v, %v", got, err)
	}
}

func TestReadListingMissingOrRefused(t *testing.T) {
	l := newTestListing()
	for _, c := range []struct {
		name    string
		prepare func(t *testing.T, dir string)
		check   func(error) bool
		listed  bool
	}{
		{"no fingerprint", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, FingerprintFile)) },
			func(err error) bool { return errors.Is(err, ErrNoFingerprint) && errors.Is(err, fs.ErrNotExist) }, false},
		{"no consensus", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, MicrodescConsensus)) },
			func(err error) bool { return errors.Is(err, ErrNoMicrodescConsensus) }, false},
		{"not listed", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, FingerprintFile), []byte("other FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF\n"), 0o644)
		}, func(err error) bool { return err == nil }, false},
		{"fingerprint not hex", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, FingerprintFile), []byte("exitA ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ\n"), 0o644)
		}, isRefused, false},
		{"fingerprint too long", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, FingerprintFile), bytes.Repeat([]byte("x"), 2000), 0o644)
		}, isRefused, false},
		{"consensus a symbolic link", func(t *testing.T, dir string) {
			p := filepath.Join(dir, MicrodescConsensus)
			os.Rename(p, p+".real")
			os.Symlink(p+".real", p)
		}, isRefused, false},
		{"microdescs a FIFO", func(t *testing.T, dir string) {
			p := filepath.Join(dir, MicrodescJournal)
			if err := syscall.Mkfifo(p, 0o644); err != nil {
				t.Fatal(err)
			}
		}, isRefused, false},
		{"listed twice", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, MicrodescConsensus), []byte(l.consensus+l.consensus), 0o644)
		}, isRefused, false},
		{"malformed m line", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, MicrodescConsensus), []byte(strings.Replace(l.consensus, "\nm ", "\nm sha256=", 2)), 0o644)
		}, isRefused, false},
		{"two p lines", func(t *testing.T, dir string) {
			mine := testMicrodesc(3, "p accept 80", "p accept 443")
			d, old := digestOf(mine), digestOf(l.mine)
			os.WriteFile(filepath.Join(dir, MicrodescCache), []byte(mine), 0o644)
			os.WriteFile(filepath.Join(dir, MicrodescConsensus), []byte(strings.Replace(l.consensus, b64(old[:]), b64(d[:]), 1)), 0o644)
		}, isRefused, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			l.write(t, dir)
			c.prepare(t, dir)
			got, err := ReadListing(dir)
			if !c.check(err) || (err == nil && got.Listed != c.listed) {
				t.Errorf("ReadListing: listed %v, %v", got.Listed, err)
			}
		})
	}
}

func isRefused(err error) bool {
	var r *RefusedError
	return errors.As(err, &r)
}

func TestFindMicrodescCutsAsTor(t *testing.T) {
	// No annotations (a journal tor wrote without them), no final
	// newline, CRLF kept as part of the text.
	a, b := testMicrodesc(1, "p reject 25"), "onion-key\nntor-onion-key x\np6 accept 80 \nid ed25519 y"
	text := a + b
	for _, c := range []struct {
		digest [32]byte
		want   Microdesc
		found  bool
	}{
		{digestOf(a), Microdesc{Summary: "reject 25"}, true},
		{digestOf(b), Microdesc{Summary6: "accept 80"}, true},
		{digestOf(a + b), Microdesc{}, false},
	} {
		md, found, err := FindMicrodesc(strings.NewReader(text), c.digest)
		if err != nil || found != c.found || md != c.want {
			t.Errorf("%x: %+v %v %v", c.digest[:4], md, found, err)
		}
	}
}

func FuzzParseConsensusEntry(f *testing.F) {
	l := newTestListing()
	f.Add([]byte(l.consensus))
	f.Add([]byte("r x " + b64(l.id[:]) + "\nm\nm a b\ns\nr x " + b64(l.id[:]) + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := ParseConsensusEntry(bytes.NewReader(data), l.id)
		if err != nil {
			return
		}
		if got.Listed && !bytes.Contains(data, []byte(b64(l.id[:]))) {
			t.Fatalf("listed, yet the identity is not in the text: %+v", got)
		}
		if !got.Listed && (got.Entry.HasDigest || got.Entry.Flags != nil) {
			t.Fatalf("not listed, yet an entry: %+v", got)
		}
	})
}

func FuzzFindMicrodesc(f *testing.F) {
	l := newTestListing()
	f.Add([]byte(l.cache))
	f.Add([]byte("onion-key\np accept 80\np6 reject 1\n@x\nonion-keyonion-key\np 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// Every microdescriptor eachMicrodesc cuts is found by its digest,
		// and starts at an onion-key line of the text.
		var bodies [][]byte
		err := eachMicrodesc(bytes.NewReader(data), func(body []byte) error {
			if !bytes.HasPrefix(body, []byte("onion-key")) || !bytes.Contains(data, body) {
				t.Fatalf("cut %q out of %q", body, data)
			}
			bodies = append(bodies, bytes.Clone(body))
			return nil
		})
		if err != nil {
			return
		}
		for _, body := range bodies {
			md, found, err := FindMicrodesc(bytes.NewReader(data), sha256.Sum256(body))
			if !found {
				t.Fatalf("%q not found by its digest (%v)", body, err)
			}
			if !bytes.Contains(body, []byte(md.Summary)) || !bytes.Contains(body, []byte(md.Summary6)) {
				t.Fatalf("summaries %q, %q are not in %q", md.Summary, md.Summary6, body)
			}
		}
	})
}

// BenchmarkReadListing: a DataDirectory the size of the Tor network's —
// 9,000 relays in the consensus, 9,000 microdescriptors (about 5 MB), the
// relay's own last.
func BenchmarkReadListing(b *testing.B) {
	l := newTestListing()
	dir := b.TempDir()
	l.write(b, dir)
	d := digestOf(l.mine)
	consensus := strings.Replace(string(realSizeConsensus(9000)), "directory-footer\n",
		"r exitA "+b64(l.id[:])+" 2026-11-25 11:30:00 203.0.113.2 9001 0\nm "+b64(d[:])+"\ns Exit Fast Running Valid\ndirectory-footer\n", 1)
	var cache strings.Builder
	for i := range 9000 {
		cache.WriteString("@last-listed 2026-11-25 12:00:00\n")
		cache.WriteString("onion-key\n-----BEGIN RSA PUBLIC KEY-----\n" + strings.Repeat(strings.Repeat("A", 64)+"\n", 3) + "-----END RSA PUBLIC KEY-----\n")
		cache.WriteString(testMicrodesc(i+10, "family $"+strings.Repeat("0", 40)+" $"+strings.Repeat("1", 40), "p reject 25,119,135-139,445,563,1214,4661-4666,6346-6429,6699,6881-6999"))
	}
	cache.WriteString("@last-listed 2026-11-25 12:00:00\n" + l.mine)
	for name, text := range map[string]string{MicrodescConsensus: consensus, MicrodescCache: cache.String()} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(consensus)+cache.Len())/1e6, "MB")
	for b.Loop() {
		got, err := ReadListing(dir)
		if err != nil || got.Microdesc.Summary != "accept 80,443,8080" {
			b.Fatal(got, err)
		}
	}
}

// A microdescriptor longer than any tor builds (the authorities accept a
// server descriptor of at most 20,000 bytes) is not kept whole in memory:
// a DataDirectory's one 64 MiB "microdescriptor" once cost relayfw 400 MB
// of allocations a read, every minute the metrics unit ran.
func TestFindMicrodescBoundsABody(t *testing.T) {
	huge := "onion-key\n" + strings.Repeat("family x\n", (4<<20)/9) + "p accept 80\n"
	text := huge + testMicrodesc(1, "p reject 25")
	digest := digestOf(huge)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	md, found, err := FindMicrodesc(strings.NewReader(text), digest)
	runtime.ReadMemStats(&after)
	if err != nil || found {
		t.Errorf("a %d-byte microdescriptor: found %v (%+v), %v; want not found", len(huge), found, md, err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Errorf("reading a %d-byte microdescriptor allocated %d bytes; want under 1 MiB", len(huge), alloc)
	}
	if _, found, err := FindMicrodesc(strings.NewReader(text), digestOf(testMicrodesc(1, "p reject 25"))); !found || err != nil {
		t.Errorf("the microdescriptor after it: found %v, %v", found, err)
	}
}
