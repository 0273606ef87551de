package integration

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// bootTorrc is the good torrc of the boot tests: TCP 80 is an exit port,
// 25 is not. Without User, so the policy applies to the probes' sockets.
const bootTorrc = "ORPort 9001\nExitRelay 1\nExitPolicy accept *:80\nExitPolicy reject *:*\n"

// bootBroken is a torrc relayfw cannot read (65): the typo an operator's
// edit brings, and a policy that would open 25.
const bootBroken = "ORPort 9001\nExitRelay 1\nExitPolcy accept *:25\nExitPolicy accept *:80\n"

// TestBootFailsClosed: relayfw boot, which relayfw.service runs, on a
// host whose firewall a reboot flushed. A good torrc is applied; a torrc
// it cannot read gets the last good firewall (exit 0, status says
// "fallback"), else the minimal one: no exit traffic, DNS and
// established connections still go, and the apply's exit code (65), so
// that tor does not start. After an unconfirmed rollback boot keeps the
// last good firewall, whatever the torrc says.
func TestBootFailsClosed(t *testing.T) {
	requireRoot(t)
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Run("good torrc", func(t *testing.T) { testBootGood(t, b) })
			t.Run("last good", func(t *testing.T) { testBootLastGood(t, b) })
			t.Run("minimal", func(t *testing.T) { testBootMinimal(t, b) })
			t.Run("rolled back", func(t *testing.T) { testBootRolledBack(t, b) })
		})
	}
}

var (
	exitPort  = netip.MustParseAddrPort("203.0.113.5:80")
	otherPort = netip.MustParseAddrPort("203.0.113.5:25")
)

// wantProbe checks the verdict for dst.
func (tn *testNet) wantProbe(t *testing.T, when string, dst netip.AddrPort, want outcome) {
	t.Helper()
	if got, _ := tn.probe(t, dst.Addr(), dst.Port()); got != want {
		t.Errorf("%s: %s %s, want %s", when, dst, got, want)
	}
}

// rebootFlush removes the namespace's firewall and relayfw's state in
// /run, as a reboot does; /var/lib/relayfw stays.
func rebootFlush(t *testing.T, run runFunc, flags []string, tn *testNet) {
	t.Helper()
	if code, out, errOut := run(append(flags[:2:2], "remove")...); code != 0 {
		t.Fatalf("remove: exit %d %s %s", code, out, errOut)
	}
	tn.wantProbe(t, "after the flush", otherPort, connected)
}

