package host

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/rules"
)

// fakeBackend keeps the installed ruleset in memory.
type fakeBackend struct {
	kind      string
	installed *rules.Ruleset
	applies   int
	linksErr  error // what RelayLinks fails with
	applyErr  error // what Apply fails with
}

func (f *fakeBackend) Name() string                         { return f.kind + " (fake)" }
func (f *fakeBackend) Available(context.Context) error      { return nil }
func (f *fakeBackend) Render(rules.Ruleset) (string, error) { return "", nil }
func (f *fakeBackend) Apply(_ context.Context, rs rules.Ruleset) (firewall.Result, error) {
	f.applies++
	if f.applyErr != nil {
		return firewall.Result{}, f.applyErr
	}
	f.installed = &rs
	return firewall.Result{Changed: true, Rules: len(rs.Outbound)}, nil
}
func (f *fakeBackend) Check(context.Context, rules.Ruleset) ([]string, error) { return nil, nil }
func (f *fakeBackend) Remove(context.Context) (bool, error) {
	had := f.installed != nil
	f.installed = nil
	return had, nil
}
func (f *fakeBackend) Refresh(context.Context, rules.Ruleset) (int, int, error) { return 0, 0, nil }
func (f *fakeBackend) Installed(context.Context) (bool, error)                  { return f.installed != nil, nil }
func (f *fakeBackend) RelayLinks(context.Context, rules.Ruleset) (map[string][]rules.Region, error) {
	return nil, f.linksErr
}
func (f *fakeBackend) Counters(context.Context) (map[string]firewall.Counter, error) { return nil, nil }
func (f *fakeBackend) Blocked(context.Context, rules.Inbound) ([]firewall.Block, error) {
	return nil, nil
}
func (f *fakeBackend) Unblock(context.Context, netip.Prefix) (bool, error) { return false, nil }

// fakeHost points the state at a temporary directory and the backend
// hooks at two fakes.
func fakeHost(t *testing.T) (sys *System, nft, ipt *fakeBackend) {
	t.Helper()
	nft, ipt = &fakeBackend{kind: "nftables"}, &fakeBackend{kind: "iptables"}
	sys = testSystem(t)
	sys.ChooseBackend = func(_ context.Context, name string, _ *slog.Logger) (firewall.Backend, error) {
		if name == "iptables" {
			return ipt, nil
		}
		return nft, nil
	}
	sys.OtherBackends = func(_ context.Context, b firewall.Backend) []firewall.Backend {
		if Kind(b) == "iptables" {
			return []firewall.Backend{nft}
		}
		return []firewall.Backend{ipt}
	}
	return sys, nft, ipt
}

