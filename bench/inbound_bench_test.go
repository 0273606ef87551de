package bench

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/relayfw/relayfw/internal/netnstest"
)

// BenchmarkInbound measures what the inbound protection costs an ORPort:
// the rate of new connections it accepts from many distinct sources
// (each opening a few, well under the limits, so every one is metered,
// counted and let in), with relayfw's firewall and [inbound] on, as a
// ratio of the rate with the same firewall and [inbound] off, in the same
// run, interleaved, for each backend. Every round starts from a removed
// firewall, so the meters start empty.
//
//	sudo go test ./bench -run XXX -bench Inbound -benchtime 1x
//
// RELAYFW_SCALE_MODES ("nftables,legacy,nft") narrows the run.
func BenchmarkInbound(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("SKIPPED: needs root for network namespaces")
	}
	modes := []string{"nftables", "legacy", "nft"}
	if env := os.Getenv("RELAYFW_SCALE_MODES"); env != "" {
		modes = strings.Split(env, ",")
	}
	dir := b.TempDir()
	bin := buildRelayfw(b, dir)
	torrc := filepath.Join(dir, "torrc")
	writeFile(b, torrc, "ORPort 9001\nExitRelay 0\n")
	off := filepath.Join(dir, "off.toml")
	writeFile(b, off, "[allow]\nresolvers = [\"192.0.2.53\"]\n")
	on := filepath.Join(dir, "on.toml")
	writeFile(b, on, "[allow]\nresolvers = [\"192.0.2.53\"]\n[inbound]\nenabled = true\n")
	relay, client := newORPortNS(b)

	const rounds, sources, perSource = 3, 2000, 2
	for _, mode := range modes {
		b.Run("backend="+mode, func(b *testing.B) {
			backend := "nftables"
			env := os.Environ()
			if mode != "nftables" {
				backend = "iptables"
				env = append(env, "PATH="+iptablesModeDir(b, dir, mode)+":"+os.Getenv("PATH"))
			}
			relayfw := func(args ...string) string {
				var out []byte
				var err error
				inNS(b, relay, func() {
					cmd := exec.Command(bin, append([]string{"--backend", backend, "--torrc", torrc}, args...)...)
					cmd.Env = env
					out, err = cmd.CombinedOutput()
				})
				if err != nil {
					b.Fatalf("relayfw %v: %v\n%s", args, err, out)
				}
				return string(out)
			}
			var rateOff, rateOn []float64
			for i := 0; i < b.N; i++ {
				for r := 0; r < rounds; r++ {
					relayfw("--config", off, "remove")
					relayfw("--config", off, "apply")
					rateOff = append(rateOff, sourcesRate(b, client, sources, perSource))
					relayfw("--config", off, "remove")
					relayfw("--config", on, "apply")
					rateOn = append(rateOn, sourcesRate(b, client, sources, perSource))
					// The protection looked at every connection and
					// refused none: it measured what it claims.
					st := relayfw("--config", on, "status", "--format", "json")
					want := fmt.Sprintf(`"new_connections": %d,`, sources*perSource)
					if !strings.Contains(st, want) || !strings.Contains(st, `"blocked": []`) {
						b.Fatalf("status after the round has no %s, or blocks:\n%s", want, st)
					}
				}
			}
			relayfw("--config", off, "remove")
			ro, rn := medianF(rateOff), medianF(rateOn)
			b.ReportMetric(ro, "conn/s-inbound-off")
			b.ReportMetric(rn, "conn/s-inbound-on")
			b.ReportMetric(rn/ro, "inbound-on/off")
			b.Logf("%s: %d sources x %d connections: %.0f/s with [inbound] off, %.0f/s on (ratio %.2f) (medians of %d)",
				mode, sources, perSource, ro, rn, rn/ro, len(rateOn))
		})
	}
}

// orPortAddr is the relay's ORPort listener; sourceNet the client's
// sources (a local route on its lo: any address in it can be bound).
var (
	orPortAddr = netip.MustParseAddrPort("198.51.100.1:9001")
	sourceNet  = netip.MustParsePrefix("10.77.0.0/16")
)

// newORPortNS makes the relay namespace with an ORPort listener and a
// client namespace that owns sourceNet, joined by veth; the relay routes
// everything to the client.
func newORPortNS(b *testing.B) (relay, client netns.NsHandle) {
	relay = newBenchNS(b, "rfwinrelay")
	client = newBenchNS(b, "rfwinclient")
	if err := netnstest.Veth(relay, client, []string{"198.51.100.1/30"}, []string{"198.51.100.2/30"}); err != nil {
		b.Fatal(err)
	}
	for _, ns := range []netns.NsHandle{relay, client} {
		h, err := netlink.NewHandleAt(ns)
		if err != nil {
			b.Fatal(err)
		}
		err = netnstest.LinkUp(h, "lo")
		if err == nil && ns == relay {
			var l netlink.Link
			if l, err = h.LinkByName("veth0"); err == nil {
				err = h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP("198.51.100.2")})
			}
		}
		if err == nil && ns == client {
			var lo netlink.Link
			if lo, err = h.LinkByName("lo"); err == nil {
				err = h.RouteAdd(&netlink.Route{LinkIndex: lo.Attrs().Index, Type: unix.RTN_LOCAL, Table: unix.RT_TABLE_LOCAL, Scope: netlink.SCOPE_HOST,
					Dst: &net.IPNet{IP: sourceNet.Addr().AsSlice(), Mask: net.CIDRMask(sourceNet.Bits(), 32)}})
			}
		}
		h.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
	var l net.Listener
	if err := netnstest.Do(relay, func() (err error) {
		l, err = net.Listen("tcp", orPortAddr.String())
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return relay, client
}

// sourcesRate opens perSource connections from each of n sources in
// sourceNet, round-robin, and returns connections per second. Each
// closes with a reset, so no TIME_WAIT piles up.
func sourcesRate(b *testing.B, client netns.NsHandle, n, perSource int) float64 {
	var rate float64
	inNS(b, client, func() {
		base := sourceNet.Addr().As4()
		start := time.Now()
		for k := 0; k < perSource; k++ {
			for i := 0; i < n; i++ {
				src := base
				src[2], src[3] = byte((i+1)>>8), byte(i+1)
				d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: src[:]}}
				c, err := d.Dial("tcp", orPortAddr.String())
				if err != nil {
					b.Fatalf("connect from %v: %v", netip.AddrFrom4(src), err)
				}
				_ = c.(*net.TCPConn).SetLinger(0)
				c.Close()
			}
		}
		rate = float64(n*perSource) / time.Since(start).Seconds()
	})
	return rate
}
