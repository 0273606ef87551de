package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/relayfw/relayfw/host"
)

func TestLock(t *testing.T) {
	sys := host.DefaultSystem()
	sys.StateDir, sys.PersistentDir = t.TempDir(), t.TempDir()
	g := &globals{sys: sys}
	ctx := context.Background()
	release, err := lockAndRecover(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	// A second holder (another open file description) must not get it.
	_, err = lockAndRecover(ctx, g)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitTempFail {
		t.Fatalf("second lock: %v, want exit %d", err, exitTempFail)
	}
	go func() { time.Sleep(200 * time.Millisecond); release() }()
	start := time.Now()
	g.wait = 5 * time.Second
	release2, err := lockAndRecover(ctx, g)
	if err != nil {
		t.Fatalf("waiting for the lock: %v", err)
	}
	if waited := time.Since(start); waited < 150*time.Millisecond {
		t.Fatalf("got the lock after %v while it was held", waited)
	}
	release2()
}
