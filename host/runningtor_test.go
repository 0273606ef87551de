package host

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/relayfw/relayfw/exitpolicy"
	"github.com/relayfw/relayfw/internal/torcontrol"
	"github.com/relayfw/relayfw/internal/torcontrol/torcontroltest"
	"github.com/relayfw/relayfw/torconf"
)

// runningInstance is an instance read from torrc text on a host whose
// interfaces have addrs; "@DIR@" in the text is a temporary directory
// (the control socket's and the cookie's).
func runningInstance(t *testing.T, text string, addrs ...string) (*Instance, string) {
	t.Helper()
	dir := t.TempDir()
	lines, err := torconf.Parse(nil, "torrc", strings.ReplaceAll(text, "@DIR@", dir))
	if err != nil {
		t.Fatal(err)
	}
	o, err := torconf.OptionsFromLines(lines)
	if err != nil {
		t.Fatal(err)
	}
	var facts exitpolicy.HostFacts
	for _, a := range addrs {
		facts.InterfaceAddrs = append(facts.InterfaceAddrs, netip.MustParseAddr(a))
	}
	eff, err := exitpolicy.FromOptions(o, facts)
	if err != nil {
		t.Fatal(err)
	}
	return &Instance{Name: "exit1", Torrc: "torrc", Options: o, Effective: eff}, dir
}

const runningTorrc = "ORPort 9001\nExitRelay 1\nControlSocket @DIR@/control\nCookieAuthentication 1\nCookieAuthFile @DIR@/cookie\n"

