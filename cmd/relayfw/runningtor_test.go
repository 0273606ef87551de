package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/relayfw/relayfw/host"
	"github.com/relayfw/relayfw/internal/torcontrol/torcontroltest"
)

// TestPolicyFromTor: policy --from-tor prints what the running tor says
// (a fake control server here), and exits 1 with one line when tor
// cannot be asked.
func TestPolicyFromTor(t *testing.T) {
	dir := t.TempDir()
	torrc := filepath.Join(dir, "torrc")
	text := "ORPort 9001\nExitRelay 1\nExitPolicy accept *:80,reject *:*\nControlSocket " + dir + "/control\nCookieAuthentication 1\nCookieAuthFile " + dir + "/cookie\n"
	if err := os.WriteFile(torrc, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyConfig := writeFile(t, "relayfw.toml", "")
	f := torcontroltest.New()
	f.Policy = "reject *:25\naccept *:443\nreject *:*"
	f.ServeUnix(t, filepath.Join(dir, "control"))
	f.WriteCookie(t, filepath.Join(dir, "cookie"))
	code, out, errOut := relayfw(t, "--torrc", torrc, "--config", emptyConfig, "policy", "--from-tor")
	if code != 0 || out != f.Policy+"\n" {
		t.Errorf("policy --from-tor: exit %d\n%s%s", code, out, errOut)
	}

	noControl := filepath.Join(dir, "plain")
	if err := os.WriteFile(noControl, []byte("ORPort 9001\nExitRelay 1\nControlSocket 0\nUser debian-tor\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = relayfw(t, "--torrc", noControl, "--config", emptyConfig, "policy", "--from-tor")
	want := "relayfw: policy --from-tor: tor instance plain (" + noControl + ", user debian-tor) cannot be asked: the torrc has no ControlSocket or ControlPort (\"ControlSocket 0\" at " + noControl + ":3, as relayor's torrcs have it)\n"
	if code != 1 || out != "" || errOut != want {
		t.Errorf("policy --from-tor without a control socket: exit %d, stdout %q, stderr %q; want 1 and %q", code, out, errOut, want)
	}
}

// TestRunningTorReports: what check, status and metrics say about the
// running tors.
func TestRunningTorReports(t *testing.T) {
	running := []host.RunningTor{
		{Instance: "a", Control: "/run/tor-instances/a/control", Asked: true, Matches: true, TorVersion: "0.4.9.11"},
		{Instance: "b", Control: "/run/tor-instances/b/control", Asked: true, TorVersion: "0.4.9.11",
			OnlyTor: []string{"accept *:443"}, OnlyTorTotal: 1, OnlyRelayfw: []string{"accept *:80", "accept *:8080"}, OnlyRelayfwTotal: 12,
			Discovered: []netip.Addr{netip.MustParseAddr("198.51.100.99")}, Advice: "reload tor (systemctl reload tor@b)"},
		{Instance: "c", Control: "/run/tor-instances/c/control", Why: "connecting to tor's control socket /run/tor-instances/c/control: permission denied"},
		{Instance: "d", Why: "the torrc has no ControlSocket or ControlPort"},
	}
	var check strings.Builder
	writeRunningTorCheck(&check, running)
	wantCheck := `running tor a: matches (tor 0.4.9.11 at /run/tor-instances/a/control)
running tor b: enforces another exit policy than relayfw's: 1 entry only tor has, 12 only relayfw has; reload tor (systemctl reload tor@b)
  only tor has:     accept *:443
  only relayfw has: accept *:80
                    accept *:8080
                    … and 10 more
  compare relayfw policy --from-tor --instance b with relayfw policy --instance b
  (not counted: tor's reject of 198.51.100.99, the relay's own address tor found itself)
running tor c: not asked: connecting to tor's control socket /run/tor-instances/c/control: permission denied
`
	if diff := cmp.Diff(wantCheck, check.String()); diff != "" {
		t.Errorf("check (-want +got):\n%s", diff)
	}
	if !runningTorDiffers(running) || runningTorDiffers(running[:1]) || runningTorDiffers(running[2:]) {
		t.Error("runningTorDiffers: only an asked tor that does not match differs")
	}

	wantStatus := []string{
		"running tor: a: matches (tor 0.4.9.11 at /run/tor-instances/a/control)",
		"running tor: b: differs: 1 entry only tor has, 12 only relayfw has; reload tor (systemctl reload tor@b) (relayfw check lists the entries)",
		"running tor: c: not asked: connecting to tor's control socket /run/tor-instances/c/control: permission denied",
		"running tor: d: not asked: the torrc has no ControlSocket or ControlPort",
	}
	if diff := cmp.Diff(wantStatus, runningTorStatusLines(running)); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}

	var metrics strings.Builder
	if err := writeMetrics(&metrics, &host.Status{Backend: "nftables", Config: host.ConfigStatus{Valid: true}, RunningTor: running}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\nrelayfw_tor_policy_matches{instance=\"a\"} 1\n", "\nrelayfw_tor_policy_matches{instance=\"b\"} 0\n", "# TYPE relayfw_tor_policy_matches gauge\n"} {
		if !strings.Contains(metrics.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, metrics.String())
		}
	}
	for _, absent := range []string{`instance="c"`, `instance="d"`} {
		if strings.Contains(metrics.String(), "relayfw_tor_policy_matches{"+absent) {
			t.Errorf("metrics have a tor that could not be asked (%s):\n%s", absent, metrics.String())
		}
	}
	metrics.Reset()
	if err := writeMetrics(&metrics, &host.Status{Backend: "nftables", Config: host.ConfigStatus{Valid: true}, RunningTor: running[2:]}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(metrics.String(), "relayfw_tor_policy_matches") {
		t.Errorf("relayfw_tor_policy_matches without any tor asked:\n%s", metrics.String())
	}
}
