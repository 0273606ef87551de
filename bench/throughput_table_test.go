package bench

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

const slabinfoHead = "slabinfo - version: 2.1\n# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\n"

func TestParseSlabinfo(t *testing.T) {
	for _, tc := range []struct {
		name       string
		text       string
		want       slabinfo
		conntrack  float64 // bytes("nf_conntrack")
		extensions float64 // conntrackAndKmalloc()
		wantErr    bool
	}{
		{
			name: "caches",
			text: slabinfoHead +
				"nf_conntrack         144    144    256   16    1 : tunables    0    0    0 : slabdata      9      9      0\n" +
				"TCP                  104    156   2368   13    8 : tunables    0    0    0 : slabdata     12     12      0\n" +
				"kmalloc-128        11383  11424    128   32    1 : tunables    0    0    0 : slabdata    357    357      0\n" +
				"kmalloc-rnd-01-64     10     64     64   64    1 : tunables    0    0    0 : slabdata      1      1      0\n",
			want: slabinfo{
				"nf_conntrack": {144, 256}, "TCP": {104, 2368}, "kmalloc-128": {11383, 128}, "kmalloc-rnd-01-64": {10, 64},
			},
			conntrack:  144 * 256,
			extensions: 144*256 + 11383*128 + 10*64,
		},
		{
			name: "a name twice (memory cgroups) adds up",
			text: slabinfoHead +
				"nf_conntrack         10    16    256   16    1 : tunables    0    0    0 : slabdata      1      1      0\n" +
				"nf_conntrack          5    16    256   16    1 : tunables    0    0    0 : slabdata      1      1      0\n",
			want:       slabinfo{"nf_conntrack": {15, 256}},
			conntrack:  15 * 256,
			extensions: 15 * 256,
		},
		{name: "another version", text: "slabinfo - version: 1.1\n# name\n", wantErr: true},
		{name: "a number that is not", text: slabinfoHead + "TCP many 156 2368 13 8\n", wantErr: true},
		{name: "a short line", text: slabinfoHead + "TCP 104 156\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseSlabinfo(tc.text)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want one: %v", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(slabCache{})); diff != "" {
				t.Errorf("parsed (-want +got):\n%s", diff)
			}
			if c := got.bytes("nf_conntrack"); c != tc.conntrack {
				t.Errorf("nf_conntrack bytes %v, want %v", c, tc.conntrack)
			}
			if e := got.conntrackAndKmalloc(); e != tc.extensions {
				t.Errorf("nf_conntrack and kmalloc bytes %v, want %v", e, tc.extensions)
			}
		})
	}
}

func TestConntrackRowPairsRounds(t *testing.T) {
	// The median of the rounds' differences (4,000, -6,000, 29,000 bytes),
	// not the difference of the medians (20,000 - 6,000).
	fw := throughputSamples{entries: []float64{1000, 1001, 1000}, conntrackSlab: []float64{256000, 256000, 250000},
		withExtensions: []float64{10000, 20000, 30000}, objsize: 256}
	none := throughputSamples{entries: []float64{0, 0, 1}, withExtensions: []float64{6000, 26000, 1000}}
	got := conntrackRowOf("nftables", 1000, fw, none)
	want := conntrackRow{backend: "nftables", flows: 1000, entries: 1000, entriesNone: 0, conntrackBytes: 256, withExtensions: 4, objsize: 256}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(conntrackRow{})); diff != "" {
		t.Errorf("row (-want +got):\n%s", diff)
	}
}

func TestThroughputTables(t *testing.T) {
	// Three rounds; the second ran while the machine was busy.
	fw := throughputSamples{bulk: []float64{6e9 / 8, 3e9 / 8, 6.3e9 / 8}, setup: []float64{9000, 4000, 8919}, exchanges: []float64{1, 1, 1}}
	ct := throughputSamples{bulk: []float64{6.6e9 / 8, 4e9 / 8, 6.7e9 / 8}, setup: []float64{14088, 7000, 14000}, exchanges: []float64{1, 1, 1}}
	none := throughputSamples{bulk: []float64{7.5e9 / 8, 3.5e9 / 8, 7.7e9 / 8}, setup: []float64{11755, 5000, 11000}, exchanges: []float64{1, 1, 1}}
	rows := throughputRows("nftables", 10000, fw, ct, none)[:2]
	want := "| backend | measure | relayfw's firewall | conntrack only | none | firewall/none (rounds' range) | conntrack only/none (rounds' range) |\n" +
		"| --- | --- | --- | --- | --- | --- | --- |\n" +
		"| nftables | bulk: one TCP stream to port 443 | 6.00 Gbit/s | 6.60 Gbit/s | 7.50 Gbit/s | 0.82 (0.80–0.86) | 0.88 (0.87–1.14) |\n" +
		"| nftables | flows: connection setup, 10,000 flows, 64 at a time | 8919 conn/s | 14,000 conn/s | 11,000 conn/s | 0.80 (0.77–0.81) | 1.27 (1.20–1.40) |\n"
	if diff := cmp.Diff(want, throughputTable(rows)); diff != "" {
		t.Errorf("table (-want +got):\n%s", diff)
	}
	mem := []conntrackRow{{backend: "nftables", flows: 10000, entries: 10000, conntrackBytes: 252.4, withExtensions: 430.6, objsize: 256}}
	wantMem := "| backend | flows | conntrack entries added (none) | nf_conntrack objects added × objsize, per flow | nf_conntrack and kmalloc objects added per flow, firewall − none |\n" +
		"| --- | --- | --- | --- | --- |\n" +
		"| nftables | 10,000 | 10,000 (0) | 252 B (objsize 256 B) | 431 B |\n"
	if diff := cmp.Diff(wantMem, conntrackTable(mem)); diff != "" {
		t.Errorf("conntrack table (-want +got):\n%s", diff)
	}
}

func TestStatCPUTicks(t *testing.T) {
	for _, tc := range []struct {
		name, stat string
		want       int64
		wantErr    bool
	}{
		{"ksoftirqd", "14 (ksoftirqd/0) S 2 0 0 0 -1 69238848 0 0 0 0 348 1312 0 0 20 0 1 0 3 0 0", 1660, false},
		{"a command name with spaces and parentheses", "99 (a (b) c) R 1 99 99 0 -1 4194304 10 0 0 0 7 5 0 0 20 0 1 0 100", 12, false},
		{"no command name", "14 ksoftirqd/0 S 2", 0, true},
		{"cut short", "14 (ksoftirqd/0) S 2 0 0 0 -1 69238848 0 0 0 0 348", 0, true},
		{"not a number", "14 (k) S 2 0 0 0 -1 69238848 0 0 0 0 x 1312 0", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := statCPUTicks(tc.stat)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want one: %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("ticks %d, want %d", got, tc.want)
			}
		})
	}
}
