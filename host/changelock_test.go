package host

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relayfw/relayfw/exitpolicy"
	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/ruleset"
)

// windowBackend is the least of a backend a confirm window needs.
type windowBackend struct {
	firewall.Backend
	installed bool
}

func (b *windowBackend) Name() string { return "nftables (window)" }
func (b *windowBackend) Apply(context.Context, ruleset.Ruleset) (firewall.Result, error) {
	b.installed = true
	return firewall.Result{Changed: true}, nil
}
func (b *windowBackend) Remove(context.Context) (bool, error) {
	had := b.installed
	b.installed = false
	return had, nil
}

// openTestWindow applies with a confirm window of d on a host of its own
// whose watcher is the test itself.
func openTestWindow(t *testing.T, d time.Duration) (Applier, *windowBackend, *Pending) {
	t.Helper()
	sys := testSystem(t)
	b := &windowBackend{}
	sys.ChooseBackend = func(context.Context, string, *slog.Logger) (firewall.Backend, error) { return b, nil }
	sys.OtherBackends = func(context.Context, firewall.Backend) []firewall.Backend { return nil }
	a := Applier{System: sys, StartWatcher: func(*Pending) (int, error) { return syscall.Getpid(), nil }}
	_, p, err := a.Apply(context.Background(), b, ruleset.Compile(exitpolicy.ExitPolicy{}, ruleset.DefaultHost()), d)
	if err != nil || p == nil {
		t.Fatalf("apply --confirm: %v %v", p, err)
	}
	return a, b, p
}

// TestAwaitConfirm: the operator at the prompt is asked on its Out and
// confirms with a line on its In; without a prompt (no terminal),
// AwaitConfirm leaves the decision to relayfw confirm.
func TestAwaitConfirm(t *testing.T) {
	ctx := context.Background()
	a, _, p := openTestWindow(t, time.Hour)
	if kept, msg := a.AwaitConfirm(ctx, p, nil); !kept || !strings.HasPrefix(msg, "waiting for relayfw confirm until ") {
		t.Fatalf("no terminal: %v %q", kept, msg)
	}
	var asked bytes.Buffer
	kept, msg := a.AwaitConfirm(ctx, p, &Prompt{In: strings.NewReader("\n"), Out: &asked})
	if !kept || msg != "confirmed: the new firewall stays" || !strings.HasPrefix(asked.String(), "Press Enter within ") {
		t.Fatalf("Enter: %v %q, asked %q", kept, msg, asked.String())
	}
	if _, err := a.System.ReadPending(); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the window is still open: %v", err)
	}
}

// TestEndWindow: confirm keeps the firewall, rollback removes it (nothing
// stood before), and with no window open both say so.
func TestEndWindow(t *testing.T) {
	ctx := context.Background()
	a, b, _ := openTestWindow(t, time.Hour)
	if msg, err := a.EndWindow(ctx, 0, true); err != nil || msg != "confirmed: the new firewall stays" || !b.installed {
		t.Fatalf("confirm: %q %v", msg, err)
	}
	if _, err := a.EndWindow(ctx, 0, true); !errors.Is(err, ErrNothingPending) {
		t.Fatalf("confirm with no window: %v", err)
	}
	a, b, _ = openTestWindow(t, time.Hour)
	if msg, err := a.EndWindow(ctx, 0, false); err != nil || !strings.HasPrefix(msg, "rolled back to no firewall") || b.installed {
		t.Fatalf("rollback: %q %v (installed %v)", msg, err, b.installed)
	}
	if _, err := a.EndWindow(ctx, 0, false); !errors.Is(err, ErrNothingPending) || !strings.Contains(err.Error(), "was rolled back at") {
		t.Fatalf("rollback with no window: %v", err)
	}
	// Past the deadline, Recover rolls back first: confirm is too late.
	a, _, _ = openTestWindow(t, 50*time.Millisecond)
	time.Sleep(60 * time.Millisecond)
	var late *TooLateError
	if _, err := a.EndWindow(ctx, 0, true); !errors.As(err, &late) || !strings.HasPrefix(err.Error(), "confirm: too late") {
		t.Fatalf("confirm after the deadline: %v", err)
	}
}
