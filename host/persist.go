package host

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/relayfw/relayfw/ruleset"
)

// persistentFile names a file of PersistentDir. The host's own network
// namespace has plain names: they must be found again after a reboot,
// when a namespace cookie is new. Any other namespace (a container, a
// test) gets files of its own, named like StateDir's.
func (s *System) persistentFile(kind string) string {
	if s.inInitNetns() {
		return filepath.Join(s.PersistentDir, kind+".json")
	}
	return filepath.Join(s.PersistentDir, filepath.Base(s.stateFile(kind, ".json")))
}

// inInitNetns says whether this process shares PID 1's network namespace.
func (s *System) inInitNetns() bool {
	same, known := sharesInitNetns(s.ProcRoot)
	return same && known
}

// sharesInitNetns compares this process's network namespace with PID 1's
// under procRoot; known is false when either cannot be read (PID 1's is
// root-only, and not even that in some sandboxes).
func sharesInitNetns(procRoot string) (same, known bool) {
	var self, init syscall.Stat_t
	if syscall.Stat(filepath.Join(procRoot, "self/ns/net"), &self) != nil || syscall.Stat(filepath.Join(procRoot, "1/ns/net"), &init) != nil {
		return false, false
	}
	return self.Dev == init.Dev && self.Ino == init.Ino, true
}

// LastGoodPath, LastChangePath and RolledBackPath are this namespace's
// persistent files.
func (s *System) LastGoodPath() string   { return s.persistentFile("last-good") }
func (s *System) LastChangePath() string { return s.persistentFile("last-change") }
func (s *System) RolledBackPath() string { return s.persistentFile("rolled-back") }

// Kinds of Change.
const (
	ChangeApplied    = "applied"     // an apply without a confirm window, or a refresh
	ChangePending    = "pending"     // an apply --confirm, waiting for confirmation
	ChangeConfirmed  = "confirmed"   // a confirm window ended with relayfw confirm
	ChangeRolledBack = "rolled back" // a confirm window, or a failed apply, rolled back
	ChangeFallback   = "fallback"    // the boot apply failed; a fallback was installed
	ChangeRemoved    = "removed"     // relayfw remove
)

// Why a rollback happened.
const (
	RollbackDeadline = "deadline" // not confirmed in time
	RollbackCommand  = "rollback" // relayfw rollback
	RollbackFailure  = "failure"  // the apply failed; what it changed was restored
)

// Change is the last change relayfw made to the firewall.
type Change struct {
	Kind string    `json:"change"`
	Why  string    `json:"why,omitempty"`
	At   time.Time `json:"at"`
	// Window names the confirm window the change opened or ended (its
	// deadline, RFC 3339), so that an apply that waited for a window can
	// tell how that window ended.
	Window string `json:"window,omitempty"`
	// Detail is one line for an operator, e.g. what a rollback restored.
	Detail string `json:"detail,omitempty"`
	// LastRollback is when the firewall was last rolled back, kept
	// across later changes.
	LastRollback *time.Time `json:"last_rollback,omitempty"`
}

// ReadLastChange reads the last change; ok is false when none is known.
// Where /var/lib/relayfw could not be written, StateDir's copy is newer.
func (s *System) ReadLastChange() (Change, bool) {
	var last Change
	found := false
	for _, path := range []string{s.LastChangePath(), s.runCopy("last-change")} {
		var c Change
		if readJSON(path, &c) && (!found || c.At.After(last.At)) {
			last, found = c, true
		}
	}
	return last, found
}

// RecordChange writes c as the last change (at now when c.At is zero),
// keeping the time of the last rollback. When /var/lib/relayfw cannot be
// written (read-only, full), StateDir keeps it until the next reboot, and
// the error says so.
func (s *System) RecordChange(c Change) error {
	if c.At.IsZero() {
		c.At = time.Now()
	}
	c.At = c.At.UTC().Truncate(time.Second)
	if c.Kind == ChangeRolledBack {
		at := c.At
		c.LastRollback = &at
	} else if prev, ok := s.ReadLastChange(); ok {
		c.LastRollback = prev.LastRollback
	}
	return s.writeKept("last-change", s.LastChangePath(), c)
}

// runCopy is StateDir's stand-in for a file of PersistentDir.
func (s *System) runCopy(kind string) string { return s.stateFile(kind, ".json") }

