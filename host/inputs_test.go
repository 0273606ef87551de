package host

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestResolvedUpstreams(t *testing.T) {
	upstream := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(upstream, []byte("# systemd-resolved\nnameserver 192.0.2.1\nnameserver 2001:db8::1%eth0\nsearch example.org\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	in := &Inputs{}
	stub := []netip.Addr{netip.MustParseAddr("127.0.0.53")}
	got := in.withResolvedUpstreams(stub, upstream)
	want := []netip.Addr{netip.MustParseAddr("127.0.0.53"), netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}
	if diff := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Fatal(diff)
	}
	for _, other := range []string{"192.0.2.9", "127.0.0.1"} {
		// A remote resolver, or a recursive one on loopback: no upstreams.
		if got := in.withResolvedUpstreams([]netip.Addr{netip.MustParseAddr(other)}, upstream); len(got) != 1 {
			t.Fatalf("%s needs no upstreams: %v", other, got)
		}
	}
}

func TestInboundSetSize(t *testing.T) {
	for mem, want := range map[uint64]uint{0: 1 << 18, 1 << 30: 1 << 18, 4 << 30: 1 << 19, 8 << 30: 1 << 19, 16 << 30: 1 << 20, 64 << 30: 1 << 20} {
		if got := InboundSetSize(mem); got != want {
			t.Errorf("%d bytes: %d, want %d", mem, got, want)
		}
	}
}
