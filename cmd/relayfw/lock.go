package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relayfw/relayfw/firewall"
)

// lockDir holds one lock file per network namespace: the firewall is per
// namespace, so are the operations that change it.
var lockDir = "/run/relayfw"

// exitTempFail (EX_TEMPFAIL) is the exit code when another relayfw holds
// the lock and --wait did not allow waiting long enough.
const exitTempFail = 75

// lockPath names the lock of the namespace this process runs in. The
// namespace is named by its cookie, which the kernel never reuses (an
// inode number can be, once a namespace is gone), else by its inode.
func lockPath() string {
	name := "lock"
	if cookie, ok := netnsCookie(); ok {
		name = fmt.Sprintf("lock-netns%d", cookie)
	} else if fi, err := os.Stat("/proc/self/ns/net"); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			name = fmt.Sprintf("lock-net%d", st.Ino)
		}
	}
	return filepath.Join(lockDir, name)
}

// netnsCookie is SO_NETNS_COOKIE of a socket in this namespace (Linux 5.14+).
func netnsCookie() (uint64, bool) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, false
	}
	defer unix.Close(fd)
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	return cookie, err == nil
}

// acquireLock serializes apply, refresh and remove: it takes an exclusive
// flock, waiting up to wait (0: not at all). The lock goes with the
// process, so a killed relayfw never leaves it held.
func acquireLock(wait time.Duration) (release func(), err error) {
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		return nil, stateError(lockDir, err)
	}
	path := lockPath()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, stateError(path, err)
	}
	deadline := time.Now().Add(wait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, &exitError{code: exitTempFail, err: fmt.Errorf(
				"another relayfw is changing the firewall (lock %s); try again, or wait with --wait 30s", path)}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stateError maps a failure to create relayfw's state under /run: not
// permitted (77), or it cannot be created at all — read-only, full (73).
func stateError(path string, err error) error {
	if errors.Is(err, os.ErrPermission) && !errors.Is(err, syscall.EROFS) {
		return &exitError{code: exitNoPerm, err: fmt.Errorf("%s: %w", path, firewall.ErrNotPermitted)}
	}
	return &exitError{code: exitCantCreate, err: fmt.Errorf("cannot create relayfw's state in %s: %w (it must be writable, e.g. a tmpfs /run)", path, err)}
}
