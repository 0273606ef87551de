package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/ruleset"
)

// stateFile names a state file of the namespace this process runs in. The
// namespace is named by its cookie, which the kernel never reuses (an
// inode number can be, once a namespace is gone), else by its inode.
func (s *System) stateFile(kind, ext string) string {
	name := kind
	if cookie, ok := netnsCookie(); ok {
		name = fmt.Sprintf("%s-netns%d", kind, cookie)
	} else if fi, err := os.Stat(filepath.Join(s.ProcRoot, "self/ns/net")); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			name = fmt.Sprintf("%s-net%d", kind, st.Ino)
		}
	}
	return filepath.Join(s.StateDir, name+ext)
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

// LockPath, StatePath, PendingPath, AppliedRulesetPath and
// RollbackLogPath are this namespace's state files.
func (s *System) LockPath() string           { return s.stateFile("lock", "") }
func (s *System) StatePath() string          { return s.stateFile("state", ".json") }
func (s *System) PendingPath() string        { return s.stateFile("state", ".pending.json") }
func (s *System) AppliedRulesetPath() string { return s.stateFile("state", ".ruleset.json") }
func (s *System) RollbackLogPath() string    { return s.stateFile("state", ".rollback.log") }
func (s *System) previousRulesetPath() string {
	return s.stateFile("state", ".previous.json")
}

// State is what the last apply recorded.
type State struct {
	AppliedAt time.Time `json:"applied_at"`
	Backend   string    `json:"backend"` // "nftables" or "iptables"
	// Kernel is what the kernel held right after the last change, when
	// the backend numbers its ruleset's generations.
	Kernel *KernelRecord `json:"kernel,omitempty"`
}

// ReadState reads the record of the last apply.
func (s *System) ReadState() (State, bool) {
	var st State
	data, err := os.ReadFile(s.StatePath())
	if err != nil || json.Unmarshal(data, &st) != nil {
		return st, false
	}
	return st, true
}

// RecordApply remembers an apply with a backend kind, and what the
// kernel then held (nil: unknown).
func (s *System) RecordApply(kind string, kernel *KernelRecord) error {
	return s.writeState(State{AppliedAt: time.Now().UTC().Truncate(time.Second), Backend: kind, Kernel: kernel})
}

func (s *System) writeState(st State) error {
	data, _ := json.Marshal(st)
	return writeAtomic(s.StatePath(), data, 0o644)
}

// ForgetApply drops the record: nothing is installed.
func (s *System) ForgetApply() {
	_ = os.Remove(s.StatePath())
	_ = os.Remove(s.AppliedRulesetPath())
}

// SaveRuleset remembers the ruleset an apply installed, for a rollback.
func SaveRuleset(path string, rs ruleset.Ruleset) error {
	data, err := json.Marshal(rs)
	if err != nil {
		return err
	}
	return writeAtomic(path, data, 0o600)
}

// LoadRuleset reads a ruleset SaveRuleset wrote.
func LoadRuleset(path string) (ruleset.Ruleset, error) {
	var rs ruleset.Ruleset
	data, err := os.ReadFile(path)
	if err != nil {
		return rs, err
	}
	if err := json.Unmarshal(data, &rs); err != nil {
		return rs, fmt.Errorf("%s: %w", path, err)
	}
	return rs, nil
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// Written, synced, then renamed over the old file, and the directory
	// synced: after a power loss /var/lib/relayfw holds the old record or
	// the new one, never an empty or torn one (the boot's fallback reads
	// it).
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// StateError is relayfw's state that cannot be created: NotPermitted
// (root or CAP_NET_ADMIN needed) or not at all (read-only, full).
type StateError struct {
	Path string
	Err  error
}

func (e *StateError) Error() string {
	if e.NotPermitted() {
		return fmt.Sprintf("%s: %v", e.Path, firewall.ErrNotPermitted)
	}
	return fmt.Sprintf("cannot create relayfw's state in %s: %v (it must be writable, e.g. a tmpfs /run)", e.Path, e.Err)
}

func (e *StateError) Unwrap() error { return e.Err }

// NotPermitted says the state failed for want of privileges.
func (e *StateError) NotPermitted() bool {
	return errors.Is(e.Err, os.ErrPermission) && !errors.Is(e.Err, syscall.EROFS)
}

// BusyError is another relayfw holding the lock past the wait.
type BusyError struct{ Path string }

func (e *BusyError) Error() string {
	return fmt.Sprintf("another relayfw is changing the firewall (lock %s); try again, or wait with --wait 30s", e.Path)
}

// Lock serializes the operations that change the firewall (apply,
// refresh, remove, confirm, rollback): an exclusive flock on the
// namespace's lock file, waiting up to wait (0: not at all) or until ctx
// ends. The lock goes with the process, so a killed relayfw never leaves
// it held.
func (s *System) Lock(ctx context.Context, wait time.Duration) (release func(), err error) {
	return s.flockState(ctx, wait, unix.LOCK_EX)
}

// ReadLock is the lock of an operation that only reads the firewall
// (check, status, a dry run): shared among readers, it waits for a change
// in progress to end. A dump of the kernel's rules that spans another
// process's commit can mix the old firewall with the new and report drift
// that is not there. It waits up to wait (or until ctx ends); ok is false
// when the lock could not be had, and the caller reads anyway.
func (s *System) ReadLock(ctx context.Context, wait time.Duration) (release func(), ok bool) {
	release, err := s.flockState(ctx, wait, unix.LOCK_SH)
	if err != nil {
		return func() {}, false
	}
	return release, true
}

// flockState takes the namespace's lock file with flock how (LOCK_EX or
// LOCK_SH), polling until wait has passed or ctx ends.
func (s *System) flockState(ctx context.Context, wait time.Duration, how int) (release func(), err error) {
	if err := os.MkdirAll(s.StateDir, 0o755); err != nil {
		return nil, &StateError{Path: s.StateDir, Err: err}
	}
	path := s.LockPath()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, &StateError{Path: path, Err: err}
	}
	deadline := time.Now().Add(wait)
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return func() { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			f.Close()
			return nil, &BusyError{Path: path}
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}