// lastChangeOf reads status --format json's last change.
func lastChangeOf(t *testing.T, run runFunc, flags []string) (kind, detail string) {
	t.Helper()
	code, out, errOut := run(append(flags, "status", "--format", "json")...)
	var st struct {
		LastChange *struct{ Change, Detail string } `json:"last_change"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.LastChange == nil {
		t.Fatalf("status --format json: exit %d %s %s", code, out, errOut)
	}
	return st.LastChange.Change, st.LastChange.Detail
}

func testBootGood(t *testing.T, b backend) {
	tn := newTestNet(t)
	run := b.runner(t, tn)
	persistentFiles(t, tn.relay)
	flags := relayInputs(t, b.flag, bootTorrc)
	code, out, errOut := run(append(flags, "boot")...)
	if code != 0 || !strings.HasPrefix(out, "applied: ") {
		t.Fatalf("boot: exit %d %s %s", code, out, errOut)
	}
	tn.wantProbe(t, "boot", exitPort, connected)
	tn.wantProbe(t, "boot", otherPort, refused)
	if kind, _ := lastChangeOf(t, run, flags); kind != "applied" {
		t.Errorf("last change %q, want applied", kind)
	}
}

func testBootLastGood(t *testing.T, b backend) {
	tn := newTestNet(t)
	run := b.runner(t, tn)
	persistentFiles(t, tn.relay)
	flags := relayInputs(t, b.flag, bootTorrc)
	mustApply(t, run, flags) // the last good firewall
	writeFile(t, flags[3], bootBroken)
	rebootFlush(t, run, flags, tn)
	code, out, errOut := run(append(flags, "boot")...)
	if code != 0 || !strings.HasPrefix(out, "fallback: installed the last good firewall (applied at ") || !strings.Contains(errOut, "installed the last good firewall") {
		t.Fatalf("boot: exit %d, want 0 and the fallback said\n%s%s", code, out, errOut)
	}
	tn.wantProbe(t, "the last good firewall", exitPort, connected)
	tn.wantProbe(t, "the last good firewall", otherPort, refused)
	kind, detail := lastChangeOf(t, run, flags)
	if kind != "fallback" || !strings.Contains(detail, "the last good firewall") || !strings.Contains(detail, "ExitPolcy") {
		t.Errorf("last change %q %q, want fallback to the last good firewall, naming the error", kind, detail)
	}
	code, out, _ = run(append(flags, "status")...)
	if !strings.Contains(out, "\nlast change: fallback at ") || !strings.Contains(out, "\nconfig:     invalid: ") {
		t.Errorf("status: exit %d\n%s", code, out)
	}
}

func testBootMinimal(t *testing.T, b backend) {
	tn := newTestNet(t)
	run := b.runner(t, tn)
	persistentFiles(t, tn.relay)
	flags := relayInputs(t, b.flag, bootBroken)
	// A connection opened before the boot, as an SSH session is.
	conn, err := dialInNS(tn.relay, "203.0.113.7:22", 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	code, out, errOut := run(append(flags, "boot")...)
	if code != 65 || !strings.Contains(errOut, "installed the minimal firewall (no exit traffic") || !strings.Contains(errOut, "ExitPolcy") {
		t.Fatalf("boot: exit %d, want 65 and the minimal firewall said\n%s%s", code, out, errOut)
	}
	tn.wantProbe(t, "the minimal firewall", exitPort, refused)
	tn.wantProbe(t, "the minimal firewall", otherPort, refused)
	tn.wantProbe(t, "the minimal firewall: DNS to the resolver", netip.AddrPortFrom(tn.netAddr4, 53), connected)
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4)
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Errorf("the established connection: %v", err)
	} else if _, err := conn.Read(buf); err != nil || string(buf) != "ping" {
		t.Errorf("the established connection: %q %v", buf, err)
	}
	kind, detail := lastChangeOf(t, run, flags)
	if kind != "fallback" || !strings.Contains(detail, "the minimal firewall") || !strings.Contains(detail, "no last good firewall") {
		t.Errorf("last change %q %q, want fallback to the minimal firewall", kind, detail)
	}
	code, out, errOut = run(append(flags, "status", "--format", "json")...)
	var st struct{ Installed bool }
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || !st.Installed {
		t.Fatalf("status: exit %d %s %s", code, out, errOut)
	}
	for _, rule := range []string{"\"ntp\"", "\"dns-udp4\"", "\"dhcp4\"", "\"midstream\""} {
		if !strings.Contains(out, rule) {
			t.Errorf("the minimal firewall lacks rule %s:\n%s", rule, out)
		}
	}
	for _, rule := range []string{"\"exit4\"", "\"exit6\""} {
		if strings.Contains(out, rule) {
			t.Errorf("the minimal firewall has an exit rule %s", rule)
		}
	}
}

func testBootRolledBack(t *testing.T, b backend) {
	tn := newTestNet(t)
	run := b.runner(t, tn)
	lastChange, rolledBack := persistentFiles(t, tn.relay)
	lastGood := strings.Replace(lastChange, "/last-change-", "/last-good-", 1)
	flags := relayInputs(t, b.flag, bootTorrc)
	mustApply(t, run, flags) // the last good firewall
	if _, err := os.Stat(lastGood); err != nil {
		t.Fatalf("apply kept no last good firewall: %v", err)
	}
	// An apply --confirm of a torrc that opens 25 was rolled back; the
	// torrc still holds it (the record as relayfw's rollback writes it).
	writeFile(t, flags[3], "ORPort 9001\nExitRelay 1\nExitPolicy accept *:25\nExitPolicy accept *:80\nExitPolicy reject *:*\n")
	at := time.Now().UTC().Truncate(time.Second)
	writeFile(t, rolledBack, fmt.Sprintf(`{"at":%q,"why":"deadline","window":%q}`, at.Format(time.RFC3339), at.Add(-time.Second).Format(time.RFC3339)))
	rebootFlush(t, run, flags, tn)
	code, out, errOut := run(append(flags, "boot")...)
	// "installed" after the reboot's empty kernel ("kept" when it stood).
	if code != 0 || !strings.HasPrefix(out, "installed the last good firewall") {
		t.Fatalf("boot: exit %d %s %s", code, out, errOut)
	}
	tn.wantProbe(t, "after an unconfirmed rollback", exitPort, connected)
	tn.wantProbe(t, "after an unconfirmed rollback", otherPort, refused)
	if _, err := os.Stat(rolledBack); err != nil {
		t.Errorf("boot dropped the record of the rollback: %v", err)
	}

	// Without a last good firewall, nothing was ever confirmed: the
	// minimal firewall, and tor does not start (exit 1).
	if err := os.Remove(lastGood); err != nil {
		t.Fatal(err)
	}
	rebootFlush(t, run, flags, tn)
	code, out, errOut = run(append(flags, "boot")...)
	if code != 1 || !strings.Contains(errOut, "no last good firewall is recorded: installed the minimal firewall") {
		t.Fatalf("boot without a last good firewall: exit %d, want 1\n%s%s", code, out, errOut)
	}
	tn.wantProbe(t, "the minimal firewall after an unconfirmed rollback", exitPort, refused)
	tn.wantProbe(t, "the minimal firewall after an unconfirmed rollback", otherPort, refused)
}
