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

	"github.com/relayfw/relayfw/exitpolicy"
	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/firewall/fake"
	"github.com/relayfw/relayfw/ruleset"
)

// fakeHost points the state at a temporary directory and the backend
// hooks at two fakes.
func fakeHost(t *testing.T) (sys *System, nft, ipt *fake.Backend) {
	t.Helper()
	nft, ipt = fake.New("nftables"), fake.New("iptables")
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
func policyRuleset(t *testing.T, policy string) ruleset.Ruleset {
	t.Helper()
	entries, _, err := exitpolicy.Parse(policy)
	if err != nil {
		t.Fatal(err)
	}
	return ruleset.Compile(exitpolicy.ExitPolicy{Entries: entries}, ruleset.Host{RelayLinks: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:9001")}})
}

func noWatcher(*Pending) (int, error) { return 0, nil }

// selfWatcher records the test itself as the watcher: a live one.
func selfWatcher(*Pending) (int, error) { return os.Getpid(), nil }

// holding is a fake backend with rs installed.
func holding(rs ruleset.Ruleset) *fake.Backend {
	b := fake.New("nftables")
	b.Install(rs)
	return b
}

// exits says whether the installed ruleset lets TCP to port out.
func exits(f *fake.Backend, port uint16) bool {
	installed := f.Ruleset()
	if installed == nil {
		return false
	}
	return installed.Decide(ruleset.Packet{OutIface: "eth0", Dst: netip.MustParseAddr("198.51.100.9"), Proto: "tcp", DstPort: port, SYN: true}).Action == ruleset.Accept
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
	if got, _ := LoadRuleset(sys.AppliedRulesetPath()); !exits(holding(got), 443) || !exits(nft, 443) || exits(nft, 80) {
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
	if ipt.Ruleset() != nil {
		t.Fatal("apply with nftables left the iptables firewall")
	}
	msg, err := sys.Rollback(ctx, nil)
	if err != nil || !strings.HasPrefix(msg, "rolled back to the firewall applied at ") || !strings.HasSuffix(msg, "(iptables)") {
		t.Fatalf("rollback: %q %v", msg, err)
	}
	if !exits(ipt, 80) || exits(ipt, 443) || nft.Ruleset() != nil {
		t.Fatalf("after rollback: iptables %v, nftables %v; want a on iptables only", ipt.Ruleset() != nil, nft.Ruleset() != nil)
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
	if err != nil || !strings.HasSuffix(msg, ": rolled back to no firewall (relayfw's firewall is removed)") || nft.Ruleset() != nil {
		t.Fatalf("watch: %q %v, installed %v", msg, err, nft.Ruleset() != nil)
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
	if msg, err := sys.Watch(ctx, nil); msg != "" || err != nil || nft.Ruleset() == nil {
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
	applies := nft.Calls(fake.OpApply)
	failing := Applier{System: sys, StartWatcher: func(*Pending) (int, error) { return 0, errors.New("fork failed") }}
	_, _, err := failing.Apply(ctx, nft, policyRuleset(t, "accept *:443,reject *:*"), time.Minute)
	if err == nil || !strings.Contains(err.Error(), "nothing changed") {
		t.Fatalf("apply --confirm without a watcher: %v, want a refusal before any change", err)
	}
	if nft.Calls(fake.OpApply) != applies || !exits(nft, 80) || exits(nft, 443) {
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
