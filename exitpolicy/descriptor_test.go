package exitpolicy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/relayfw/relayfw/internal/digits"
	"github.com/relayfw/relayfw/torconf"
)

func optionsFromText(t *testing.T, text string) torconf.Options {
	t.Helper()
	lines, err := torconf.Parse(nil, "torrc", text)
	if err != nil {
		t.Fatal(err)
	}
	o, err := torconf.OptionsFromLines(lines)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func descriptorOf(t *testing.T, text string) (Descriptor, Effective) {
	t.Helper()
	o := optionsFromText(t, text)
	eff, err := FromOptions(o, HostFacts{})
	if err != nil {
		t.Fatal(err)
	}
	return eff.Descriptor(o), eff
}

// runTimeSlack is how much shorter than the estimate tor's descriptor can
// be for reasons no torrc says: uptime under 8 digits (7), an observed
// bandwidth under 10 digits (9), no overload-general line (39), as in a
// relay that has just started.
const runTimeSlack = 7 + 9 + 39

// TestDescriptorAgainstTor compares the estimate with a server descriptor
// tor 0.4.9.11 built for testdata/descriptor/tor-0.4.9.11.torrc (fetched
// from its DirPort, /tor/server/authority, in a network namespace with
// only lo): the policy lines and the ipv6-policy line are tor's, byte for
// byte, and the whole is tor's size but for what tor decides at run time.
// The integration test TestDescriptorSize does the same with a policy of
// thousands of entries and the tor installed.
func TestDescriptorAgainstTor(t *testing.T) {
	torrc, err := os.ReadFile("testdata/descriptor/tor-0.4.9.11.torrc")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("testdata/descriptor/tor-0.4.9.11.desc")
	if err != nil {
		t.Fatal(err)
	}
	// What the authorities count: up to the signature's last newline.
	desc := strings.TrimRight(string(raw), "\n") + "\n"
	d, eff := descriptorOf(t, string(torrc))

	var torPolicy []string
	var torSummary string
	for _, l := range strings.Split(desc, "\n") {
		switch {
		case strings.HasPrefix(l, "accept "), strings.HasPrefix(l, "reject "):
			torPolicy = append(torPolicy, l)
		case strings.HasPrefix(l, "ipv6-policy "):
			torSummary = l
		}
	}
	var ours []string
	for _, e := range eff.Policy.Entries {
		if !e.IPv6() {
			ours = append(ours, e.String())
		}
	}
	if diff := cmp.Diff(torPolicy, ours); diff != "" {
		t.Errorf("IPv4 policy lines (-tor +relayfw):\n%s", diff)
	}
	if bytes := len(strings.Join(torPolicy, "\n")) + 1; d.PolicyBytes != bytes || d.PolicyEntries != len(torPolicy) {
		t.Errorf("policy %d bytes, %d entries; tor's %d bytes, %d lines", d.PolicyBytes, d.PolicyEntries, bytes, len(torPolicy))
	}
	if want := "ipv6-policy " + eff.Policy.Summarize(true).Text; torSummary != want || d.IPv6SummaryBytes != len(want)+1 {
		t.Errorf("tor's %q, relayfw's %q (%d bytes)", torSummary, want, d.IPv6SummaryBytes)
	}
	if slack := d.Size - len(desc); slack < 0 || slack > runTimeSlack {
		t.Errorf("estimate %d bytes, tor's descriptor %d: want the estimate 0 to %d bytes over", d.Size, len(desc), runTimeSlack)
	}
	t.Logf("estimate %d bytes, tor's descriptor %d bytes", d.Size, len(desc))
}

// TestDescriptorParts: what each torrc option adds, as tor writes it.
func TestDescriptorParts(t *testing.T) {
	const base = "ORPort 198.51.100.7:9001\nAddress 198.51.100.7\nExitRelay 1\nExitPolicy accept *:80,reject *:*\n"
	baseSize, _ := descriptorOf(t, base)
	fp := func(c string) string { return "$" + strings.Repeat(c, 40) }
	tests := []struct {
		name, extra string
		more        int
	}{
		{"nothing", "", 0},
		{"nickname", "Nickname exit1\n", len("exit1") - len("Unnamed")},
		{"contact", "ContactInfo ops@example.org\n", len("contact ops@example.org\n")},
		{"family of two", "MyFamily " + fp("A") + "," + fp("b") + "\n", len("family ") + 3*41 + 2 + 1},
		{"family: duplicates, own nickname and ~nick", "Nickname exit1\nMyFamily " + fp("A") + "," + fp("a") + "~x,EXIT1\n", len("family ") + 2*41 + 1 + 1 - len("Unnamed") + len("exit1")},
		{"family by nickname", "MyFamily other\n", len("family other ") + 41 + 1},
		{"family ids", "FamilyId AAAA\nFamilyId BBBB\n", 2 * 257},
		{"ipv6 exit", "IPv6Exit 1\n", len("ipv6-policy accept 80\n")},
		{"ipv6 orport", "ORPort [2001:db8::7]:443\n", len("or-address [2001:db8::7]:443\n")},
		{"orport auto", "ORPort auto\n", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := descriptorOf(t, base+tt.extra)
			if got := d.Size - baseSize.Size; got != tt.more {
				t.Errorf("adds %d bytes, want %d", got, tt.more)
			}
		})
	}
	// The whole, from its parts: the fixed part, then the router line,
	// then the policy lines ("reject 0.0.0.0/8:*" ... "reject *:*").
	d, eff := descriptorOf(t, base)
	policy := 0
	for _, e := range eff.Policy.Entries {
		if !e.IPv6() {
			policy += len(e.String()) + 1
		}
	}
	if want := descFixed + len("router Unnamed 198.51.100.7 9001 0 0\n") + policy; d.Size != want || d.Over() {
		t.Errorf("size %d, want %d, not over", d.Size, want)
	}
	// An unknown address and port count at their longest; a relay that
	// exits nowhere writes "reject *:*".
	d, _ = descriptorOf(t, "ORPort auto\nExitRelay 0\n")
	if want := descFixed + len("router Unnamed 255.255.255.255 65535 0 0\n") + len("reject *:*\n"); d.Size != want || d.PolicyEntries != 1 {
		t.Errorf("non-exit: size %d (%d entries), want %d", d.Size, d.PolicyEntries, want)
	}
}

