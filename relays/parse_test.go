package relays

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// realSizeConsensus is a microdesc consensus shaped like the Tor
// network's: n relays with the lines tor writes for each (r, a for about
// a third, m, s, v, pr, w), about 3 MB at 9,000 relays.
func realSizeConsensus(n int) []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	var b bytes.Buffer
	b.WriteString("network-status-version 3 microdesc\nvote-status consensus\nconsensus-method 34\nvalid-after 2026-11-25 12:00:00\nfresh-until 2026-11-25 13:00:00\nvalid-until 2026-11-25 15:00:00\n")
	b.WriteString("known-flags Authority BadExit Exit Fast Guard HSDir MiddleOnly Running Stable StaleDesc Sybil V2Dir Valid\n")
	for i := 0; i < 9; i++ {
		fmt.Fprintf(&b, "dir-source auth%d %040X auth%d.example 203.0.113.%d 80 443\ncontact auth %d\nvote-digest %040X\n", i, i, i, 200+i, i, i)
	}
	ports := []int{9001, 9001, 9001, 443, 443, 8443, 9000, 80, 9100, 4443}
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "r relay%d %027d 2026-11-25 %02d:%02d:%02d %d.%d.%d.%d %d 0\n", i, rng.Uint64(), rng.IntN(24), rng.IntN(60), rng.IntN(60),
			1+rng.IntN(223), rng.IntN(256), rng.IntN(256), 1+rng.IntN(254), ports[rng.IntN(len(ports))])
		if i%3 == 0 {
			fmt.Fprintf(&b, "a [2001:db8:%x::%x]:%d\n", i, rng.IntN(65535), ports[rng.IntN(len(ports))])
		}
		fmt.Fprintf(&b, "m %043d\ns Fast Guard HSDir Running Stable V2Dir Valid\nv Tor 0.4.8.%d\n", rng.Uint64(), rng.IntN(20))
		b.WriteString("pr Conflux=1 Cons=1-2 Desc=1-2 DirCache=2 FlowCtrl=1-2 HSDir=2 HSIntro=4-5 HSRend=1-2 Link=1-5 LinkAuth=1,3 Microdesc=1-2 Padding=2 Relay=1-4\n")
		fmt.Fprintf(&b, "w Bandwidth=%d\n", rng.IntN(100000))
	}
	b.WriteString("directory-footer\nbandwidth-weights Wbd=0 Wbe=0\ndirectory-signature sha256 0000 1111\n-----BEGIN SIGNATURE-----\nAAAA\n-----END SIGNATURE-----\n")
	return b.Bytes()
}

func BenchmarkParseNetwork(b *testing.B) {
	data := realSizeConsensus(9000)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		n, err := ParseNetwork(bytes.NewReader(data), Options{})
		if err != nil || len(n.Links) < 9000 {
			b.Fatal(err, len(n.Links))
		}
	}
}

func BenchmarkReadNetwork(b *testing.B) {
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cached-microdesc-consensus"), realSizeConsensus(9000), 0o644); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, _, err := ReadNetwork(dir, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// parseNetworkByFields is ParseNetwork as it was before it skipped the
// lines it does not read: every line split by strings.Fields.
func parseNetworkByFields(text string, o Options) (Network, error) {
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64*1024), maxLine)
	p := &networkParser{o: o}
	for sc.Scan() {
		if err := p.line(strings.Fields(sc.Text())); err != nil {
			return Network{}, err
		}
	}
	if err := sc.Err(); err != nil {
		return Network{}, err
	}
	if !p.sawR {
		return Network{}, errors.New("no relay")
	}
	n := p.n
	n.Links = n.Links.normalize()
	n.Authorities = uniqueAddrs(n.Authorities)
	n.Relays = uniqueAddrs(n.Relays)
	return n, nil
}

// FuzzParseNetworkSkips: skipping the lines relayfw does not read
// changes nothing: ParseNetwork reads what splitting every line read.
func FuzzParseNetworkSkips(f *testing.F) {
	f.Add(string(realSizeConsensus(20)), false)
	f.Add(forgedConsensus, true)
	f.Add("r a b 2026-11-25 11:00:00 203.0.113.1 9001 0\n\tr x y 2026-11-25 11:00:00 203.0.113.2 443 0\ns\u00a0Authority\n \ts Authority\nr\tz z 2026-11-25 11:00:00 203.0.113.3 80 0\r\n", false)
	f.Fuzz(func(t *testing.T, text string, private bool) {
		got, gerr := ParseNetwork(strings.NewReader(text), Options{Private: private})
		want, werr := parseNetworkByFields(text, Options{Private: private})
		if (gerr == nil) != (werr == nil) {
			t.Fatalf("error %v, splitting every line: %v", gerr, werr)
		}
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty(), cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
			cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); gerr == nil && diff != "" {
			t.Fatalf("differs from splitting every line (-want +got):\n%s", diff)
		}
	})
}

// TestNormalize: links sorted as AddrPort.Compare sorts them, once each.
func TestNormalize(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var l Links
	for i := 0; i < 5000; i++ {
		var a netip.Addr
		switch rng.IntN(3) {
		case 0:
			a = netip.AddrFrom4([4]byte{byte(rng.IntN(4)), 0, byte(rng.IntN(3)), byte(rng.IntN(256))})
		case 1:
			a = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(rng.IntN(256))})
		default: // IPv4-mapped IPv6: an IPv6 address, after every IPv4 one
			a = netip.AddrFrom16(netip.AddrFrom4([4]byte{1, 2, 3, byte(rng.IntN(256))}).As16())
		}
		l = append(l, netip.AddrPortFrom(a, uint16(rng.IntN(4))*8000))
	}
	want := slices.Clone(l)
	slices.SortFunc(want, netip.AddrPort.Compare)
	want = slices.Compact(want)
	if diff := cmp.Diff(want, l.normalize(), cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
		t.Fatalf("normalize (-want +got):\n%s", diff)
	}
}
