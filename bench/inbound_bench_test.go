package bench

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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
	modes := benchModes()
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
		for _, v6 := range []bool{false, true} {
			family := "ipv4"
			if v6 {
				family = "ipv6"
			}
			b.Run("backend="+mode+"/family="+family, func(b *testing.B) {
				backend, env := modeEnv(b, dir, mode)
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
						rateOff = append(rateOff, sourcesRate(b, client, v6, sources, perSource))
						relayfw("--config", off, "remove")
						relayfw("--config", on, "apply")
						rateOn = append(rateOn, sourcesRate(b, client, v6, sources, perSource))
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
				b.Logf("%s %s: %d sources x %d connections: %.0f/s with [inbound] off, %.0f/s on (ratio %.2f) (medians of %d)",
					mode, family, sources, perSource, ro, rn, rn/ro, len(rateOn))
			})
		}
	}
}

// orPortAddr is the relay's ORPort listener; sourceNet the client's
// sources (a local route on its lo: any address in it can be bound); each
// IPv6 source is a /64 of its own.
var (
	orPortAddr  = netip.MustParseAddrPort("198.51.100.1:9001")
	orPortAddr6 = netip.MustParseAddrPort("[2001:db8::1]:9001")
	sourceNet   = netip.MustParsePrefix("10.77.0.0/16")
	sourceNet6  = netip.MustParsePrefix("2001:db8:7700::/40")
)

// newORPortNS makes the relay namespace with an ORPort listener and a
// client namespace that owns sourceNet, joined by veth; the relay routes
// everything to the client.
func newORPortNS(b *testing.B) (relay, client netns.NsHandle) {
	relay = newBenchNS(b, "rfwinrelay")
	client = newBenchNS(b, "rfwinclient")
	if err := netnstest.Veth(relay, client, []string{"198.51.100.1/30", "2001:db8::1/126"}, []string{"198.51.100.2/30", "2001:db8::2/126"}); err != nil {
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
				for _, gw := range []string{"198.51.100.2", "2001:db8::2"} {
					if err == nil {
						err = h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP(gw)})
					}
				}
			}
		}
		if err == nil && ns == client {
			var lo netlink.Link
			if lo, err = h.LinkByName("lo"); err == nil {
				for _, p := range []netip.Prefix{sourceNet, sourceNet6} {
					if err == nil {
						err = h.RouteAdd(&netlink.Route{LinkIndex: lo.Attrs().Index, Type: unix.RTN_LOCAL, Table: unix.RT_TABLE_LOCAL, Scope: netlink.SCOPE_HOST,
							Dst: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}})
					}
				}
			}
		}
		h.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
	var l net.Listener
	if err := netnstest.Do(relay, func() (err error) {
		l, err = net.Listen("tcp", fmt.Sprintf("[::]:%d", orPortAddr.Port())) // both families
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

// freebind lets a socket bind an address of a local route that no
// interface holds (IPv4 allows that for local routes by itself; IPv6 asks
// for it).
func freebind(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1) })
	if err != nil {
		return err
	}
	return serr
}

// sourcesRate opens perSource connections from each of n sources in
// sourceNet (v6: a /64 each in sourceNet6), round-robin, and returns
// connections per second. Each closes with a reset, so no TIME_WAIT piles
// up.
func sourcesRate(b *testing.B, client netns.NsHandle, v6 bool, n, perSource int) float64 {
	var rate float64
	inNS(b, client, func() {
		dst := orPortAddr
		if v6 {
			dst = orPortAddr6
		}
		source := func(i int) netip.Addr {
			if v6 {
				a := sourceNet6.Addr().As16()
				a[6], a[7], a[15] = byte((i+1)>>8), byte(i+1), 1 // 2001:db8:77::/40 + a /64 per source
				return netip.AddrFrom16(a)
			}
			a := sourceNet.Addr().As4()
			a[2], a[3] = byte((i+1)>>8), byte(i+1)
			return netip.AddrFrom4(a)
		}
		start := time.Now()
		for k := 0; k < perSource; k++ {
			for i := 0; i < n; i++ {
				src := source(i)
				d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Control: freebind}
				c, err := d.Dial("tcp", dst.String())
				if err != nil {
					b.Fatalf("connect from %v: %v", src, err)
				}
				_ = c.(*net.TCPConn).SetLinger(0)
				c.Close()
			}
		}
		rate = float64(n*perSource) / time.Since(start).Seconds()
	})
	return rate
}