// blockList is a policy of IPv4 rejects, the kind an operator copies
// from a block list: pairs of /25 halves of distinct /24s (which merge),
// and single /24s (which do not), none of them inside tor's private
// networks or the relay's address (tor would drop or keep those
// otherwise), then accepts.
func blockList(seed uint64, pairs, singles int) string {
	r := rand.New(rand.NewPCG(seed, seed))
	seen := map[[3]byte]bool{}
	var entries []string
	next := func() [3]byte {
		for {
			b := [3]byte{byte(1 + r.IntN(222)), byte(r.IntN(256)), byte(r.IntN(256))}
			private := b[0] == 0 || b[0] == 10 || b[0] == 127 || (b[0] == 169 && b[1] == 254) ||
				(b[0] == 172 && b[1]&0xf0 == 16) || (b[0] == 192 && b[1] == 168) || b == [3]byte{198, 51, 100}
			if !private && !seen[b] {
				seen[b] = true
				return b
			}
		}
	}
	for range pairs {
		b := next()
		entries = append(entries, fmt.Sprintf("reject %d.%d.%d.0/25:*", b[0], b[1], b[2]), fmt.Sprintf("reject %d.%d.%d.128/25:*", b[0], b[1], b[2]))
	}
	for range singles {
		b := next()
		entries = append(entries, fmt.Sprintf("reject %d.%d.%d.0/24:*", b[0], b[1], b[2]))
	}
	r.Shuffle(len(entries), func(i, j int) { entries[i], entries[j] = entries[j], entries[i] })
	return strings.Join(entries, ",") + ",accept *:80,accept *:443,reject *:*"
}

// TestDescriptorLargePolicy: a block list of a few thousand entries is
// far over the limit; merging its /25 pairs saves exactly one entry per
// pair, and the bytes the pair's lines take over the /24's.
func TestDescriptorLargePolicy(t *testing.T) {
	const seed = 24
	t.Logf("seed %d", seed)
	tests := []struct {
		pairs, singles int
		over           bool
	}{
		{0, 300, false},
		{0, 3000, true},
		{1500, 1000, true},
		{200, 200, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d pairs %d singles", tt.pairs, tt.singles), func(t *testing.T) {
			policy := blockList(seed, tt.pairs, tt.singles)
			d, eff := descriptorOf(t, "ORPort 198.51.100.7:9001\nAddress 198.51.100.7\nExitRelay 1\nExitPolicy "+policy+"\n")
			// tor's own entries: 6 private, the relay's address; the
			// policy's rejects, 80, 443 and reject *:*.
			if want := 7 + 2*tt.pairs + tt.singles + 3; d.PolicyEntries != want {
				t.Errorf("%d policy entries, want %d", d.PolicyEntries, want)
			}
			if d.Over() != tt.over {
				t.Fatalf("size %d: over %v, want %v", d.Size, d.Over(), tt.over)
			}
			if !tt.over {
				if d.Merge != nil {
					t.Errorf("merge computed under the limit: %+v", d.Merge)
				}
				return
			}
			saved := 0
			for _, e := range eff.Policy.Entries {
				if e.Bits == 25 && !e.IPv6() {
					if e.Addr.As4()[3] == 0 {
						saved += len(e.String()) + 1 // the lower half goes...
					} else {
						saved += len(e.String()) - len(strings.Replace(e.String(), ".128/25", ".0/24", 1)) // ...the upper becomes the /24
					}
				}
			}
			if d.Merge == nil || d.Merge.Entries != tt.pairs || d.Merge.Bytes != saved || d.Merge.Size != d.Size-saved {
				t.Errorf("merge %+v; want %d entries, %d bytes", d.Merge, tt.pairs, saved)
			}
			msg := d.String()
			for _, want := range []string{digits.Grouped(d.Size) + " bytes", "20,000 bytes", "Router descriptor was too large.", "would not be published"} {
				if !strings.Contains(msg, want) {
					t.Errorf("message %q lacks %q", msg, want)
				}
			}
			if tt.pairs > 0 && !strings.Contains(msg, fmt.Sprintf("would save %s bytes (%s entries)", digits.Grouped(saved), digits.Grouped(tt.pairs))) {
				t.Errorf("message %q does not say what merging saves", msg)
			}
			if tt.pairs == 0 && !strings.Contains(msg, "would save nothing") {
				t.Errorf("message %q: nothing to merge", msg)
			}
		})
	}
}

