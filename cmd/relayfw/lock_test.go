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
	sys.StateDir = t.TempDir()
	g := &globals{sys: sys}
	ctx := context.Background()
	release, err := acquireLock(ctx, g, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A second holder (another open file description) must not get it.
	_, err = acquireLock(ctx, g, 0)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitTempFail {
		t.Fatalf("second lock: %v, want exit %d", err, exitTempFail)
	}
	go func() { time.Sleep(200 * time.Millisecond); release() }()
	start := time.Now()
	release2, err := acquireLock(ctx, g, 5*time.Second)
	if err != nil {
		t.Fatalf("waiting for the lock: %v", err)
	}
	if waited := time.Since(start); waited < 150*time.Millisecond {
		t.Fatalf("got the lock after %v while it was held", waited)
	}
	release2()
}
