package ipt

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
)

// Entry layouts as the kernel returns them: struct ipt_entry and
// ip6t_entry are 112 and 168 bytes with their target_offset at 88 and 140.
const (
	ipv4EntryLen, ipv4TargetOffset = 112, 88
	ipv6EntryLen, ipv6TargetOffset = 168, 140
)

// tableEntry is one rule of a legacy table: its target's name ("" for
// a verdict or a jump) and data (an ERROR target's chain name).
type tableEntry struct{ target, data string }

// legacyBlob lays entries out as IPT_SO_GET_ENTRIES returns them, each
// entry's target after entryLen bytes of match-free header.
func legacyBlob(entryLen, targetOffset int, entries ...tableEntry) []byte {
	var blob []byte
	for _, e := range entries {
		dataLen := 8 // a verdict (int), padded
		if e.target == "ERROR" {
			dataLen = 32 // errorname[30], padded
		}
		target := make([]byte, targetHeaderLen+dataLen)
		binary.NativeEndian.PutUint16(target, uint16(len(target)))
		copy(target[2:2+targetNameLen], e.target)
		copy(target[targetHeaderLen:], e.data)
		entry := make([]byte, entryLen, entryLen+len(target))
		binary.NativeEndian.PutUint16(entry[targetOffset:], uint16(entryLen))
		binary.NativeEndian.PutUint16(entry[targetOffset+2:], uint16(entryLen+len(target)))
		blob = append(blob, append(entry, target...)...)
	}
	return blob
}

// builtins is a filter table's built-in chains' policies and the table's
// end, with extra (user chains and rules) before the end.
func builtins(extra ...tableEntry) []tableEntry {
	out := []tableEntry{{"", ""}, {"", ""}, {"", ""}}
	return append(append(out, extra...), tableEntry{"ERROR", "ERROR"})
}

func TestHasOwnedChain(t *testing.T) {
	tests := []struct {
		name    string
		entries []tableEntry
		want    bool
	}{
		{"empty table", builtins(), false},
		{"relayfw's output chain", builtins(tableEntry{"ERROR", Chain}, tableEntry{"", ""}), true},
		{"relayfw's input chain", builtins(tableEntry{"ERROR", InputChain}), true},
		{"relayfw's inbound chain", builtins(tableEntry{"ERROR", InboundChain}), true},
		{"another user chain", builtins(tableEntry{"ERROR", "DOCKER"}, tableEntry{"", ""}), false},
		{"a chain whose name starts as relayfw's", builtins(tableEntry{"ERROR", Chain + "-X"}), false},
		{"relayfw's name as another target's data", builtins(tableEntry{"LOG", Chain}), false},
	}
	for _, tt := range tests {
		for _, fam := range []struct {
			name                   string
			entryLen, targetOffset int
		}{{"ipv4", ipv4EntryLen, ipv4TargetOffset}, {"ipv6", ipv6EntryLen, ipv6TargetOffset}} {
			t.Run(tt.name+"/"+fam.name, func(t *testing.T) {
				got, err := hasOwnedChain(legacyBlob(fam.entryLen, fam.targetOffset, tt.entries...), fam.targetOffset)
				if err != nil || got != tt.want {
					t.Errorf("hasOwnedChain = %v, %v; want %v", got, err, tt.want)
				}
			})
		}
	}
}

func TestHasOwnedChainRefusesBrokenBlobs(t *testing.T) {
	good := legacyBlob(ipv4EntryLen, ipv4TargetOffset, builtins(tableEntry{"ERROR", "DOCKER"})...)
	setNext := func(next uint16) []byte {
		b := append([]byte(nil), good...)
		binary.NativeEndian.PutUint16(b[ipv4TargetOffset+2:], next)
		return b
	}
	tests := []struct {
		name string
		blob []byte
	}{
		{"truncated header", good[:ipv4TargetOffset+2]},
		{"truncated target", good[:len(good)-1]},
		{"zero entry length", setNext(0)},
		{"entry shorter than its target", setNext(ipv4EntryLen + 1)},
		{"entry past the end", setNext(uint16(len(good) + 8))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := hasOwnedChain(tt.blob, ipv4TargetOffset); err == nil {
				t.Errorf("hasOwnedChain = %v, nil; want an error", got)
			}
		})
	}
}

func TestListsTable(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		content *string // nil: no file
		want    bool
	}{
		{"no list: no module", nil, false},
		{"empty", ptr(""), false},
		{"filter", ptr("filter\n"), true},
		{"filter among others", ptr("nat\nfilter\nmangle\n"), true},
		{"only others", ptr("nat\nmangle\nraw\n"), false},
		{"a longer name", ptr("filterx\n"), false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, string(rune('a'+i)))
			if tt.content != nil {
				if err := os.WriteFile(path, []byte(*tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := listsTable(path, "filter")
			if err != nil || got != tt.want {
				t.Errorf("listsTable = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestSetNameOf(t *testing.T) {
	attrs := func(f func(*netlink.AttributeEncoder)) []byte {
		ae := netlink.NewAttributeEncoder()
		f(ae)
		b, err := ae.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return append([]byte{2, 0, 0, 0}, b...)
	}
	tests := []struct {
		name    string
		data    []byte
		want    string
		wantErr bool
	}{
		{"name after the protocol", attrs(func(ae *netlink.AttributeEncoder) {
			ae.Uint8(ipsetAttrProtocol, 7)
			ae.String(ipsetAttrSetname, "relayfw-links4")
		}), "relayfw-links4", false},
		{"no name", attrs(func(ae *netlink.AttributeEncoder) { ae.Uint8(ipsetAttrProtocol, 7) }), "", false},
		{"short header", []byte{2, 0}, "", true},
		{"broken attribute", []byte{2, 0, 0, 0, 9, 0, 2, 0}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := setNameOf(tt.data)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("setNameOf = %q, %v; want %q (error %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestDetectCombines(t *testing.T) {
	type probe = func(context.Context) (bool, error)
	found := func(context.Context) (bool, error) { return true, nil }
	none := func(context.Context) (bool, error) { return false, nil }
	failed := func(context.Context) (bool, error) { return false, errors.New("not permitted") }
	tests := []struct {
		name    string
		probes  []probe
		want    Presence
		wantErr bool
	}{
		{"none anywhere", []probe{none, none, none}, Absent, false},
		{"found by the last", []probe{none, none, found}, Present, false},
		{"found although another failed", []probe{failed, found, none}, Present, false},
		{"one failed, none found", []probe{none, failed, none}, Unknown, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := detect(context.Background(), tt.probes...)
			if diff := cmp.Diff(tt.want, got); diff != "" || (err != nil) != tt.wantErr {
				t.Errorf("detect = %v, %v; want %v (error %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