// writeKept writes v to path in PersistentDir, and to StateDir's copy: a
// record that must not be lost (a rollback's) survives a PersistentDir
// that cannot be written, until the next reboot.
func (s *System) writeKept(kind, path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	runErr := writeAtomic(s.runCopy(kind), data, 0o644)
	if err := writeAtomic(path, data, 0o644); err != nil {
		if runErr == nil {
			return fmt.Errorf("cannot write %s (%v): kept in %s until the next reboot", path, err, s.runCopy(kind))
		}
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	return nil
}

// readJSON reads a JSON record; false when it is missing or unreadable.
func readJSON(path string, v any) bool {
	data, err := os.ReadFile(path)
	return err == nil && json.Unmarshal(data, v) == nil
}

// LastGood is the firewall that last stood: applied without a confirm
// window, or confirmed. The boot installs it when its own apply fails.
type LastGood struct {
	Backend string    `json:"backend"`
	At      time.Time `json:"at"`
	// Digest tells, without reading the ruleset, whether an apply has
	// the same one to keep (rulesetDigest); "" in records of relayfw
	// 2026.11 and before.
	Digest  string          `json:"digest,omitempty"`
	Ruleset ruleset.Ruleset `json:"ruleset"`
}

// SaveLastGood keeps rs, installed with backend kind, as the last good
// firewall. A last good firewall that is already rs is left as it is: a
// no-op apply writes nothing to the disk.
func (s *System) SaveLastGood(kind string, rs ruleset.Ruleset) error {
	return s.saveLastGood(kind, rs, encoder(rs))
}

// encoder is rs's JSON, made once however many records ask for it.
func encoder(rs ruleset.Ruleset) func() ([]byte, error) {
	return sync.OnceValues(func() ([]byte, error) { return json.Marshal(rs) })
}

func (s *System) saveLastGood(kind string, rs ruleset.Ruleset, encoded func() ([]byte, error)) error {
	digest, err := rulesetDigest(rs)
	if err != nil {
		return err
	}
	if b, d := s.lastGoodHead(); b == kind && d == digest {
		return nil
	}
	data, err := encoded()
	if err != nil {
		return err
	}
	rec, err := json.Marshal(struct {
		Backend string          `json:"backend"`
		At      time.Time       `json:"at"`
		Digest  string          `json:"digest"`
		Ruleset json.RawMessage `json:"ruleset"`
	}{kind, time.Now().UTC().Truncate(time.Second), digest, data})
	if err != nil {
		return err
	}
	return writeAtomic(s.LastGoodPath(), rec, 0o600)
}

// lastGoodHead reads the backend and digest of the last good firewall
// from the head of its record, without reading the ruleset after them.
func (s *System) lastGoodHead() (backend, digest string) {
	f, err := os.Open(s.LastGoodPath())
	if err != nil {
		return "", ""
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", ""
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil || key == "ruleset" {
			break
		}
		var v any
		if dec.Decode(&v) != nil {
			break
		}
		str, _ := v.(string)
		switch key {
		case "backend":
			backend = str
		case "digest":
			digest = str
		}
	}
	return backend, digest
}

// ReadLastGood reads the last good firewall; an error wrapping
// os.ErrNotExist when there is none.
func (s *System) ReadLastGood() (LastGood, error) {
	var lg LastGood
	data, err := os.ReadFile(s.LastGoodPath())
	if err != nil {
		return lg, err
	}
	if err := json.Unmarshal(data, &lg); err != nil {
		return lg, fmt.Errorf("%s: %w", s.LastGoodPath(), err)
	}
	return lg, nil
}

// RolledBack records an apply --confirm that was rolled back: the torrc
// still holds the change, so until an operator applies by hand, the
// automatic applies keep the last good firewall.
type RolledBack struct {
	At  time.Time `json:"at"`
	Why string    `json:"why"`
	// Window is the deadline of the window that was rolled back.
	Window string `json:"window"`
}

// ReadRolledBack reads the record of an unconfirmed rollback (or
// StateDir's copy, where PersistentDir could not be written); ok is false
// when there is none.
func (s *System) ReadRolledBack() (RolledBack, bool) {
	var r RolledBack
	if readJSON(s.RolledBackPath(), &r) || readJSON(s.runCopy("rolled-back"), &r) {
		return r, true
	}
	return RolledBack{}, false
}

// RecordRolledBack writes the record of an unconfirmed rollback.
func (s *System) RecordRolledBack(r RolledBack) error {
	return s.writeKept("rolled-back", s.RolledBackPath(), r)
}

// ForgetRolledBack drops it: an operator applied by hand.
func (s *System) ForgetRolledBack() error {
	for _, path := range []string{s.RolledBackPath(), s.runCopy("rolled-back")} {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return err
		}
	}
	return nil
}
