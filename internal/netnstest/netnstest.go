// Package netnstest switches a thread between network namespaces, and
// links namespaces with veth pairs, for the integration tests and the
// benchmarks, which both run real commands and sockets inside namespaces
// they create.
package netnstest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Restoring runs f on a locked thread and then returns the thread to the
// namespace it started in, also when f ends the goroutine (t.Fatal): f may
// switch namespaces freely.
func Restoring(f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	defer func() {
		if err := netns.Set(orig); err != nil {
			// The thread is in the wrong namespace: do not reuse it.
			panic(fmt.Sprintf("cannot return to the original network namespace: %v", err))
		}
	}()
	return f()
}

// Do runs f on a thread switched into ns. Sockets f opens stay in ns after
// the thread switches back; commands f starts run in ns.
func Do(ns netns.NsHandle, f func() error) error {
	return Restoring(func() error {
		if err := netns.Set(ns); err != nil {
			return err
		}
		return f()
	})
}

// Veth joins namespaces a and b with a veth pair, veth0 in a and veth1 in
// b, each up with its addresses (CIDR notation; usable at once, without
// duplicate address detection).
func Veth(a, b netns.NsHandle, addrsA, addrsB []string) error {
	ha, err := netlink.NewHandleAt(a)
	if err != nil {
		return err
	}
	defer ha.Close()
	hb, err := netlink.NewHandleAt(b)
	if err != nil {
		return err
	}
	defer hb.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "veth0", Namespace: netlink.NsFd(a)},
		PeerName: "veth1", PeerNamespace: netlink.NsFd(b)}
	if err := ha.LinkAdd(veth); err != nil {
		return fmt.Errorf("veth: %w", err)
	}
	if err := LinkUp(ha, "veth0", addrsA...); err != nil {
		return err
	}
	return LinkUp(hb, "veth1", addrsB...)
}

// LinkUp gives the link its addresses (without duplicate address
// detection) and brings it up.
func LinkUp(h *netlink.Handle, name string, addrs ...string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		addr, err := netlink.ParseAddr(a)
		if err != nil {
			return err
		}
		addr.Flags |= syscall.IFA_F_NODAD
		if err := h.AddrAdd(l, addr); err != nil {
			return fmt.Errorf("%s %s: %w", name, a, err)
		}
	}
	return h.LinkSetUp(l)
}

// Cookie is the network namespace's cookie (SO_NETNS_COOKIE, Linux 5.14+),
// which the kernel never reuses: relayfw names the files it keeps for a
// namespace other than the host's by it ("state-netns123.json").
func Cookie(ns netns.NsHandle) (uint64, error) {
	var cookie uint64
	err := Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		return err
	})
	return cookie, err
}

// stateFileRE finds the namespace cookie in the name of a file relayfw
// keeps per network namespace ("state-netns123.json", "lock-netns123").
var stateFileRE = regexp.MustCompile(`-netns(\d+)(\D|$)`)

// RemoveStateFiles removes the files relayfw kept, in /run/relayfw and
// /var/lib/relayfw, for the namespace with this cookie: once the
// namespace is gone nothing reads them again.
func RemoveStateFiles(cookie uint64) {
	for _, dir := range []string{"/run/relayfw", "/var/lib/relayfw"} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if m := stateFileRE.FindStringSubmatch(e.Name()); m != nil && m[1] == strconv.FormatUint(cookie, 10) && e.Type().IsRegular() {
				_ = os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
}

// Serve accepts connections on l until it is closed, each handled by
// handle in a goroutine of its own and closed after.
func Serve(l net.Listener, handle func(net.Conn)) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
}
