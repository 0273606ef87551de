package relays

import (
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/relayfw/relayfw/firewall/ipt"
	"github.com/relayfw/relayfw/firewall/nft"
	"github.com/relayfw/relayfw/rules"
)

func strs(l Links) []string {
	var out []string
	for _, ap := range l {
		out = append(out, ap.String())
	}
	return out
}

func TestReadConsensus(t *testing.T) {
	n, path, err := ReadNetwork("testdata", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(path, "cached-microdesc-consensus") {
		t.Errorf("read %s", path)
	}
	want := []string{"203.0.113.11:9001", "203.0.113.12:443", "203.0.113.13:25",
		"203.0.113.201:8001", "203.0.113.201:8030", "203.0.113.202:80", "203.0.113.202:443",
		"[2001:db8:1::11]:9001", "[2001:db8:1::13]:25"}
	if diff := cmp.Diff(want, strs(n.Links)); diff != "" {
		t.Fatal(diff)
	}
}

func TestFullConsensusFlavour(t *testing.T) {
	// The full flavour has a digest field before the date.
	text := "r relayA AAAA dddd 2026-11-25 11:00:00 198.51.100.9 9001 9030\n"
	n, err := ParseNetwork(strings.NewReader(text), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"198.51.100.9:9001"}, strs(n.Links)); diff != "" {
		t.Fatal(diff)
	}
}

func TestMissingConsensus(t *testing.T) {
	if _, _, err := ReadNetwork(t.TempDir(), Options{}); err == nil {
		t.Fatal("want an error for a DataDirectory without a consensus")
	}
	if _, err := ParseNetwork(strings.NewReader("garbage\n"), Options{}); err == nil {
		t.Fatal("want an error for a file without relays")
	}
}

func TestDirServerLinks(t *testing.T) {
	const fp = "1A25C6358DB91342AA51720A5038B72742732498"
	tests := []struct {
		in, kind string
		want     []string
	}{
		{"moria1 orport=9201 v3ident=F533C81CEF0BC0267857C99B2F471ADF249FA232 128.31.0.39:9231 " + fp, "authorities",
			[]string{"128.31.0.39:9201", "128.31.0.39:9231"}},
		{"tor26 orport=443 ipv6=[2a02:16a8:662:2203::1]:443 217.196.147.77:80 1A25C6358DB91342AA51 720A5038B72742732498", "authorities",
			[]string{"217.196.147.77:80", "217.196.147.77:443", "[2a02:16a8:662:2203::1]:443"}},
		{"Serge orport=9001 bridge 66.111.2.131:9030 " + fp, "authorities", []string{"66.111.2.131:9001", "66.111.2.131:9030"}},
		{"64.65.62.122 orport=443 id=" + fp, "fallbacks", []string{"64.65.62.122:443"}},
	}
	for _, tt := range tests {
		links, _, err := DirServers([]string{tt.in}, tt.kind, false)
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, strs(links)); diff != "" {
			t.Errorf("%q:\n%s", tt.in, diff)
		}
	}
	for _, bad := range []string{"orport=443 id=x", "203.0.113.1:80 id=x", "203.0.113.1 orport=70000 id=" + fp} {
		if _, _, err := DirServers([]string{bad}, "fallbacks", false); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

func TestCompiledInLists(t *testing.T) {
	auth, _, err := DirServers(nil, "authorities", false)
	if err != nil {
		t.Fatal(err)
	}
	fb, _, err := DirServers(nil, "fallbacks", false)
	if err != nil {
		t.Fatal(err)
	}
	// tor 0.4.9.11 has 10 authorities (2-3 links each) and 200 fallbacks.
	if len(auth) < 20 || len(fb) < 200 {
		t.Fatalf("%d authority links, %d fallback links", len(auth), len(fb))
	}
	if !containsAddr(auth, "128.31.0.39:9201") {
		t.Error("moria1's ORPort is missing")
	}
	own, _, err := DirServers([]string{"test orport=5000 203.0.113.250:7000 1A25C6358DB91342AA51720A5038B72742732498"}, "authorities", false)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"203.0.113.250:5000", "203.0.113.250:7000"}, strs(own)); diff != "" {
		t.Fatalf("torrc DirAuthority replaces the defaults:\n%s", diff)
	}
}

func containsAddr(l Links, s string) bool {
	for _, ap := range l {
		if ap.String() == s {
			return true
		}
	}
	return false
}

func TestMerge(t *testing.T) {
	a := Links{netip.MustParseAddrPort("203.0.113.1:1"), netip.MustParseAddrPort("203.0.113.1:2")}
	b := Links{netip.MustParseAddrPort("203.0.113.1:1")}
	got := Merge(a, b)
	if diff := cmp.Diff(Links{a[0], a[1]}, got, cmpopts.EquateComparable(netip.AddrPort{})); diff != "" {
		t.Fatal(diff)
	}
}

