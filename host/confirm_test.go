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
	"github.com/relayfw/relayfw/firewall/fake"
	"github.com/relayfw/relayfw/rules"
)

// fakeHost points the state at a temporary directory and the backend
// hooks at two fakes.
func fakeHost(t *testing.T) (nft, ipt *fake.Backend) {
	t.Helper()
	nft, ipt = fake.New("nftables"), fake.New("iptables")
	oldDir, oldPersistent, oldChoose, oldOthers := StateDir, PersistentDir, chooseBackend, otherBackends
	StateDir, PersistentDir = t.TempDir(), t.TempDir()
	chooseBackend = func(_ context.Context, name string, _ *slog.Logger) (firewall.Backend, error) {
		if name == "iptables" {
			return ipt, nil
		}
		return nft, nil
	}
	otherBackends = func(_ context.Context, b firewall.Backend) []firewall.Backend {
		if Kind(b) == "iptables" {
			return []firewall.Backend{nft}
		}
		return []firewall.Backend{ipt}
	}
	t.Cleanup(func() {
		StateDir, PersistentDir, chooseBackend, otherBackends = oldDir, oldPersistent, oldChoose, oldOthers
	})
	return nft, ipt
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

// holding is a fake backend with rs installed.
func holding(rs rules.Ruleset) *fake.Backend {
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
	return installed.Decision(rules.Packet{OutIface: "eth0", Dst: netip.MustParseAddr("198.51.100.9"), Proto: "tcp", DstPort: port, SYN: true}) == rules.ActionAccept
}

func TestConfirmKeepsTheNewFirewall(t *testing.T) {
	nft, _ := fakeHost(t)
	ctx := context.Background()
	a, b := policyRuleset(t, "accept *:80,reject *:*"), policyRuleset(t, "accept *:443,reject *:*")
	ap := Applier{StartWatcher: selfWatcher}
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
	if err := GuardPending(ctx, 150*time.Millisecond); !errors.As(err, &pe) || !strings.Contains(err.Error(), "relayfw rollback") {
		t.Fatalf("guard: %v", err)
	}
	// ...until confirm, which keeps b.
	if _, err := Confirm(); err != nil {
		t.Fatal(err)
	}
	if err := GuardPending(ctx, 0); err != nil {
		t.Fatalf("guard after confirm: %v", err)
	}
	if _, err := Confirm(); !errors.Is(err, ErrNothingPending) {
		t.Fatalf("second confirm: %v", err)
	}
	if got, _ := LoadRuleset(AppliedRulesetPath()); !exits(holding(got), 443) || !exits(nft, 443) || exits(nft, 80) {
		t.Fatalf("the confirmed firewall is not b")
	}
}

func TestRollbackRestoresThePrevious(t *testing.T) {
	nft, ipt := fakeHost(t)
	ctx := context.Background()
	a, b := policyRuleset(t, "accept *:80,reject *:*"), policyRuleset(t, "accept *:443,reject *:*")
	ap := Applier{StartWatcher: noWatcher}
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
	msg, err := Rollback(ctx, nil)
	if err != nil || !strings.HasPrefix(msg, "rolled back to the firewall applied at ") || !strings.HasSuffix(msg, "(iptables)") {
		t.Fatalf("rollback: %q %v", msg, err)
	}
	if !exits(ipt, 80) || exits(ipt, 443) || nft.Ruleset() != nil {
		t.Fatalf("after rollback: iptables %v, nftables %v; want a on iptables only", ipt.Ruleset() != nil, nft.Ruleset() != nil)
	}
	if st, ok := ReadState(); !ok || st.Backend != "iptables" {
		t.Fatalf("state after rollback: %+v", st)
	}
	if _, err := Rollback(ctx, nil); !errors.Is(err, ErrNothingPending) {
		t.Fatalf("second rollback: %v", err)
	}
}

func TestWatcherRollsBackAtTheDeadline(t *testing.T) {
	nft, _ := fakeHost(t)
	ctx := context.Background()
	ap := Applier{StartWatcher: noWatcher}
	// No firewall before: the rollback removes it.
	if _, _, err := ap.Apply(ctx, nft, policyRuleset(t, "accept *:80"), 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	msg, err := Watch(ctx, nil)
	if err != nil || !strings.HasSuffix(msg, ": rolled back to no firewall (relayfw's firewall is removed)") || nft.Ruleset() != nil {
		t.Fatalf("watch: %q %v, installed %v", msg, err, nft.Ruleset() != nil)
	}
	if _, ok := ReadState(); ok {
		t.Fatal("the state still records an apply")
	}
	// A confirmed apply: the watcher just ends.
	if _, _, err := ap.Apply(ctx, nft, policyRuleset(t, "accept *:80"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := Confirm(); err != nil {
		t.Fatal(err)
	}
	if msg, err := Watch(ctx, nil); msg != "" || err != nil || nft.Ruleset() == nil {
		t.Fatalf("watch after confirm: %q %v", msg, err)
	}
}

func TestNoWatcherNoWindow(t *testing.T) {
	nft, _ := fakeHost(t)
	ctx := context.Background()
	ap := Applier{StartWatcher: noWatcher}
	if _, _, err := ap.Apply(ctx, nft, policyRuleset(t, "accept *:80,reject *:*"), 0); err != nil {
		t.Fatal(err)
	}
	applies := nft.Calls(fake.OpApply)
	failing := Applier{StartWatcher: func(*Pending) (int, error) { return 0, errors.New("fork failed") }}
	_, _, err := failing.Apply(ctx, nft, policyRuleset(t, "accept *:443,reject *:*"), time.Minute)
	if err == nil || !strings.Contains(err.Error(), "nothing changed") {
		t.Fatalf("apply --confirm without a watcher: %v, want a refusal before any change", err)
	}
	if nft.Calls(fake.OpApply) != applies || !exits(nft, 80) || exits(nft, 443) {
		t.Fatal("the firewall changed without a watcher")
	}
	if err := GuardPending(ctx, 0); err != nil {
		t.Fatalf("a window is left open: %v", err)
	}
}

// stopWatcher signals the watcher only while its pid still names the
// process that started as the watcher.
func TestStopWatcherChecksTheProcess(t *testing.T) {
	child := exec.Command("sleep", "30")
	if err := child.Start(); err != nil {
		t.Fatal("cannot start sleep:", err)
	}
	defer func() { _ = child.Process.Kill() }()
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	start, ok := processStart(child.Process.Pid)
	if !ok {
		t.Fatalf("no start time in /proc/%d/stat", child.Process.Pid)
	}
	stopWatcher(&Pending{Watcher: child.Process.Pid, WatcherStart: start + 1}) // a reused pid
	select {
	case err := <-exited:
		t.Fatalf("a process that is not the watcher was signalled: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	stopWatcher(&Pending{Watcher: child.Process.Pid, WatcherStart: start})
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("the watcher was not signalled")
	}
}
