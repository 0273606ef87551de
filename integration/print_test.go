package integration

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// bigPolicyTorrc is an exit whose policy rejects n single hosts before the
// example's ports: a large exit set.
func bigPolicyTorrc(n int) string {
	var b strings.Builder
	b.WriteString("ExitRelay 1\nIPv6Exit 1\nORPort 443\nAddress 203.0.113.10\nExitPolicy ")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "reject %d.%d.%d.%d:*,", 11+i/65536%200, i/256%256, i%256, 1+i%250)
	}
	b.WriteString("accept *:21-23,accept *:53,accept *:80,accept *:110,accept *:143,accept *:443,accept *:992-993,accept *:995,reject *:*\n")
	return b.String()
}

// extraShapes are allowances with whole-byte and other prefixes, port
// ranges and a user, in both families, and rate-limited reject logging.
const extraShapes = `
[[allow.extra]]
name = "shapes"
proto = "udp"
to = ["10.0.0.0/8", "172.16.0.0/12", "192.0.2.7", "0.0.0.0/0", "2001:db8::/32", "2001:db8:1:2::/63", "2001:db8::9"]
ports = ["53", "1000-2000"]
user = "65534"

[[allow.extra]]
name = "anywhere"

[log]
rejects_per_minute = 10
`

// inboundShapes turn the inbound protection on with other masks, a
// shorter block, a minute meter that outlives its minute, trusted
// networks that join into one range, and the DirPort.
const inboundShapes = `
[inbound]
enabled = true
dir_ports = true
ipv4_prefix = 24
ipv6_prefix = 56
per_minute = 4
burst = 12
block = "30m"
trusted = ["192.0.2.0/25", "192.0.2.128/25", "198.51.100.77", "2001:db8:5::/48"]
`

// inboundBoundTorrc has ORPorts bound to an address of each family, one
// on every IPv4 address only and a DirPort (IPv4): every set and rule
// shape of the inbound endpoints but the one for both families.
const inboundBoundTorrc = "ExitRelay 1\nIPv6Exit 1\nORPort 192.0.2.11:443\nORPort [2001:db8::11]:443\nORPort 192.0.2.12:443\n" +
	"ORPort 9001 IPv4Only\nDirPort 9030\nExitPolicy accept *:80,reject *:*\n"

// TestNftPrintEqualsApply: `nft -f` of `relayfw print` leaves the same
// kernel state as `relayfw apply` (nft's own listing, and relayfw check).
func TestNftPrintEqualsApply(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct{ name, torrc, extra string }{
		{"example", "../examples/torrc", ""},
		{"reduced", "ExitRelay 1\nReducedExitPolicy 1\nIPv6Exit 1\nORPort 443\nOutboundBindAddressExit 198.51.100.1\n", ""},
		{"big", bigPolicyTorrc(3000), ""},
		// More intervals than one map shard holds: the exit map is split.
		{"sharded", bigPolicyTorrc(12000), ""},
		// Every prefix and port shape the allowances produce.
		{"extras", "../examples/torrc", extraShapes},
		{"inbound", "ExitRelay 1\nIPv6Exit 1\nORPort 443\nORPort 9001\nDirPort 9030\nExitPolicy accept *:80,reject *:*\n", inboundShapes},
		{"inbound-defaults", "ExitRelay 1\nORPort 443\nORPort 9001\nDirPort 9030\n", "[inbound]\nenabled = true\n"},
		{"inbound-bound", inboundBoundTorrc, inboundShapes},
		{"inbound-one-address", "ExitRelay 1\nORPort 192.0.2.11:443\n", "[inbound]\nenabled = true\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := newIsolatedNS(t, "rfwnft")
			flags := relayInputs(t, "nftables", tc.torrc)
			if tc.extra != "" {
				flags[len(flags)-1] = writeTestConfig(t, t.TempDir(), testConsensus, tc.extra)
			}
			code, text, errOut := relayfwIn(t, ns, append(flags, "print", "--format", "nft")...)
			if code != 0 {
				t.Fatalf("print: %d %s", code, errOut)
			}
			if code, out, errOut := relayfwIn(t, ns, append(flags, "apply")...); code != 0 {
				t.Fatalf("apply: %d %s %s", code, out, errOut)
			}
			applied := listRuleset(t, ns)
			if out, err := exec.Command("ip", "netns", "exec", ns, "nft", "flush", "ruleset").CombinedOutput(); err != nil {
				t.Fatalf("%v %s", err, out)
			}
			load := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
			load.Stdin = strings.NewReader(text)
			if out, err := load.CombinedOutput(); err != nil {
				t.Fatalf("nft -f of relayfw print: %v\n%s", err, out)
			}
			loaded := listRuleset(t, ns)
			if diff := cmp.Diff(applied, loaded); diff != "" {
				t.Fatalf("nft -f and apply differ (-apply +nft -f):\n%s", diff)
			}
			if code, out, _ := relayfwIn(t, ns, append(flags, "check")...); code != 0 {
				t.Fatalf("check after nft -f: %d %s", code, out)
			}
			// Loading it again replaces the table atomically (the delete
			// at the top finds it).
			load = exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
			load.Stdin = strings.NewReader(text)
			if out, err := load.CombinedOutput(); err != nil {
				t.Fatalf("second nft -f: %v\n%s", err, out)
			}
		})
	}
}