// forgedConsensus is what the user tor runs as can write into its
// DataDirectory: entries the link-address rule must keep out of the
// firewall, among good ones.
const forgedConsensus = "network-status-version 3 microdesc\nvote-status consensus\n" +
	"valid-after 2026-11-25 12:00:00\nvalid-until 2026-11-25 15:00:00\n" +
	"dir-source x y z 192.0.2.99 22 3389\n" +
	"dir-source meta y z 169.254.169.254 80 443\n" +
	"r good AAAA 2026-11-25 11:00:00 203.0.113.11 9001 0\na [2001:db8:1::11]:9001\ns Fast Running Valid\n" +
	"r evil AAAA 2026-11-25 11:00:00 198.51.100.25 25 0\ns Fast Running Valid\n" +
	"r meta AAAA 2026-11-25 11:00:00 169.254.169.254 80 0\na [2001:db8::30%x},tcp:1]:443\ns Authority Running\n" +
	"r lo AAAA 2026-11-25 11:00:00 127.0.0.1 9001 0\na [::ffff:169.254.169.254]:80\n" +
	"r bcast AAAA 2026-11-25 11:00:00 255.255.255.255 9001 0\na [64:ff9b::a9fe:a9fe]:80\n" +
	"r mcast AAAA 2026-11-25 11:00:00 224.0.0.1 9001 0\na [2002:a9fe:a9fe::1]:80\na [2001:db8::31]:80\n" +
	"r zero AAAA 2026-11-25 11:00:00 203.0.113.12 0 0\na [fe80::1%eth0]:443\n" +
	"r v6 AAAA 2026-11-25 11:00:00 2001:db8::32 443 0\na 203.0.113.13:443\n"

func FuzzParseConsensus(f *testing.F) {
	data, _ := os.ReadFile("testdata/cached-microdesc-consensus")
	f.Add(string(data), false)
	f.Add(forgedConsensus, false)
	f.Add(forgedConsensus, true)
	ld := newLoader()
	if ld.why != "" {
		if os.Getenv("CI") != "" {
			f.Fatalf("CI must check that the printed nft and ipset text loads, but cannot: %s", ld.why)
		}
		f.Logf("NOT CHECKED: whether the printed nft and ipset text loads (%s)", ld.why)
	}
	f.Fuzz(func(t *testing.T, text string, private bool) {
		n, err := ParseNetwork(strings.NewReader(text), Options{Private: private})
		if err != nil {
			return
		}
		for _, ap := range n.Links {
			if err := rules.CheckRelayLink(ap, private); err != nil {
				t.Fatalf("link %v: %v", ap, err)
			}
		}
		// Authorities and relays are addresses the links hold.
		addrs := n.Links.Addrs()
		for _, a := range append(slices.Clone(n.Authorities), n.Relays...) {
			if _, found := slices.BinarySearchFunc(addrs, a, netip.Addr.Compare); !found {
				t.Fatalf("address %v is not a link's", a)
			}
		}
		// The firewall holds every link, and its text loads.
		rs := rules.Compile(rules.ExitPolicy{}, rules.Host{RelayLinks: n.Links, PrivateRelayLinks: private})
		if err := rs.Validate(); err != nil {
			t.Fatal(err)
		}
		elements := 0
		for _, s := range rs.Sets {
			elements += len(s.Elements)
		}
		if elements != len(n.Links) {
			t.Fatalf("%d links, %d set elements", len(n.Links), elements)
		}
		nftText, err := nft.Render(rs)
		if err != nil {
			t.Fatal(err)
		}
		if err := ld.nftCheck(nftText); err != nil {
			t.Fatal(err)
		}
		if err := ld.ipsetRestore(ipt.RenderIpsets(rs)); err != nil {
			t.Fatal(err)
		}
	})
}

func TestReadNetworkAuthoritiesAndRelays(t *testing.T) {
	n, _, err := ReadNetwork("testdata", Options{})
	if err != nil {
		t.Fatal(err)
	}
	addrs := func(as []netip.Addr) []string {
		var out []string
		for _, a := range as {
			out = append(out, a.String())
		}
		return out
	}
	if diff := cmp.Diff([]string{"203.0.113.201", "203.0.113.202"}, addrs(n.Authorities)); diff != "" {
		t.Errorf("authorities (-want +got):\n%s", diff)
	}
	want := []string{"203.0.113.11", "203.0.113.12", "203.0.113.13", "2001:db8:1::11", "2001:db8:1::13"}
	if diff := cmp.Diff(want, addrs(n.Relays)); diff != "" {
		t.Errorf("relays (-want +got):\n%s", diff)
	}
	// A relay with the Authority flag is an authority too, whichever
	// address it is listed with.
	text := "r a A 2026-11-25 11:00:00 192.0.2.7 9001 0\na [2001:db8::7]:9001\ns Authority Running\nr b B 2026-11-25 11:00:00 192.0.2.8 9001 0\ns Running\n"
	n, err = ParseNetwork(strings.NewReader(text), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"192.0.2.7", "2001:db8::7"}, addrs(n.Authorities)); diff != "" {
		t.Errorf("flagged authorities (-want +got):\n%s", diff)
	}
}
