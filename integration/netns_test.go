package integration

import (
	"fmt"
	"net"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

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
	return name
}

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
