package host

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/ti-mo/conntrack"
)

// fakeProc is a /proc root with the conntrack sysctls given (name to
// content; nil: conntrack not loaded) and a network namespace: "host"
// (self's is PID 1's), "namespace" (another), "namespace-limit" (another,
// and nf_conntrack_max writable there); "unknown host" and "unknown
// namespace" are those two with PID 1's namespace unreadable (only
// nf_conntrack_max's mode tells); "container namespace" is another
// namespace whose PID 1 shares it (a container's init, in a PID namespace
// of its own: only the mode tells).
func fakeProc(t *testing.T, netns string, sysctls map[string]string) string {
	t.Helper()
	root := t.TempDir()
	mkdir := func(dir string) {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mkdir("self/ns")
	mkdir("1/ns")
	if err := os.WriteFile(filepath.Join(root, "self/ns/net"), nil, 0o444); err != nil {
		t.Fatal(err)
	}
	switch netns {
	case "host", "container namespace":
		if err := os.Symlink("../../self/ns/net", filepath.Join(root, "1/ns/net")); err != nil {
			t.Fatal(err)
		}
	case "namespace", "namespace-limit":
		if err := os.WriteFile(filepath.Join(root, "1/ns/net"), nil, 0o444); err != nil {
			t.Fatal(err)
		}
	}
	if sysctls == nil {
		return root
	}
	mkdir("sys/net/netfilter")
	for name, v := range sysctls {
		mode := os.FileMode(0o644)
		if name == "nf_conntrack_count" || (name == "nf_conntrack_max" && strings.HasSuffix(netns, "namespace")) {
			mode = 0o444 // as the kernel has them
		}
		path := filepath.Join(root, "sys/net/netfilter", name)
		if err := os.WriteFile(path, []byte(v), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil { // past the umask
			t.Fatal(err)
		}
	}
	return root
}

// sysctls are a sized host's: 10% full, a 2-hour established timeout,
// loose pickup on.
func sysctls(change map[string]string) map[string]string {
	out := map[string]string{"nf_conntrack_count": "100\n", "nf_conntrack_max": "1000\n", "nf_conntrack_buckets": "250\n",
		"nf_conntrack_tcp_timeout_established": "7200\n", "nf_conntrack_tcp_loose": "1\n"}
	for k, v := range change {
		if v == "" {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

func fakeStats(c ConntrackCounters, err error) conntrackSource {
	return func(context.Context) (ConntrackCounters, error) { return c, err }
}

func u64(v uint64) *uint64 { return &v }
func boolp(v bool) *bool   { return &v }

// TestReadConntrack: the figures, where they come from and whose they are
// — the statistics over netlink, the sysctls when those fail, nothing
// (and no failure) when conntrack is not loaded — and the warnings.
func TestReadConntrack(t *testing.T) {
	drops := map[string]uint64{"drop": 3, "early_drop": 2, "insert_failed": 1}
	netlinkFails := fakeStats(ConntrackCounters{}, errors.New("conntrack statistics: netlink receive: operation not permitted"))
	for _, tc := range []struct {
		name    string
		netns   string
		sysctls map[string]string
		source  conntrackSource
		want    ConntrackStatus
		// warnings are substrings of the warnings, one each, in order.
		warnings []string
	}{
		{name: "not loaded", netns: "host", source: nil, // asking would panic
			want: ConntrackStatus{Note: "the kernel tracks no connections here (nf_conntrack is not loaded): no figures"}},
		{name: "netlink", netns: "host", sysctls: sysctls(nil), source: fakeStats(ConntrackCounters{Entries: 120, Max: 1000, Drops: drops}, nil),
			want: ConntrackStatus{Loaded: true, Entries: u64(120), Max: u64(1000), Scope: ScopeHost, Source: "netlink", Drops: drops,
				Buckets: u64(250), EstablishedTimeout: u64(7200), TCPLoose: boolp(true)}},
		{name: "netlink without the limit (before 4.18)", netns: "host", sysctls: sysctls(nil), source: fakeStats(ConntrackCounters{Entries: 120, Drops: drops}, nil),
			want: ConntrackStatus{Loaded: true, Entries: u64(120), Max: u64(1000), Scope: ScopeHost, Source: "netlink", Drops: drops,
				Buckets: u64(250), EstablishedTimeout: u64(7200), TCPLoose: boolp(true)}},
		{name: "proc when netlink fails", netns: "host", sysctls: sysctls(nil), source: netlinkFails,
			want: ConntrackStatus{Loaded: true, Entries: u64(100), Max: u64(1000), Scope: ScopeHost, Source: "proc",
				Buckets: u64(250), EstablishedTimeout: u64(7200), TCPLoose: boolp(true),
				Note: "conntrack statistics: netlink receive: operation not permitted: no drop counters"}},
		{name: "a namespace", netns: "namespace", sysctls: sysctls(nil), source: netlinkFails,
			want: ConntrackStatus{Loaded: true, Entries: u64(100), Max: u64(1000), Scope: ScopeNamespace, Source: "proc",
				Buckets: u64(250), EstablishedTimeout: u64(7200), TCPLoose: boolp(true),
				Note: "conntrack statistics: netlink receive: operation not permitted: no drop counters"}},
		{name: "a namespace with a limit of its own", netns: "namespace-limit", sysctls: sysctls(nil), source: fakeStats(ConntrackCounters{Entries: 5, Max: 1000, Drops: drops}, nil),
			want: ConntrackStatus{Loaded: true, Entries: u64(5), Max: u64(1000), Scope: ScopeNamespaceLimit, Source: "netlink", Drops: drops,
				Buckets: u64(250), EstablishedTimeout: u64(7200), TCPLoose: boolp(true)}},
		{name: "PID 1's namespace unreadable, the limit writable", netns: "unknown host", sysctls: sysctls(nil), source: fakeStats(ConntrackCounters{Entries: 5, Max: 1000, Drops: drops}, nil),
			want: ConntrackStatus{Loaded: true, Entries: u64(5), Max: u64(1000), Scope: ScopeHost, Source: "netlink", Drops: drops,
				Buckets: u64(250), EstablishedTimeout: u64(7200), TCPLoose: boolp(true)}},
		{name: "PID 1's namespace unreadable, the limit read-only", netns: "unknown namespace", sysctls: sysctls(nil), source: fakeStats(ConntrackCounters{Entries: 5, Max: 1000, Drops: drops}, nil),
			want: ConntrackStatus{Loaded: true, Entries: u64(5), Max: u64(1000), Scope: ScopeNamespace, Source: "netlink", Drops: drops,
				Buckets: u64(250), EstablishedTimeout: u64(7200), TCPLoose: boolp(true)}},
		{name: "a container: PID 1 shares the namespace, the limit read-only", netns: "container namespace", sysctls: sysctls(nil), source: fakeStats(ConntrackCounters{Entries: 5, Max: 1000, Drops: drops}, nil),
			want: ConntrackStatus{Loaded: true, Entries: u64(5), Max: u64(1000), Scope: ScopeNamespace, Source: "netlink", Drops: drops,
				Buckets: u64(250), EstablishedTimeout: u64(7200), TCPLoose: boolp(true)}},
		{name: "PID 1's namespace unreadable, no limit file", netns: "unknown", sysctls: sysctls(map[string]string{"nf_conntrack_max": ""}), source: fakeStats(ConntrackCounters{Entries: 5, Max: 1000, Drops: drops}, nil),
			want: ConntrackStatus{Loaded: true, Entries: u64(5), Max: u64(1000), Source: "netlink", Drops: drops,
				Buckets: u64(250), EstablishedTimeout: u64(7200), TCPLoose: boolp(true)}},
		{name: "unreadable figures are left out", netns: "host", source: netlinkFails,
			sysctls: sysctls(map[string]string{"nf_conntrack_count": "lots\n", "nf_conntrack_buckets": "", "nf_conntrack_tcp_loose": "-1\n"}),
			want: ConntrackStatus{Loaded: true, Max: u64(1000), Scope: ScopeHost, Source: "proc", EstablishedTimeout: u64(7200),
				Note: "conntrack statistics: netlink receive: operation not permitted: no drop counters; nf_conntrack_count: not a number: \"lots\\n\""}},
		{name: "exactly 80% is no warning", netns: "host", sysctls: sysctls(map[string]string{"nf_conntrack_count": "800"}), source: netlinkFails,
			want: ConntrackStatus{Loaded: true, Entries: u64(800), Max: u64(1000), Scope: ScopeHost, Source: "proc",
				Buckets: u64(250), EstablishedTimeout: u64(7200), TCPLoose: boolp(true),
				Note: "conntrack statistics: netlink receive: operation not permitted: no drop counters"}},
		{name: "past 80%", netns: "host", sysctls: sysctls(map[string]string{"nf_conntrack_count": "801"}), source: netlinkFails,
			want: ConntrackStatus{Loaded: true, Entries: u64(801), Max: u64(1000), Scope: ScopeHost, Source: "proc",
				Buckets: u64(250), EstablishedTimeout: u64(7200), TCPLoose: boolp(true),
				Note: "conntrack statistics: netlink receive: operation not permitted: no drop counters"},
			warnings: []string{"conntrack table 80% full (801 of 1000 entries): when it is full, the kernel drops the packets of new connections"}},
		{name: "past 80% in a namespace", netns: "namespace", sysctls: sysctls(nil), source: fakeStats(ConntrackCounters{Entries: 990, Max: 1000, Drops: drops}, nil),
			want: ConntrackStatus{Loaded: true, Entries: u64(990), Max: u64(1000), Scope: ScopeNamespace, Source: "netlink", Drops: drops,
				Buckets: u64(250), EstablishedTimeout: u64(7200), TCPLoose: boolp(true)},
			warnings: []string{"conntrack table 99% full in this network namespace (990 of 1000 entries)"}},
		{name: "no limit", netns: "host", sysctls: sysctls(map[string]string{"nf_conntrack_count": "5000", "nf_conntrack_max": "0"}), source: netlinkFails,
			want: ConntrackStatus{Loaded: true, Entries: u64(5000), Max: u64(0), Scope: ScopeHost, Source: "proc",
				Buckets: u64(250), EstablishedTimeout: u64(7200), TCPLoose: boolp(true),
				Note: "conntrack statistics: netlink receive: operation not permitted: no drop counters"}},
		{name: "the kernel's defaults and no loose pickup", netns: "host",
			sysctls: sysctls(map[string]string{"nf_conntrack_tcp_timeout_established": "432000\n", "nf_conntrack_tcp_loose": "0\n"}),
			source:  fakeStats(ConntrackCounters{Entries: 100, Max: 1000, Drops: drops}, nil),
			want: ConntrackStatus{Loaded: true, Entries: u64(100), Max: u64(1000), Scope: ScopeHost, Source: "netlink", Drops: drops,
				Buckets: u64(250), EstablishedTimeout: u64(432000), TCPLoose: boolp(false)},
			warnings: []string{"for 432000 s (5 days, the kernel's default)", "set net.netfilter.nf_conntrack_tcp_timeout_established = 7200 (2 hours",
				"net.netfilter.nf_conntrack_tcp_loose is 0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := readConntrack(context.Background(), fakeProc(t, tc.netns, tc.sysctls), tc.source)
			warnings := got.Warnings
			got.Warnings = nil
			if diff := cmp.Diff(tc.want, *got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			// The two kinds of timeout warning are one warning.
			want := tc.warnings
			if len(want) == 3 {
				want = []string{want[0] + "\x00" + want[1], want[2]}
			}
			if len(warnings) != len(want) {
				t.Fatalf("warnings %q, want %d: %q", warnings, len(want), want)
			}
			for i, w := range want {
				for _, part := range strings.Split(w, "\x00") {
					if !strings.Contains(warnings[i], part) {
						t.Errorf("warning %d %q lacks %q", i, warnings[i], part)
					}
				}
			}
		})
	}
}

// TestSumConntrack: the per-CPU counters are summed by kind; every kind
// is there, zero or not.
func TestSumConntrack(t *testing.T) {
	got := sumConntrack(conntrack.StatsGlobal{Entries: 7, MaxEntries: 262144}, []conntrack.Stats{
		{CPUID: 0, Drop: 1, EarlyDrop: 10, InsertFailed: 100, Found: 5},
		{CPUID: 1, Drop: 4294967295, EarlyDrop: 20, Invalid: 9},
	})
	want := ConntrackCounters{Entries: 7, Max: 262144, Drops: map[string]uint64{"drop": 4294967296, "early_drop": 30, "insert_failed": 100}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if got := sumConntrack(conntrack.StatsGlobal{}, nil).Drops; len(got) != len(ConntrackDropKinds) {
		t.Errorf("no CPUs: drops %v, want every kind at 0", got)
	}
}

// TestConntrackJSON: status --format json's "conntrack" object: the
// figures by name; none of them when conntrack is not loaded.
func TestConntrackJSON(t *testing.T) {
	loaded := readConntrack(context.Background(), fakeProc(t, "namespace", sysctls(nil)),
		fakeStats(ConntrackCounters{Entries: 12, Max: 1000, Drops: map[string]uint64{"drop": 0, "early_drop": 0, "insert_failed": 0}}, nil))
	for _, tc := range []struct {
		st   *ConntrackStatus
		want string
	}{
		{loaded, `{"loaded":true,"entries":12,"max":1000,"scope":"namespace","source":"netlink","drops":{"drop":0,"early_drop":0,"insert_failed":0},"buckets":250,"tcp_timeout_established":7200,"tcp_loose":true}`},
		{readConntrack(context.Background(), fakeProc(t, "host", nil), nil),
			`{"loaded":false,"note":"the kernel tracks no connections here (nf_conntrack is not loaded): no figures"}`},
	} {
		got, err := json.Marshal(Status{Conntrack: tc.st})
		if err != nil {
			t.Fatal(err)
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(got, &fields); err != nil {
			t.Fatal(err)
		}
		if string(fields["conntrack"]) != tc.want {
			t.Errorf("conntrack %s\nwant      %s", fields["conntrack"], tc.want)
		}
	}
}

// TestConntrackOfThisHost: on the machine the tests run on, Conntrack
// answers without failing: when conntrack is loaded, with the limit; when
// not, with no figures and a note saying so.
func TestConntrackOfThisHost(t *testing.T) {
	c := DefaultSystem().Conntrack(context.Background())
	if _, err := os.Stat("/proc/sys/net/netfilter/nf_conntrack_max"); err != nil {
		// Not loaded (yet: the namespace tests load it): the answer says so,
		// and that is what this host can check.
		if c.Loaded || c.Note == "" || c.Entries != nil || c.Max != nil {
			t.Errorf("conntrack not loaded here: want no figures and a note, got %+v", c)
		}
		return
	}
	if !c.Loaded || c.Max == nil || c.Entries == nil {
		t.Errorf("conntrack %+v: want the entries and the limit", c)
	}
	if os.Geteuid() == 0 && (c.Source != "netlink" || len(c.Drops) != len(ConntrackDropKinds)) {
		t.Errorf("as root: source %q, drops %v (note %q): want the statistics over netlink", c.Source, c.Drops, c.Note)
	}
}
