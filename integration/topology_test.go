package integration

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/relayfw/relayfw/internal/netnstest"
)

// testNet is the test network: a "relay" namespace where relayfw
// runs, and a "net" namespace that plays the internet, joined by a veth
// link on 198.51.100.0/30 and 2001:db8::/126. relay routes everything into
// net; net redirects every TCP destination to its own listener, so a probe
// to any address and port shows the relay's firewall verdict and never
// leaves the two namespaces.
type testNet struct {
	relay, net string
	// relayAddr4/6 are the relay's addresses on the link.
	relayAddr4, relayAddr6 netip.Addr
	netAddr4, netAddr6     netip.Addr
}

const listenerPort = 9999

// privateProbes are private addresses the tests probe (tor's private
// rejects); they are given to net's lo so every probed address belongs to
// a test host.
var privateProbes = []string{"10.1.2.3/32", "192.168.1.1/32", "172.16.5.5/32", "fc00::5/128"}

func newTestNet(t *testing.T) *testNet {
	t.Helper()
	requireRoot(t)
	requireCommand(t, "nft")
	tn := &testNet{
		relay:      newIsolatedNS(t, "rfwrelay"),
		net:        newIsolatedNS(t, "rfwnet"),
		relayAddr4: netip.MustParseAddr("198.51.100.1"),
		netAddr4:   netip.MustParseAddr("198.51.100.2"),
		relayAddr6: netip.MustParseAddr("2001:db8::1"),
		netAddr6:   netip.MustParseAddr("2001:db8::2"),
	}
	relayNS, err := netns.GetFromName(tn.relay)
	if err != nil {
		t.Fatal(err)
	}
	defer relayNS.Close()
	netNS, err := netns.GetFromName(tn.net)
	if err != nil {
		t.Fatal(err)
	}
	defer netNS.Close()
	if err := netnstest.Veth(relayNS, netNS, []string{"198.51.100.1/30", "2001:db8::1/126"}, []string{"198.51.100.2/30", "2001:db8::2/126"}); err != nil {
		t.Fatal(err)
	}
	rh, err := netlink.NewHandleAt(relayNS)
	if err != nil {
		t.Fatal(err)
	}
	defer rh.Close()
	addrsOnLo(t, tn.net, privateProbes...)
	rl, err := rh.LinkByName("veth0")
	if err != nil {
		t.Fatal(err)
	}
	for _, gw := range []string{"198.51.100.2", "2001:db8::2"} {
		if err := rh.RouteAdd(&netlink.Route{LinkIndex: rl.Attrs().Index, Gw: net.ParseIP(gw)}); err != nil {
			t.Fatalf("default route via %s: %v", gw, err)
		}
	}
	// net answers every TCP destination: redirect to its listener.
	var nat strings.Builder
	for _, fam := range []string{"ip", "ip6"} {
		fmt.Fprintf(&nat, "table %s relayfwtest {\n\tchain pre {\n\t\ttype nat hook prerouting priority dstnat;\n\t\tmeta l4proto tcp redirect to :%d\n\t}\n}\n", fam, listenerPort)
	}
	tn.nft(t, tn.net, nat.String())
	startListener(t, tn.net, fmt.Sprintf("[::]:%d", listenerPort))
	return tn
}

// nft loads a ruleset text in a namespace.
func (tn *testNet) nft(t *testing.T, ns, text string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f in %s: %v\n%s", ns, err, out)
	}
}

// listenInNS opens a TCP listener inside the named namespace.
func listenInNS(ns, addr string) (net.Listener, error) {
	var l net.Listener
	err := inNS(ns, func() (err error) {
		l, err = net.Listen("tcp", addr)
		return err
	})
	return l, err
}

// serveTCP accepts connections on addr in ns until the test ends, each
// handled by handle in a goroutine of its own (which closes it).
func serveTCP(t *testing.T, ns, addr string, handle func(net.Conn)) {
	t.Helper()
	l, err := listenInNS(ns, addr)
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { l.Close() })
	netnstest.Serve(l, handle)
}

// startListener accepts connections in ns and echoes what each sends
// until EOF, until the test ends.
func startListener(t *testing.T, ns, addr string) {
	t.Helper()
	serveTCP(t, ns, addr, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 512)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			_, _ = c.Write(buf[:n]) // echo
		}
	})
}

// outcome of a TCP connection attempt.
type outcome string

const (
	connected outcome = "connected"
	refused   outcome = "refused"
	timedOut  outcome = "timeout"
)

// probe connects from the relay namespace to addr:port.
func (tn *testNet) probe(t *testing.T, addr netip.Addr, port uint16) (outcome, time.Duration) {
	t.Helper()
	start := time.Now()
	c, err := dialInNS(tn.relay, netip.AddrPortFrom(addr, port).String(), 3*time.Second)
	elapsed := time.Since(start)
	switch {
	case err == nil:
		c.Close()
		return connected, elapsed
	case errors.Is(err, syscall.ECONNREFUSED):
		return refused, elapsed
	default:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return timedOut, elapsed
		}
		t.Fatalf("probe %s:%d: %v", addr, port, err)
	}
	return "", 0
}