// policyRuleset is a ruleset told apart by its exit policy.
func policyRuleset(t *testing.T, policy string) rules.Ruleset {
	t.Helper()
	entries, _, err := rules.ParseExitPolicy(policy)
	if err != nil {
		t.Fatal(err)
	}
	return rules.Compile(rules.ExitPolicy{Entries: entries}, rules.Host{RelayLinks: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:9001")}})
}

func noWatcher(*Pending) (int, error) { return 0, nil }

// selfWatcher records the test itself as the watcher: a live one.
func selfWatcher(*Pending) (int, error) { return os.Getpid(), nil }

// exits says whether the installed ruleset lets TCP to port out.
func exits(f *fakeBackend, port uint16) bool {
	if f.installed == nil {
		return false
	}
	return f.installed.Decision(rules.Packet{OutIface: "eth0", Dst: netip.MustParseAddr("198.51.100.9"), Proto: "tcp", DstPort: port, SYN: true}) == rules.ActionAccept
}

func TestConfirmKeepsTheNewFirewall(t *testing.T) {
	sys, nft, _ := fakeHost(t)
	ctx := context.Background()
	a, b := policyRuleset(t, "accept *:80,reject *:*"), policyRuleset(t, "accept *:443,reject *:*")
	ap := Applier{System: sys, StartWatcher: selfWatcher}
	if _, p, err := ap.Apply(ctx, nft, a, 0); err != nil || p != nil {
		t.Fatalf("plain apply: %v %v", p, err)
	}
	_, p, err := ap.Apply(ctx, nft, b, time.Minute)
	if err != nil || p == nil || p.Previous == "" || p.PreviousAppliedAt == nil {
		t.Fatalf("apply --confirm: %+v %v", p, err)
	}
	// While the window is open, other changes are refused...
	var pe *PendingError
	if _, _, err := ap.Apply(ctx, nft, a, 0); !errors.As(err, &pe) {
		t.Fatalf("apply inside the window: %v, want a PendingError", err)
	}
	if err := sys.GuardPending(ctx, 150*time.Millisecond); !errors.As(err, &pe) || !strings.Contains(err.Error(), "relayfw rollback") {
		t.Fatalf("guard: %v", err)
	}
	// ...until confirm, which keeps b.
	if _, err := sys.Confirm(); err != nil {
		t.Fatal(err)
	}
	if err := sys.GuardPending(ctx, 0); err != nil {
		t.Fatalf("guard after confirm: %v", err)
	}
	if _, err := sys.Confirm(); !errors.Is(err, ErrNothingPending) {
		t.Fatalf("second confirm: %v", err)
	}
	if got, _ := LoadRuleset(sys.AppliedRulesetPath()); !exits(&fakeBackend{installed: &got}, 443) || !exits(nft, 443) || exits(nft, 80) {
		t.Fatalf("the confirmed firewall is not b")
	}
}

func TestRollbackRestoresThePrevious(t *testing.T) {
	sys, nft, ipt := fakeHost(t)
	ctx := context.Background()
	a, b := policyRuleset(t, "accept *:80,reject *:*"), policyRuleset(t, "accept *:443,reject *:*")
	ap := Applier{System: sys, StartWatcher: noWatcher}
	if _, _, err := ap.Apply(ctx, ipt, a, 0); err != nil {
		t.Fatal(err)
	}
	// The confirm window switches backends: nftables replaces iptables.
	if _, _, err := ap.Apply(ctx, nft, b, time.Minute); err != nil {
		t.Fatal(err)
	}
	if ipt.installed != nil {
		t.Fatal("apply with nftables left the iptables firewall")
	}
	msg, err := sys.Rollback(ctx, nil)
	if err != nil || !strings.HasPrefix(msg, "rolled back to the firewall applied at ") || !strings.HasSuffix(msg, "(iptables)") {
		t.Fatalf("rollback: %q %v", msg, err)
	}
	if !exits(ipt, 80) || exits(ipt, 443) || nft.installed != nil {
		t.Fatalf("after rollback: iptables %v, nftables %v; want a on iptables only", ipt.installed != nil, nft.installed != nil)
	}
	if st, ok := sys.ReadState(); !ok || st.Backend != "iptables" {
		t.Fatalf("state after rollback: %+v", st)
	}
	if _, err := sys.Rollback(ctx, nil); !errors.Is(err, ErrNothingPending) {
		t.Fatalf("second rollback: %v", err)
	}
}

func TestWatcherRollsBackAtTheDeadline(t *testing.T) {
	sys, nft, _ := fakeHost(t)
	ctx := context.Background()
	ap := Applier{System: sys, StartWatcher: noWatcher}
	// No firewall before: the rollback removes it.
	if _, _, err := ap.Apply(ctx, nft, policyRuleset(t, "accept *:80"), 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	msg, err := sys.Watch(ctx, nil)
	if err != nil || !strings.HasSuffix(msg, ": rolled back to no firewall (relayfw's firewall is removed)") || nft.installed != nil {
		t.Fatalf("watch: %q %v, installed %v", msg, err, nft.installed != nil)
	}
	if _, ok := sys.ReadState(); ok {
		t.Fatal("the state still records an apply")
	}
	// A confirmed apply: the watcher just ends.
	if _, _, err := ap.Apply(ctx, nft, policyRuleset(t, "accept *:80"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := sys.Confirm(); err != nil {
		t.Fatal(err)
	}
	if msg, err := sys.Watch(ctx, nil); msg != "" || err != nil || nft.installed == nil {
		t.Fatalf("watch after confirm: %q %v", msg, err)
	}
}

func TestNoWatcherNoWindow(t *testing.T) {
	sys, nft, _ := fakeHost(t)
	ctx := context.Background()
	ap := Applier{System: sys, StartWatcher: noWatcher}
	if _, _, err := ap.Apply(ctx, nft, policyRuleset(t, "accept *:80,reject *:*"), 0); err != nil {
		t.Fatal(err)
	}
	applies := nft.applies
	failing := Applier{System: sys, StartWatcher: func(*Pending) (int, error) { return 0, errors.New("fork failed") }}
	_, _, err := failing.Apply(ctx, nft, policyRuleset(t, "accept *:443,reject *:*"), time.Minute)
	if err == nil || !strings.Contains(err.Error(), "nothing changed") {
		t.Fatalf("apply --confirm without a watcher: %v, want a refusal before any change", err)
	}
	if nft.applies != applies || !exits(nft, 80) || exits(nft, 443) {
		t.Fatal("the firewall changed without a watcher")
	}
	if err := sys.GuardPending(ctx, 0); err != nil {
		t.Fatalf("a window is left open: %v", err)
	}
}

// stopWatcher signals the watcher only while its pid still names the
// process that started as the watcher.
func TestStopWatcherChecksTheProcess(t *testing.T) {
	sys := DefaultSystem()
	child := exec.Command("sleep", "30")
	if err := child.Start(); err != nil {
		t.Fatal("cannot start sleep:", err)
	}
	defer func() { _ = child.Process.Kill() }()
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	start, ok := sys.processStart(child.Process.Pid)
	if !ok {
		t.Fatalf("no start time in /proc/%d/stat", child.Process.Pid)
	}
	sys.stopWatcher(&Pending{Watcher: child.Process.Pid, WatcherStart: start + 1}) // a reused pid
	select {
	case err := <-exited:
		t.Fatalf("a process that is not the watcher was signalled: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	sys.stopWatcher(&Pending{Watcher: child.Process.Pid, WatcherStart: start})
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("the watcher was not signalled")
	}
}
