package host

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/relayfw/relayfw/config"
	"github.com/relayfw/relayfw/exitpolicy"
	"github.com/relayfw/relayfw/ruleset"
)

// TestMinimalRuleset: the boot's minimal firewall lets no exit traffic
// out, keeps SSH and the host allowances, and gives relay links to the
// tor users that can be known — a readable torrc's User, else its defaults
// file's — and to nobody else.
func TestMinimalRuleset(t *testing.T) {
	sys := testSystem(t)
	sys.LookupUID = func(name string) (uint32, error) {
		uids := map[string]uint32{"debian-tor": 101, "alice": 1001, "root": 0}
		if uid, ok := uids[name]; ok {
			return uid, nil
		}
		return 0, fmt.Errorf("unknown user %s", name)
	}
	dir := t.TempDir()
	defaults := filepath.Join(dir, "defaults")
	if err := os.WriteFile(defaults, []byte("DataDirectory "+dir+"\nUser debian-tor\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	none := ""
	const broken = "ORPort 9001\nExitRelay 1\nExitPolcy accept *:80\n"
	for _, tc := range []struct {
		name      string
		torrc     string
		defaults  *string
		wantUsers []string
		wantUIDs  []uint32 // of the relay-link rules
	}{
		{"broken torrc, defaults with User", broken, &defaults, []string{"debian-tor"}, []uint32{101}},
		{"broken torrc, no defaults", broken, &none, nil, nil},
		{"readable torrc with User", "ORPort 9001\nExitRelay 1\nUser alice\nExitPolicy accept *:80\n", &defaults, []string{"alice"}, []uint32{1001}},
		{"readable torrc without User", "ORPort 9001\nExitRelay 1\nExitPolicy accept *:80\n", &none, []string{"root"}, []uint32{0}},
		{"a User that does not exist", "ORPort 9001\nUser mallory\n", &none, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			torrc := writeTorrc(t, tc.torrc)
			cfg := config.Config{Allow: config.Allow{Resolvers: []string{"192.0.2.53"}}}
			rs, users := MinimalRuleset(context.Background(), Options{Torrcs: []string{torrc}, DefaultsTorrc: tc.defaults, Config: cfg, System: sys})
			if err := rs.Validate(); err != nil {
				t.Fatalf("invalid: %v", err)
			}
			if !slices.Equal(users, tc.wantUsers) {
				t.Errorf("users %v, want %v", users, tc.wantUsers)
			}
			if len(rs.ExitMaps) != 0 {
				t.Errorf("exit maps: %v", rs.ExitMaps)
			}
			var uids []uint32
			names := map[string]bool{}
			for _, r := range rs.Outbound {
				names[r.Name] = true
				switch r.Class {
				case ruleset.ClassExit:
					t.Errorf("an exit rule: %+v", r)
				case ruleset.ClassRelayLink:
					if r.SocketUID == nil {
						t.Errorf("relay links for every user: %+v", r)
					} else if !slices.Contains(uids, *r.SocketUID) {
						uids = append(uids, *r.SocketUID)
					}
				}
			}
			if !slices.Equal(uids, tc.wantUIDs) {
				t.Errorf("relay links for uids %v, want %v", uids, tc.wantUIDs)
			}
			for _, want := range []string{"loopback", "established", "midstream", "icmpv6-nd", "dns-udp4", "dns-tcp4", "dhcp4", "ntp", "reject-tcp", "reject"} {
				if !names[want] {
					t.Errorf("no rule %s", want)
				}
			}
			// An exit port is rejected for tor's user and for root alike.
			for _, uid := range []uint32{0, 101, 1001} {
				p := ruleset.Packet{Dst: netip.MustParseAddr("203.0.113.5"), Proto: "tcp", DstPort: 80, SYN: true, UID: &uid}
				if d := rs.Decide(p).Action; d != ruleset.Reject {
					t.Errorf("TCP 80 for uid %d: %s", uid, d)
				}
			}
		})
	}
}

// TestValidLastGood: the boot falls back only to a last good firewall a
// backend can install as it is.
func TestValidLastGood(t *testing.T) {
	sys := testSystem(t)
	if _, err := sys.ValidLastGood(); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("none recorded: %v", err)
	}
	good := ruleset.Compile(exitpolicy.ExitPolicy{}, ruleset.DefaultHost())
	bad := good
	bad.Outbound = append(slices.Clone(good.Outbound), ruleset.Rule{Name: "x", Set: "missing", Action: ruleset.Accept})
	old := good
	old.Version = 1
	for _, tc := range []struct {
		name    string
		backend string
		rs      ruleset.Ruleset
		ok      bool
	}{
		{"valid", "nftables", good, true},
		{"a rule naming a missing set", "nftables", bad, false},
		{"an older format", "iptables", old, false},
		{"an unknown backend", "pf", good, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := sys.SaveLastGood(tc.backend, tc.rs); err != nil {
				t.Fatal(err)
			}
			if _, err := sys.ValidLastGood(); (err == nil) != tc.ok {
				t.Fatalf("ValidLastGood: %v, want ok %v", err, tc.ok)
			}
		})
	}
	if err := os.WriteFile(sys.LastGoodPath(), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := sys.ValidLastGood(); err == nil {
		t.Fatal("a damaged record accepted")
	}
}
