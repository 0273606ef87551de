package host

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/relayfw/relayfw/relays"
)

// TestRememberedNetwork: a consensus file read once is not parsed again
// while it is the same file; replaced (even with the same text), or
// read for a private network, it is. A remembered network another user
// could have written is not used.
func TestRememberedNetwork(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: relayfw remembers a consensus only as root")
	}
	sys := testSystem(t)
	in := newInputs(Options{System: sys})
	dir := t.TempDir()
	consensus := filepath.Join(dir, "cached-microdesc-consensus")
	text := "valid-after 2026-11-25 12:00:00\nr a AAAA 2026-11-25 11:00:00 203.0.113.11 9001 0\na [2001:db8::11]:443\ns Authority Running\n"
	if err := os.WriteFile(consensus, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	parsed, _, err := relays.ReadNetwork(dir, relays.Options{})
	if err != nil {
		t.Fatal(err)
	}
	read := func(private bool) relays.Network {
		t.Helper()
		nw, path, err := in.readNetwork(dir, relays.Options{Private: private})
		if err != nil || path != consensus {
			t.Fatalf("read %s: %v", path, err)
		}
		return nw
	}
	eq := cmp.Comparer(func(a, b netip.Addr) bool { return a == b })
	eqp := cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })
	if diff := cmp.Diff(parsed, read(false), eq, eqp); diff != "" {
		t.Fatalf("first read (-parsed +got):\n%s", diff)
	}
	if diff := cmp.Diff(parsed, read(false), eq, eqp); diff != "" {
		t.Fatalf("remembered (-parsed +got):\n%s", diff)
	}
	// Mark the remembered network, to see whether it is used.
	file := in.networkPath(consensus)
	var r rememberedNetwork
	data, _ := os.ReadFile(file)
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	marked := netip.MustParseAddrPort("198.51.100.1:443")
	r.Links = packLinks(relays.Links{marked})
	data, _ = json.Marshal(r)
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := read(false).Links; len(got) != 1 || got[0] != marked {
		t.Fatalf("the same file was parsed again: %v", got)
	}
	if got := read(true).Links; len(got) == 1 && got[0] == marked {
		t.Fatal("a private network's read used the public one's")
	}
	if err := os.WriteFile(file, data, 0o600); err != nil { // marked again
		t.Fatal(err)
	}
	if err := os.Chmod(file, 0o666); err != nil {
		t.Fatal(err)
	}
	if got := read(false).Links; len(got) == 1 && got[0] == marked {
		t.Fatal("used a remembered network others can write")
	}
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	// Written anew as tor does, the same text in a new file renamed over
	// the old.
	if err := os.WriteFile(consensus+".tmp", []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(consensus+".tmp", consensus); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(parsed, read(false), eq, eqp); diff != "" {
		t.Fatalf("after the file was written anew (-parsed +got):\n%s", diff)
	}
}
