package host

import "testing"

// testSystem is the real host but for relayfw's state and persistent
// records, which go to temporary directories of the test's own.
func testSystem(t *testing.T) *System {
	t.Helper()
	sys := DefaultSystem()
	sys.StateDir, sys.PersistentDir = t.TempDir(), t.TempDir()
	return sys
}
