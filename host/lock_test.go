package host

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// TestReadLock: readers share the lock, wait for a change in progress,
// and keep a change waiting while they read.
func TestReadLock(t *testing.T) {
	sys := testSystem(t)
	ctx := context.Background()

	r1, ok1 := sys.ReadLock(ctx, 0)
	r2, ok2 := sys.ReadLock(ctx, 0)
	if !ok1 || !ok2 {
		t.Fatalf("two readers at once: %v %v, want both", ok1, ok2)
	}
	var busy *BusyError
	if _, err := sys.Lock(ctx, 0); !errors.As(err, &busy) {
		t.Fatalf("a change while two read: %v, want BusyError", err)
	}
	r1()
	r2()

	release, err := sys.Lock(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := sys.ReadLock(ctx, 0); ok {
		r()
		t.Fatal("a reader got the lock while a change held it")
	}
	var released atomic.Bool
	go func() {
		time.Sleep(100 * time.Millisecond)
		released.Store(true)
		release()
	}()
	r, ok := sys.ReadLock(ctx, 10*time.Second)
	if !ok {
		t.Fatal("the reader did not get the lock once the change ended")
	}
	if !released.Load() {
		t.Fatal("the reader got the lock before the change released it")
	}
	r()
}