// TestAskRunningTor: what a running tor (a fake control server) says,
// compared with relayfw's policy for the instance.
func TestAskRunningTor(t *testing.T) {
	// insert puts extra after the line at, in lines.
	insert := func(lines []string, at string, extra ...string) []string {
		i := slices.Index(lines, at)
		if i < 0 {
			t.Fatalf("no %q in %q", at, lines)
		}
		return slices.Insert(slices.Clone(lines), i+1, extra...)
	}
	many := make([]string, 25)
	for i := range many {
		many[i] = fmt.Sprintf("accept 192.0.2.%d:443", i+1)
	}
	tests := []struct {
		name  string
		torrc string
		addrs []string // the host's interfaces
		tor   func(ours []string, f *torcontroltest.Tor)
		want  RunningTor // Instance, Control, Asked, OnlyTor/OnlyRelayfw nil→[] filled in
	}{
		{"matches", "Address 203.0.113.5\nExitPolicy accept *:80,reject *:*\n", nil,
			func(ours []string, f *torcontroltest.Tor) { f.Policy = strings.Join(ours, "\n") },
			RunningTor{Matches: true, TorVersion: "0.4.9.11"}},
		{"a NAT'd host: the address tor found is on no interface", "ExitPolicy accept 198.51.100.99:443,accept *:80,reject *:*\n", []string{"10.0.0.5"},
			func(ours []string, f *torcontroltest.Tor) {
				// tor rejects the address it found ahead of the policy,
				// and drops the entry that reject covers.
				lines := insert(ours, "reject 172.16.0.0/12:*", "reject 198.51.100.99:*")
				lines = slices.DeleteFunc(lines, func(l string) bool { return l == "accept 198.51.100.99:443" })
				f.Policy, f.V4, f.V6 = strings.Join(lines, "\n"), "198.51.100.99", "2001:db8::99"
			},
			RunningTor{Matches: true, TorVersion: "0.4.9.11", Discovered: []netip.Addr{netip.MustParseAddr("198.51.100.99")}}},
		{"a NAT'd host, and IPv6 exits: both addresses are tor's own", "IPv6Exit 1\nExitPolicy accept *:80,reject *:*\n", []string{"10.0.0.5", "fe80::5"},
			func(ours []string, f *torcontroltest.Tor) {
				lines := insert(ours, "reject6 [fe80::]/10:*", "reject 198.51.100.99:*", "reject6 [2001:db8::99]:*")
				f.Policy, f.V4, f.V6 = strings.Join(lines, "\n"), "198.51.100.99", "2001:db8::99"
			},
			RunningTor{Matches: true, TorVersion: "0.4.9.11", Discovered: []netip.Addr{netip.MustParseAddr("198.51.100.99"), netip.MustParseAddr("2001:db8::99")}}},
		{"ExitPolicyRejectPrivate 0: tor rejects no address of its own", "ExitPolicyRejectPrivate 0\nExitPolicy accept 198.51.100.99:443,accept *:80,reject *:*\n", []string{"10.0.0.5"},
			func(ours []string, f *torcontroltest.Tor) { f.Policy, f.V4 = strings.Join(ours, "\n"), "198.51.100.99" },
			RunningTor{Matches: true, TorVersion: "0.4.9.11"}},
		{"ExitPolicyRejectPrivate 0, yet tor rejects its address: tor runs an older torrc", "ExitPolicyRejectPrivate 0\nExitPolicy accept *:80,reject *:*\n", []string{"10.0.0.5"},
			func(ours []string, f *torcontroltest.Tor) {
				f.Policy, f.V4 = strings.Join(append([]string{"reject 198.51.100.99:*"}, ours...), "\n"), "198.51.100.99"
			},
			RunningTor{TorVersion: "0.4.9.11", OnlyTor: []string{"reject 198.51.100.99:*"}, OnlyTorTotal: 1, Advice: "reload tor (SIGHUP)"}},
		{"ExitPolicyRejectPrivate 0, an entry of that address missing", "ExitPolicyRejectPrivate 0\nExitPolicy accept 198.51.100.99:443,accept *:80,reject *:*\n", []string{"10.0.0.5"},
			func(ours []string, f *torcontroltest.Tor) {
				f.Policy = strings.Join(slices.DeleteFunc(slices.Clone(ours), func(l string) bool { return l == "accept 198.51.100.99:443" }), "\n")
				f.V4 = "198.51.100.99"
			},
			RunningTor{TorVersion: "0.4.9.11", OnlyRelayfw: []string{"accept 198.51.100.99:443"}, OnlyRelayfwTotal: 1, Advice: "reload tor (SIGHUP)"}},
		{"an address relayfw knows is not forgiven", "Address 203.0.113.5\nExitPolicy accept *:80,reject *:*\n", nil,
			func(ours []string, f *torcontroltest.Tor) {
				f.Policy = strings.Join(slices.DeleteFunc(slices.Clone(ours), func(l string) bool { return l == "reject 203.0.113.5:*" }), "\n")
			},
			RunningTor{TorVersion: "0.4.9.11", OnlyRelayfw: []string{"reject 203.0.113.5:*"}, OnlyRelayfwTotal: 1, Advice: "reload tor (SIGHUP)"}},
		{"the torrc edited, tor not reloaded", "Address 203.0.113.5\nExitPolicy accept *:80,reject *:*\n", nil,
			func(ours []string, f *torcontroltest.Tor) {
				lines := slices.Clone(ours)
				lines[slices.Index(lines, "accept *:80")] = "accept *:443"
				f.Policy = strings.Join(lines, "\n")
			},
			RunningTor{TorVersion: "0.4.9.11", OnlyTor: []string{"accept *:443"}, OnlyTorTotal: 1, OnlyRelayfw: []string{"accept *:80"}, OnlyRelayfwTotal: 1, Advice: "reload tor (SIGHUP)"}},
		{"another order", "Address 203.0.113.5\nExitPolicy accept *:80,accept *:443,reject *:*\n", nil,
			func(ours []string, f *torcontroltest.Tor) {
				lines := slices.Clone(ours)
				i := slices.Index(lines, "accept *:80")
				lines[i], lines[i+1] = lines[i+1], lines[i]
				f.Policy = strings.Join(lines, "\n")
			},
			RunningTor{TorVersion: "0.4.9.11", OrderDiffers: true, Advice: "reload tor (SIGHUP)"}},
		{"another tor version", "Address 203.0.113.5\nExitPolicy accept *:80,reject *:*\n", nil,
			func(ours []string, f *torcontroltest.Tor) {
				f.Policy, f.Version = strings.Join(insert(ours, "accept *:80", "accept *:8080"), "\n"), "0.4.8.13"
			},
			RunningTor{TorVersion: "0.4.8.13", OnlyTor: []string{"accept *:8080"}, OnlyTorTotal: 1, Advice: "tor's version 0.4.8.13 differs from relayfw's model (tor 0.4.9)"}},
		{"a bounded list", "Address 203.0.113.5\nExitPolicy accept *:80,reject *:*\n", nil,
			func(ours []string, f *torcontroltest.Tor) {
				f.Policy = strings.Join(insert(ours, "accept *:80", many...), "\n")
			},
			RunningTor{TorVersion: "0.4.9.11", OnlyTor: many[:10], OnlyTorTotal: 25, Advice: "reload tor (SIGHUP)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst, dir := runningInstance(t, runningTorrc+tt.torrc, tt.addrs...)
			f := torcontroltest.New()
			f.V4 = ""
			tt.tor(inst.Effective.Policy.Lines(), f)
			f.ServeUnix(t, filepath.Join(dir, "control"))
			f.WriteCookie(t, filepath.Join(dir, "cookie"))
			in := &Inputs{sys: testSystem(t), Instances: []*Instance{inst}}
			got := in.AskRunningTor(context.Background())
			want := tt.want
			want.Instance, want.Control, want.Asked = "exit1", filepath.Join(dir, "control"), true
			for _, l := range []*[]string{&want.OnlyTor, &want.OnlyRelayfw} {
				if *l == nil {
					*l = []string{}
				}
			}
			if diff := cmp.Diff([]RunningTor{want}, got, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
				t.Errorf("AskRunningTor (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRunningTorNotAsked: an instance tor cannot be asked about says why,
// and asking never takes longer than the deadline.
func TestRunningTorNotAsked(t *testing.T) {
	tests := []struct {
		name  string
		torrc string
		tor   func(dir string, f *torcontroltest.Tor) // nil: no server
		want  string
	}{
		{"no control", "ORPort 9001\nExitRelay 1\n", nil, "the torrc has no ControlSocket or ControlPort"},
		{"relayor's ControlSocket 0", "ORPort 9001\nExitRelay 1\nControlSocket 0\n", nil,
			`the torrc has no ControlSocket or ControlPort ("ControlSocket 0" at torrc:3, as relayor's torrcs have it)`},
		{"a client", "SocksPort 9050\nControlSocket @DIR@/control\n", nil, "a tor client, not a relay"},
		{"ControlPort auto", "ORPort 9001\nControlPort auto\nCookieAuthentication 1\n", nil, "ControlPort auto is chosen when tor starts"},
		{"ControlPort elsewhere", "ORPort 9001\nControlPort 192.0.2.1:9051\nCookieAuthentication 1\n", nil, "ControlPort 192.0.2.1:9051 is not on loopback"},
		{"tor not running", runningTorrc, nil, "no such file or directory"},
		{"not a socket", runningTorrc, func(dir string, _ *torcontroltest.Tor) {
			if err := os.WriteFile(filepath.Join(dir, "control"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "is not a socket"},
		{"no cookie authentication", "ORPort 9001\nControlSocket @DIR@/control\n", func(dir string, f *torcontroltest.Tor) {
			f.ServeUnix(t, filepath.Join(dir, "control"))
		}, "the torrc does not set CookieAuthentication 1"},
		{"no cookie", runningTorrc, func(dir string, f *torcontroltest.Tor) {
			f.ServeUnix(t, filepath.Join(dir, "control"))
		}, "no such file or directory"},
		{"another cookie", runningTorrc, func(dir string, f *torcontroltest.Tor) {
			f.ServeUnix(t, filepath.Join(dir, "control"))
			if err := os.WriteFile(filepath.Join(dir, "cookie"), make([]byte, 32), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "does not know the cookie"},
		{"hangs", runningTorrc, func(dir string, f *torcontroltest.Tor) {
			f.Hang = true
			f.ServeUnix(t, filepath.Join(dir, "control"))
			f.WriteCookie(t, filepath.Join(dir, "cookie"))
		}, "i/o timeout"},
		{"not a server", runningTorrc, func(dir string, f *torcontroltest.Tor) {
			f.Replies = map[string]string{"GETINFO exit-policy/full": "552 Not running in server mode\r\n"}
			f.ServeUnix(t, filepath.Join(dir, "control"))
			f.WriteCookie(t, filepath.Join(dir, "cookie"))
		}, `tor replied 552 "Not running in server mode"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst, dir := runningInstance(t, tt.torrc)
			if tt.tor != nil {
				tt.tor(dir, torcontroltest.New())
			}
			in := &Inputs{sys: testSystem(t), Instances: []*Instance{inst}}
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			got := in.AskRunningTor(ctx)
			if len(got) != 1 || got[0].Asked || got[0].Matches || !strings.Contains(got[0].Why, tt.want) {
				t.Errorf("AskRunningTor: %+v; want not asked: %q", got, tt.want)
			}
			if got[0].Summary() != "not asked: "+got[0].Why {
				t.Errorf("Summary %q", got[0].Summary())
			}
		})
	}
}

func TestReloadAdvice(t *testing.T) {
	for _, tc := range []struct {
		inst    Instance
		version string
		want    string
	}{
		{Instance{Name: "exit1", defaultsName: "exit1"}, "0.4.9.11", "reload tor (systemctl reload tor@exit1)"},
		{Instance{Name: "default", Defaults: "/usr/share/tor/tor-service-defaults-torrc"}, "0.4.9.12", "reload tor (systemctl reload tor@default)"},
		{Instance{Name: "mine", Defaults: ""}, "0.4.9.11", "reload tor (SIGHUP)"},
		{Instance{Name: "exit1", defaultsName: "exit1"}, "0.4.10.1", "tor's version 0.4.10.1 differs from relayfw's model (tor 0.4.9)"},
		{Instance{Name: "exit1", defaultsName: "exit1"}, "0.4.90.1", "tor's version 0.4.90.1 differs from relayfw's model (tor 0.4.9)"},
	} {
		if got := tc.inst.reloadAdvice(tc.version); got != tc.want {
			t.Errorf("%s, tor %s: %q; want %q", tc.inst.Name, tc.version, got, tc.want)
		}
	}
}

// TestRunningTorOwnSocket: tor chowns its control socket to its User; a
// socket of another owner where the torrc names tor's (a link or a swap
// by tor's user, to another service's socket) is not asked.
func TestRunningTorOwnSocket(t *testing.T) {
	inst, dir := runningInstance(t, runningTorrc)
	f := torcontroltest.New()
	f.ServeUnix(t, filepath.Join(dir, "control"))
	f.WriteCookie(t, filepath.Join(dir, "cookie"))
	in := &Inputs{sys: testSystem(t), Instances: []*Instance{inst}}
	for _, tc := range []struct {
		uid  uint32
		want string // "": asked
	}{
		{uint32(os.Geteuid()), ""},
		{uint32(os.Geteuid()) + 1, fmt.Sprintf("control socket %s is owned by uid %d, not by tor's user (uid %d)", filepath.Join(dir, "control"), os.Geteuid(), os.Geteuid()+1)},
	} {
		inst.UID = &tc.uid
		got := in.AskRunningTor(context.Background())
		if len(got) != 1 || got[0].Asked != (tc.want == "") || !strings.Contains(got[0].Why, tc.want) {
			t.Errorf("tor's user uid %d: %+v; want not asked: %q", tc.uid, got, tc.want)
		}
	}
}

// TestCompareRunningBounded: tor's side of the comparison is whatever its
// user sends (up to torcontrol.MaxReply): comparing it with relayfw's
// policy takes memory for relayfw's entries and the few listed, not for
// each of tor's.
func TestCompareRunningBounded(t *testing.T) {
	inst, _ := runningInstance(t, runningTorrc+"Address 203.0.113.5\nExitPolicy accept *:80,reject *:*\n")
	const n = 500000
	theirs := make([]string, n)
	for i := range theirs {
		theirs[i] = fmt.Sprintf("accept 10.%d.%d.%d:1", i>>16&255, i>>8&255, i&255)
	}
	a := torcontrol.Answer{ExitPolicy: theirs, Version: "0.4.9.11", Addresses: []netip.Addr{netip.MustParseAddr("198.51.100.99")}}
	var r RunningTor
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	compareRunning(&r, inst.Effective, inst.Options.ExitPolicyRejectPrivate, a)
	runtime.ReadMemStats(&after)
	if r.Matches || r.OnlyTorTotal != n || r.OnlyRelayfwTotal != len(inst.Effective.Policy.Entries) || len(r.OnlyTor) != RunningTorListed {
		t.Errorf("compareRunning: %d only tor's (%d listed), %d only relayfw's", r.OnlyTorTotal, len(r.OnlyTor), r.OnlyRelayfwTotal)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Errorf("compareRunning of %d entries against %d allocated %d bytes; want under 1 MiB", n, len(inst.Effective.Policy.Entries), alloc)
	}
}