// TestIptablesPrintEqualsApply: iptables-restore --noflush of `relayfw
// print --format iptables|ip6tables` leaves a state `check` calls in sync,
// the same rules apply writes, in legacy and nf_tables mode.
func TestIptablesPrintEqualsApply(t *testing.T) {
	requireRoot(t)
	for _, b := range backends[1:] {
		for _, tc := range []struct{ name, torrc, extra string }{
			{"example", "../examples/torrc", ""},
			{"big", bigPolicyTorrc(2000), ""},
			{"extras", "../examples/torrc", extraShapes},
			{"inbound", "ExitRelay 1\nIPv6Exit 1\nORPort 443\nORPort 9001\nDirPort 9030\nExitPolicy accept *:80,reject *:*\n", inboundShapes},
			{"inbound-defaults", "ExitRelay 1\nORPort 443\nORPort 9001\nDirPort 9030\n", "[inbound]\nenabled = true\n"},
			{"inbound-bound", inboundBoundTorrc, inboundShapes},
			// IPv6 protects nothing: RELAYFW-INPUT is empty.
			{"inbound-one-address", "ExitRelay 1\nORPort 192.0.2.11:443\n", "[inbound]\nenabled = true\n"},
		} {
			t.Run(b.name+"/"+tc.name, func(t *testing.T) {
				ns := newIsolatedNS(t, "rfwipt")
				env := b.env(t)
				flags := relayInputs(t, b.flag, tc.torrc)
				if tc.extra != "" {
					flags[len(flags)-1] = writeTestConfig(t, t.TempDir(), testConsensus, tc.extra)
				}
				// The rules refer to the relay-link ipsets: load those first.
				code, sets, errOut := relayfwEnv(t, ns, env, append(flags, "print", "--format", "ipset")...)
				if code != 0 {
					t.Fatalf("print ipset: %d %s", code, errOut)
				}
				shell(t, ns, env, sets, "ipset", "restore")
				var printed [2]string
				for i, format := range []string{"iptables", "ip6tables"} {
					code, text, errOut := relayfwEnv(t, ns, env, append(flags, "print", "--format", format)...)
					if code != 0 {
						t.Fatalf("print %s: %d %s", format, code, errOut)
					}
					printed[i] = text
					shell(t, ns, env, text, format+"-restore", "--test", "--noflush")
				}
				if code, out, errOut := relayfwEnv(t, ns, env, append(flags, "apply")...); code != 0 {
					t.Fatalf("apply: %d %s %s", code, out, errOut)
				}
				applied := b.snapshot(t, ns, env)
				if code, out, _ := relayfwEnv(t, ns, env, append(flags, "remove")...); code != 0 {
					t.Fatalf("remove: %d %s", code, out)
				}
				shell(t, ns, env, sets, "ipset", "restore")
				for i, format := range []string{"iptables", "ip6tables"} {
					shell(t, ns, env, printed[i], format+"-restore", "--noflush")
				}
				if loaded := b.snapshot(t, ns, env); loaded != applied {
					t.Fatalf("restore of print and apply differ:\n%s", cmp.Diff(applied, loaded))
				}
				if code, out, _ := relayfwEnv(t, ns, env, append(flags, "check")...); code != 0 {
					t.Fatalf("check after restore: %d %s", code, out)
				}
			})
		}
	}
}
