package main

import (
	"slices"
	"testing"
	"time"

	"github.com/relayfw/relayfw/host"
)

// TestBackstopCommand: the transient timer runs relayfw recover a few
// seconds after the window's deadline, in a unit named after the window.
func TestBackstopCommand(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		left time.Duration
		want []string
	}{
		{2 * time.Minute, []string{"systemd-run", "--quiet", "--collect", "--unit=relayfw-rollback-1796205720", "--on-active=125s",
			"--timer-property=AccuracySec=1s", "/usr/sbin/relayfw", "recover"}},
		{1500 * time.Millisecond, []string{"systemd-run", "--quiet", "--collect", "--unit=relayfw-rollback-1796205601", "--on-active=7s",
			"--timer-property=AccuracySec=1s", "/usr/sbin/relayfw", "recover"}},
		// A restarted watcher whose deadline passed meanwhile.
		{-time.Minute, []string{"systemd-run", "--quiet", "--collect", "--unit=relayfw-rollback-1796205540", "--on-active=1s",
			"--timer-property=AccuracySec=1s", "/usr/sbin/relayfw", "recover"}},
	} {
		got := backstopCommand("/usr/sbin/relayfw", &host.Pending{Deadline: now.Add(tc.left)}, now)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%v left:\n got %q\nwant %q", tc.left, got, tc.want)
		}
	}
}
