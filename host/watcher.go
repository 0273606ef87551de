package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The rollback watcher: the detached process an apply --confirm leaves
// behind, which rolls the firewall back at the deadline unless the window
// was confirmed first, and what tells whether it still runs.

// LockPatiently takes the lock however long another relayfw holds it
// (until ctx ends), saying once that it waits: the watcher's and the
// backstop timer's lock.
func (s *System) LockPatiently(ctx context.Context, log *slog.Logger) (release func(), err error) {
	release, err = s.Lock(ctx, 0)
	var busy *BusyError
	if !errors.As(err, &busy) {
		return release, err
	}
	if log != nil {
		log.Info(fmt.Sprintf("waiting for the lock %s: another relayfw holds it", s.LockPath()))
	}
	return s.Lock(ctx, 100*365*24*time.Hour)
}

// Watch is the rollback watcher: it sleeps until the pending deadline and
// rolls back unless the apply was confirmed (or rolled back) first.
func (s *System) Watch(ctx context.Context, log *slog.Logger) (string, error) {
	return Applier{Log: log, System: s}.Watch(ctx)
}

// Watch is the rollback watcher: it sleeps until the pending deadline,
// then waits for the lock as long as it takes and runs Recover, which
// rolls back unless the apply was confirmed (or rolled back) first.
func (a Applier) Watch(ctx context.Context) (string, error) {
	s := a.sys()
	for {
		p, err := s.ReadPending()
		if err != nil {
			return "", nil // confirmed, or already rolled back
		}
		if left := time.Until(p.Deadline); left > 0 {
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(min(left, 250*time.Millisecond)):
			}
			continue
		}
		release, err := s.LockPatiently(ctx, a.Log)
		if err != nil {
			return "", err
		}
		defer release()
		return a.Recover(ctx)
	}
}

// watcherAlive says whether the pending record's watcher still runs: its
// pid names a live process that started when the watcher did.
func (s *System) watcherAlive(p *Pending) bool {
	if p.Watcher <= 0 {
		return false
	}
	if p.Watcher == os.Getpid() {
		return true
	}
	start, state, ok := s.procStat(p.Watcher)
	if !ok || state == "Z" || state == "X" {
		return false
	}
	return p.WatcherStart == 0 || start == p.WatcherStart
}

// stopWatcher signals the watcher, when the process with its pid is still
// the watcher (same start time): a reused pid is left alone.
func (s *System) stopWatcher(p *Pending) {
	if p.Watcher <= 0 || p.Watcher == os.Getpid() {
		return
	}
	if start, ok := s.processStart(p.Watcher); ok && start == p.WatcherStart && p.WatcherStart != 0 {
		_ = syscall.Kill(p.Watcher, syscall.SIGTERM)
	}
}

// processStart reads a process's start time (field 22 of /proc/PID/stat,
// in clock ticks since boot).
func (s *System) processStart(pid int) (uint64, bool) {
	start, _, ok := s.procStat(pid)
	return start, ok
}

// procStat reads a process's start time and state from /proc/PID/stat.
func (s *System) procStat(pid int) (start uint64, state string, ok bool) {
	data, err := os.ReadFile(filepath.Join(s.ProcRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, "", false
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0, "", false
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 20 {
		return 0, "", false
	}
	v, err := strconv.ParseUint(f[19], 10, 64) // field 22: the 20th after ")"
	return v, f[0], err == nil
}

// InHostNetns says whether relayfw runs in the host's own network
// namespace (PID 1's): only there may it hand work to systemd, whose
// units run in that namespace.
func (s *System) InHostNetns() bool { return s.inInitNetns() }
