// Package netnstest switches a thread between network namespaces for the
// integration tests and the benchmarks, which both run real commands and
// sockets inside namespaces they create.
package netnstest

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
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
