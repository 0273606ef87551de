package host

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/relayfw/relayfw/exitpolicy"
	"github.com/relayfw/relayfw/firewall/fake"
	"github.com/relayfw/relayfw/ruleset"
)

// consensusInputs loads a relay's inputs whose DataDirectory holds what
// setup puts there, logging into log.
func consensusInputs(t *testing.T, setup func(dataDir string), now time.Time, log *bytes.Buffer) *Inputs {
	t.Helper()
	dir := t.TempDir()
	torrc := filepath.Join(dir, "torrc")
	if err := os.WriteFile(torrc, []byte("ORPort 9001\nExitRelay 1\nUser 101\nExitPolicy accept *:80,reject *:*\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "tor")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	setup(data)
	cfg := DefaultConfig()
	cfg.DataDirectory = data
	cfg.Allow.Resolvers = []string{"192.0.2.53"}
	off := false
	cfg.Allow.Updates = &off
	in, err := Load(context.Background(), Options{Torrcs: []string{torrc}, Config: cfg, Now: func() time.Time { return now },
		Log: slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func writeConsensus(text string) func(string) {
	return func(dir string) {
		if err := os.WriteFile(filepath.Join(dir, "cached-microdesc-consensus"), []byte(text), 0o644); err != nil {
			panic(err)
		}
	}
}

const goodConsensus = "network-status-version 3 microdesc\nvalid-after 2026-11-25 12:00:00\nfresh-until 2026-11-25 13:00:00\nvalid-until 2026-11-25 15:00:00\n" +
	"r relayA AAAA 2026-11-25 11:00:00 203.0.113.11 9001 0\ns Fast Running Valid\n"

func relays4(rs ruleset.Ruleset) []string {
	s, _ := rs.Set("relays4")
	var out []string
	for _, e := range s.Elements {
		out = append(out, netip.AddrPortFrom(e.AddrFirst, e.Ports.First).String())
	}
	return out
}

func element(s string) ruleset.Region {
	ap := netip.MustParseAddrPort(s)
	return ruleset.Region{AddrFirst: ap.Addr(), AddrLast: ap.Addr(), Ports: ruleset.PortRange{First: ap.Port(), Last: ap.Port()}}
}

func warnings(log *bytes.Buffer) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(log.String()), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// TestRefusedConsensusKeepsInstalledLinks: a FIFO where the consensus
// belongs is refused with one warning; the ruleset gets the authorities
// and fallbacks, and with a backend the relay links it has installed
// (those the link-address rule accepts) stay.
func TestRefusedConsensusKeepsInstalledLinks(t *testing.T) {
	var log bytes.Buffer
	in := consensusInputs(t, func(dir string) {
		if err := syscall.Mkfifo(filepath.Join(dir, "cached-microdesc-consensus"), 0o644); err != nil {
			t.Fatal(err)
		}
	}, time.Now(), &log)
	rs, _ := in.Ruleset()
	if w := warnings(&log); len(w) != 1 || !strings.Contains(w[0], "refused: not a regular file (a FIFO)") || !strings.Contains(w[0], "installed stay") {
		t.Errorf("want one warning about the refused consensus, got %q", w)
	}
	if !in.ConsensusRefused() {
		t.Fatal("ConsensusRefused: false")
	}
	st := in.Consensus()
	if len(st) != 1 || st[0].State != ConsensusRefused || !strings.Contains(st[0].Summary(), "FIFO") {
		t.Errorf("consensus state %+v", st)
	}
	compiled := relays4(rs)
	if len(compiled) < 200 || strings.Contains(strings.Join(compiled, " "), "203.0.113.") {
		t.Fatalf("%d links: want the authorities and fallbacks only", len(compiled))
	}

	// The kernel has links from the consensus before, and one forged by
	// an older relayfw: the first stay, the forged one goes.
	b := holding(rs)
	if err := b.SetElements("relays4", []ruleset.Region{element("203.0.113.11:9001"), element("169.254.169.254:80")}); err != nil {
		t.Fatal(err)
	}
	kept, err := in.WithInstalledLinks(context.Background(), b, rs)
	if err != nil {
		t.Fatal(err)
	}
	got := relays4(kept)
	want := append([]string{"203.0.113.11:9001"}, compiled...)
	if diff := cmp.Diff(len(want), len(got)); diff != "" || !strings.Contains(strings.Join(got, " "), "203.0.113.11:9001") ||
		strings.Contains(strings.Join(got, " "), "169.254.") {
		t.Errorf("kept links: %d, want %d (the installed 203.0.113.11:9001, not 169.254.169.254:80)", len(got), len(want))
	}
	if err := kept.Validate(); err != nil {
		t.Fatal(err)
	}
	// A fresh host: nothing installed, the authorities and fallbacks.
	fresh, err := in.WithInstalledLinks(context.Background(), fake.New("nftables"), rs)
	if err != nil || len(relays4(fresh)) != len(compiled) {
		t.Errorf("fresh host: %v, %d links, want %d", err, len(relays4(fresh)), len(compiled))
	}

	// A consensus read: the kernel is not asked, the ruleset is as compiled.
	log.Reset()
	in = consensusInputs(t, writeConsensus(goodConsensus), time.Date(2026, 11, 25, 13, 30, 0, 0, time.UTC), &log)
	rs, _ = in.Ruleset()
	reads := b.Calls(fake.OpRelayLinks)
	same, err := in.WithInstalledLinks(context.Background(), b, rs)
	if err != nil || b.Calls(fake.OpRelayLinks) != reads || len(relays4(same)) != len(relays4(rs)) {
		t.Errorf("consensus read: %v, %d kernel reads; want the ruleset as compiled", err, b.Calls(fake.OpRelayLinks)-reads)
	}
}

// TestKeepInstalledTrusted: with inbound protection, the trusted sources
// installed stay too.
func TestKeepInstalledTrusted(t *testing.T) {
	rs := ruleset.Compile(exitpolicy.ExitPolicy{}, ruleset.Host{Inbound: &ruleset.Inbound{Endpoints: []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:9001")},
		Trusted: []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32")}}})
	installed := map[string][]ruleset.Region{ruleset.InboundSetName("trust", ruleset.IPv4): {
		{AddrFirst: netip.MustParseAddr("192.0.2.2"), AddrLast: netip.MustParseAddr("192.0.2.3")},
		{AddrFirst: netip.MustParseAddr("203.0.113.7"), AddrLast: netip.MustParseAddr("203.0.113.7")}}}
	got := keepInstalled(rs, installed).Inbound.TrustedOf(ruleset.IPv4)
	want := []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("192.0.2.2/31"), netip.MustParsePrefix("203.0.113.7/32")}
	if diff := cmp.Diff(want, ruleset.MergePrefixes(got), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("trusted (-want +got):\n%s", diff)
	}
}

// TestConsensusAge: the age is now − valid-after, at the time Options.Now
// gives; more than 24 h past valid-until the consensus is still used,
// with one warning.
func TestConsensusAge(t *testing.T) {
	tests := []struct {
		now     time.Time
		age     int64
		expired bool
	}{
		{time.Date(2026, 11, 25, 13, 30, 0, 0, time.UTC), 5400, false},
		{time.Date(2026, 11, 26, 15, 0, 0, 0, time.UTC), 27 * 3600, false},  // 24 h past valid-until: still live
		{time.Date(2026, 11, 26, 15, 0, 1, 0, time.UTC), 27*3600 + 1, true}, // a second more: stale
	}
	for _, tt := range tests {
		var log bytes.Buffer
		in := consensusInputs(t, writeConsensus(goodConsensus), tt.now, &log)
		rs, _ := in.Ruleset()
		st := in.Consensus()
		if len(st) != 1 || st[0].State != ConsensusRead || st[0].AgeSeconds == nil || *st[0].AgeSeconds != tt.age || st[0].Expired != tt.expired {
			t.Errorf("%v: %+v, want age %d, expired %v", tt.now, st, tt.age, tt.expired)
		}
		w := warnings(&log)
		if tt.expired && (len(w) != 1 || !strings.Contains(w[0], "expired 24h0m0s ago")) || !tt.expired && len(w) != 0 {
			t.Errorf("%v: warnings %q", tt.now, w)
		}
		if got := relays4(rs); !strings.Contains(strings.Join(got, " "), "203.0.113.11:9001") {
			t.Errorf("%v: the consensus's relay is not a link: %v", tt.now, got)
		}
	}
}

// TestForgedEntriesOneWarning: entries the link-address rule refuses are
// left out of the ruleset and counted in one warning.
func TestForgedEntriesOneWarning(t *testing.T) {
	forged := goodConsensus +
		"r meta AAAA 2026-11-25 11:00:00 169.254.169.254 80 0\na [2001:db8::30%x},tcp:1]:443\n" +
		"r lo AAAA 2026-11-25 11:00:00 127.0.0.1 9001 0\na [fe80::1%eth0]:443\n" +
		"dir-source meta y z 10.0.0.1 80 443\n"
	var log bytes.Buffer
	in := consensusInputs(t, writeConsensus(forged), time.Date(2026, 11, 25, 13, 0, 0, 0, time.UTC), &log)
	rs, _ := in.Ruleset()
	if w := warnings(&log); len(w) != 1 || !strings.Contains(w[0], "6 entries left out") {
		t.Errorf("want one warning counting 6 entries, got %q", w)
	}
	if st := in.Consensus(); len(st) != 1 || st[0].LeftOut != 6 {
		t.Errorf("state %+v", st)
	}
	if err := rs.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, s := range rs.Sets {
		for _, e := range s.Elements {
			if err := ruleset.CheckRelayLink(netip.AddrPortFrom(e.AddrFirst, e.Ports.First), false); err != nil || e.AddrFirst.Zone() != "" {
				t.Errorf("set %s holds %v: %v", s.Name, e.AddrFirst, err)
			}
		}
	}
}

// TestConsensusAuthoritiesNotTrusted: the inbound protection trusts the
// torrc's DirAuthority lines (or tor's compiled-in list), never what the
// consensus says is an authority: tor's user writes it, and a trusted
// source is never limited.
func TestConsensusAuthoritiesNotTrusted(t *testing.T) {
	dir := t.TempDir()
	torrc := filepath.Join(dir, "torrc")
	if err := os.WriteFile(torrc, []byte("ORPort 9001\nExitRelay 1\nUser 101\nExitPolicy accept *:80,reject *:*\n"+
		"DirAuthority auth1 orport=443 v3ident=1111111111111111111111111111111111111111 192.0.2.1:80 AAAA AAAA AAAA AAAA AAAA AAAA AAAA AAAA AAAA AAAA\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "tor")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	writeConsensus(goodConsensus +
		"dir-source forged 2222222222222222222222222222222222222222 x 203.0.113.9 80 443\n" +
		"r flagged BBBB 2026-11-25 11:00:00 203.0.113.10 443 0\ns Authority Fast Running Valid\n")(data)
	cfg := DefaultConfig()
	cfg.DataDirectory = data
	cfg.Allow.Resolvers = []string{"192.0.2.53"}
	cfg.Inbound.Enabled = true
	cfg.Inbound.SetSize = 1 << 16
	in, err := Load(context.Background(), Options{Torrcs: []string{torrc}, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	rs, _ := in.Ruleset()
	if rs.Inbound == nil {
		t.Fatal("no inbound protection")
	}
	var trusted []string
	for _, p := range rs.Inbound.Trusted {
		trusted = append(trusted, p.String())
	}
	if want := []string{"192.0.2.1/32"}; !cmp.Equal(trusted, want) {
		t.Errorf("trusted %v, want %v (the torrc's authority only)", trusted, want)
	}
}