func mustEntries(t *testing.T, s string) []Entry {
	t.Helper()
	if s == "" {
		return nil
	}
	e, _, err := Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestMergeRuns: which entries merge, and which must not.
func TestMergeRuns(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"halves", "reject 192.0.2.0/25:*,reject 192.0.2.128/25:*", "reject 192.0.2.0/24:*"},
		{"cascade", "reject 192.0.2.0/26:80,reject 192.0.2.192/26:80,reject 192.0.2.64/26:80,reject 192.0.2.128/26:80", "reject 192.0.2.0/24:80"},
		{"not halves of one prefix", "reject 192.0.2.128/25:*,reject 192.0.3.0/25:*", "reject 192.0.2.128/25:*,reject 192.0.3.0/25:*"},
		{"other ports", "reject 192.0.2.0/25:80,reject 192.0.2.128/25:443", "reject 192.0.2.0/25:80,reject 192.0.2.128/25:443"},
		{"an accept between", "reject 192.0.2.0/25:*,accept 198.51.100.0/24:*,reject 192.0.2.128/25:*", "reject 192.0.2.0/25:*,accept 198.51.100.0/24:*,reject 192.0.2.128/25:*"},
		{"a reject between", "reject 192.0.2.0/25:*,reject 198.51.100.0/24:80,reject 192.0.2.128/25:*", "reject 192.0.2.0/24:*,reject 198.51.100.0/24:80"},
		{"IPv6 between", "reject 192.0.2.0/25:*,reject6 [2001:db8::]/32:*,reject 192.0.2.128/25:*", "reject 192.0.2.0/24:*,reject6 [2001:db8::]/32:*"},
		{"inside", "reject 192.0.2.0/24:*,reject 192.0.2.7:*", "reject 192.0.2.0/24:*"},
		{"touching ports", "accept 192.0.2.0/24:80,accept 192.0.2.0/24:81-90,accept 192.0.2.0/24:92", "accept 192.0.2.0/24:80-90,accept 192.0.2.0/24:92"},
		{"ports, then prefixes", "accept 192.0.2.0/25:80,accept 192.0.2.128/25:80-81,accept 192.0.2.0/25:81", "accept 192.0.2.0/24:80-81"},
		{"nothing to merge keeps the text", "reject 192.0.2.77/24:*,accept *:80", "reject 192.0.2.77/24:*,accept *:80"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, _ := mergeRuns(mustEntries(t, tt.in))
			var gotText []string
			for _, e := range got {
				gotText = append(gotText, e.String())
			}
			var wantText []string
			for _, e := range mustEntries(t, tt.want) {
				wantText = append(wantText, e.String())
			}
			if diff := cmp.Diff(wantText, gotText); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestMergeKeepsMeaning: on random policies (fixed seeds), the merged
// policy decides every probe as the original does: each entry's first and
// last address and their neighbours, at each entry's port bounds and their
// neighbours.
func TestMergeKeepsMeaning(t *testing.T) {
	for seed := uint64(1); seed <= 40; seed++ {
		r := rand.New(rand.NewPCG(seed, 99))
		var parts []string
		for range 5 + r.IntN(60) {
			action := []string{"accept", "reject"}[r.IntN(2)]
			bits := 20 + r.IntN(13)
			addr := netip.AddrFrom4([4]byte{198, 51, byte(96 + r.IntN(8)), byte(r.IntN(256))})
			p, _ := addr.Prefix(bits)
			lo := 1 + r.IntN(5)*20
			hi := lo + r.IntN(3)*20
			if r.IntN(4) == 0 {
				parts = append(parts, fmt.Sprintf("%s %s:*", action, p))
			} else {
				parts = append(parts, fmt.Sprintf("%s %s:%d-%d", action, p, lo, hi))
			}
			if r.IntN(10) == 0 {
				parts = append(parts, action+"6 [2001:db8::]/32:80")
			}
		}
		orig := mustEntries(t, strings.Join(parts, ","))
		merged, _, _ := mergeRuns(orig)
		before, after := ExitPolicy{Entries: orig}, ExitPolicy{Entries: merged}
		var addrs []netip.Addr
		ports := map[uint16]bool{1: true, 65535: true}
		for _, e := range orig {
			n := e.Network()
			first := n.Addr()
			last := first
			for range 1<<(32-n.Bits()) - 1 {
				last = last.Next()
			}
			addrs = append(addrs, first, first.Prev(), last, last.Next())
			for _, p := range []int{int(e.PortMin) - 1, int(e.PortMin), int(e.PortMax), int(e.PortMax) + 1} {
				if p >= 1 && p <= 65535 {
					ports[uint16(p)] = true
				}
			}
		}
		for _, a := range addrs {
			for p := range ports {
				if b, m := before.Decide(a, p).Action, after.Decide(a, p).Action; b != m {
					t.Fatalf("seed %d: %s:%d: %s before the merge, %s after\nbefore %v\nafter %v", seed, a, p, b, m, before, after)
				}
			}
		}
	}
}

// TestMergeExampleKeepsFamily: the example merge is an ExitPolicy line to
// write, and in a torrc "*" is both families: two IPv4 halves become
// "*4", not "*" (which would accept IPv6 too with IPv6Exit).
func TestMergeExampleKeepsFamily(t *testing.T) {
	d, _ := descriptorOf(t, "ORPort 198.51.100.7:9001\nAddress 198.51.100.7\nExitRelay 1\nIPv6Exit 1\n"+
		"ExitPolicy accept 0.0.0.0/1:8080,accept 128.0.0.0/1:8080,"+blockList(24, 0, 3000)+"\n")
	if d.Merge == nil || d.Merge.Bytes == 0 {
		t.Fatalf("no merge: %+v", d.Merge)
	}
	msg := d.String()
	if want := `"accept 0.0.0.0/1:8080", "accept 128.0.0.0/1:8080" into "accept *4:8080"`; !strings.Contains(msg, want) {
		t.Errorf("message %q lacks %q", msg, want)
	}
}

// TestMergeKeepsMeaningAdversarial: TestMergeKeepsMeaning on the policies
// most likely to trip the merge (fixed seeds): /0 and /1 prefixes of both
// families, IPv6 entries interleaved, port 0 and 65535 at range bounds,
// duplicate entries; probed in both families.
func TestMergeKeepsMeaningAdversarial(t *testing.T) {
	for seed := uint64(1); seed <= 300; seed++ {
		r := rand.New(rand.NewPCG(seed, 7))
		var orig []Entry
		for range 3 + r.IntN(40) {
			e := Entry{Action: []Action{Accept, Reject}[r.IntN(2)]}
			if r.IntN(4) == 0 {
				e.Addr = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(r.IntN(2))})
				e.Bits = []int{0, 1, 32, 33, 128}[r.IntN(5)]
			} else {
				e.Addr = netip.AddrFrom4([4]byte{byte(r.IntN(2) * 128), 0, 0, byte(r.IntN(4))})
				e.Bits = []int{0, 1, 2, 30, 31, 32}[r.IntN(6)]
			}
			e.Addr = e.Network().Addr()
			e.PortMin = uint16([]int{0, 1, 2, 80, 65535}[r.IntN(5)])
			e.PortMax = max(e.PortMin, uint16([]int{0, 1, 2, 80, 81, 65535}[r.IntN(6)]))
			orig = append(orig, e)
			if r.IntN(5) == 0 {
				orig = append(orig, e)
			}
		}
		merged, _, _ := mergeRuns(orig)
		before, after := ExitPolicy{Entries: orig}, ExitPolicy{Entries: merged}
		addrs := []netip.Addr{netip.MustParseAddr("255.255.255.255"), netip.MustParseAddr("64.0.0.0"), netip.MustParseAddr("::1")}
		for _, e := range orig {
			a := e.Network().Addr()
			addrs = append(addrs, a, a.Prev(), a.Next())
		}
		for _, a := range addrs {
			if !a.IsValid() {
				continue
			}
			for _, p := range []uint16{0, 1, 2, 3, 79, 80, 81, 82, 65534, 65535} {
				if b, m := before.Decide(a, p).Action, after.Decide(a, p).Action; b != m {
					t.Fatalf("seed %d: %s:%d: %s before the merge, %s after\nbefore %v\nafter %v", seed, a, p, b, m, before, after)
				}
			}
		}
	}
}
