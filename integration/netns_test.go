package integration

import (
	"fmt"
	"net"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/relayfw/relayfw/internal/netnstest"
)

var nsCounter atomic.Int64

// newIsolatedNS creates a network namespace with nothing but lo (up) and
// removes it when the test ends.
func newIsolatedNS(t *testing.T, prefix string) string {
	t.Helper()
	name := fmt.Sprintf("%s%d-%d", prefix, time.Now().UnixNano()%1e6, nsCounter.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up in %s: %v\n%s", name, err, out)
	}
	// relayfw's files for the namespace go with it.
	cookie := netnsCookie(t, name)
	ownCookies.Store(cookie, true)
	t.Cleanup(func() { removeNetnsFiles(cookie) })
	return name
}

// ownCookies are the cookies of the namespaces this test process made:
// the only ones whose files it may remove (another test process, say in
// another checkout, may be running beside it).
var ownCookies sync.Map

// removeNetnsFiles removes the files relayfw kept for the namespace with
// this cookie, in /run/relayfw and /var/lib/relayfw.
func removeNetnsFiles(cookie uint64) { netnstest.RemoveStateFiles(cookie) }

// inNS runs f on a thread switched into the named namespace. Sockets f
// opens stay in that namespace after the thread switches back.
func inNS(name string, f func() error) error {
	target, err := netns.GetFromName(name)
	if err != nil {
		return err
	}
	defer target.Close()
	return netnstest.Do(target, f)
}

// dialInNS opens a TCP connection from inside the named namespace.
func dialInNS(name, addr string, timeout time.Duration) (net.Conn, error) {
	var conn net.Conn
	err := inNS(name, func() (err error) {
		conn, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	return conn, err
}

// vethBetween links two named namespaces with a veth pair holding these
// addresses.
func vethBetween(t *testing.T, a, b string, addrsA, addrsB []string) {
	t.Helper()
	ha, err := netns.GetFromName(a)
	if err != nil {
		t.Fatal(err)
	}
	defer ha.Close()
	hb, err := netns.GetFromName(b)
	if err != nil {
		t.Fatal(err)
	}
	defer hb.Close()
	if err := netnstest.Veth(ha, hb, addrsA, addrsB); err != nil {
		t.Fatal(err)
	}
}

// addrsOnLo puts addresses on lo in the named namespace: hosts that
// namespace plays.
func addrsOnLo(t *testing.T, ns string, addrs ...string) {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	if err := netnstest.LinkUp(nh, "lo", addrs...); err != nil {
		t.Fatal(err)
	}
}

// serveUDP answers every datagram to addr in ns with reply(datagram)
// (nil: no answer) until the test ends.
func serveUDP(t *testing.T, ns, addr string, reply func([]byte) []byte) {
	t.Helper()
	var pc net.PacketConn
	if err := inNS(ns, func() (err error) { pc, err = net.ListenPacket("udp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := reply(buf[:n]); resp != nil {
				_, _ = pc.WriteTo(resp, from)
			}
		}
	}()
}

// inParallel runs f(i) for i < n, at most four at a time (each a tor or
// a namespace), and waits for all.
func inParallel(n int, f func(i int)) {
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f(i)
		}()
	}
	wg.Wait()
}
