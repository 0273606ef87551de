package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The inbound protection's tests: the net namespace plays the sources,
// each an address on its lo (so replies route back through the veth), and
// connects to the relay's ORPort and to an "SSH" port there.

const (
	orPort  = 9001
	sshPort = 22
)

// inboundConsensus lists an authority (dir-source, IPv4) and a relay with
// the Authority flag and an IPv6 ORPort. The consensus is tor's user's to
// write, so neither is trusted for that: the torrc's DirAuthority line
// (inboundAuthority) makes auth1 trusted, in both families.
const inboundConsensus = "network-status-version 3 microdesc\nvote-status consensus\n" +
	"dir-source auth1 1111111111111111111111111111111111111111 auth1.example 203.0.113.201 80 443\n" +
	"r auth1 AAAAAAAAAAAAAAAAAAAAAAAAAAA 2026-11-25 11:00:00 203.0.113.201 443 80\na [2001:db8:201::1]:443\ns Authority Fast Running Valid\n" +
	"r linkrelay BBBBBBBBBBBBBBBBBBBBBBBBBBB 2026-11-25 11:00:00 198.51.100.2 9001 0\ns Fast Running Valid\n"

// inboundAuthority is the torrc's line for the test network's authority.
const inboundAuthority = "DirAuthority auth1 orport=443 v3ident=1111111111111111111111111111111111111111 ipv6=[2001:db8:201::1]:443 203.0.113.201:80 AAAA AAAA AAAA AAAA AAAA AAAA AAAA AAAA AAAA AAAA\n"

// inboundSources are the source addresses the tests connect from; the
// IPv6 flooder's neighbour shares its /64, the other does not.
var inboundSources = struct {
	flood4, other4, auth4                     string
	flood6, neighbour6, other6, auth6, early6 string
	early4, conns4, conns6                    string
}{
	flood4: "203.0.113.7", other4: "203.0.113.8", auth4: "203.0.113.201", early4: "203.0.113.9", conns4: "203.0.113.10",
	flood6: "2001:db8:100::7", neighbour6: "2001:db8:100::8", other6: "2001:db8:200::8", auth6: "2001:db8:201::1",
	early6: "2001:db8:300::9", conns6: "2001:db8:400::10",
}

// dialFrom opens a TCP connection from src in ns to dst.
func dialFrom(ns string, src netip.Addr, dst netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	var conn net.Conn
	err := inNS(ns, func() (err error) {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		conn, err = d.Dial("tcp", dst.String())
		return err
	})
	return conn, err
}

// attempt connects from src to the relay's port and closes at once.
func attempt(t *testing.T, tn *testNet, src string, port uint16) outcome {
	t.Helper()
	dst := tn.relayAddr4
	if netip.MustParseAddr(src).Is6() {
		dst = tn.relayAddr6
	}
	return attemptTo(t, tn, src, netip.AddrPortFrom(dst, port))
}

// attemptTo connects from src in net to dst and closes at once.
func attemptTo(t *testing.T, tn *testNet, src string, dst netip.AddrPort) outcome {
	t.Helper()
	c, err := dialFrom(tn.net, netip.MustParseAddr(src), dst, time.Second)
	switch {
	case err == nil:
		c.Close()
		return connected
	case errors.Is(err, syscall.ECONNREFUSED):
		return refused
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return timedOut
	}
	t.Fatalf("connect from %s to %s: %v", src, dst, err)
	return ""
}

// echoes reports whether a connection still carries data both ways.
func echoes(c net.Conn) bool {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return false
	}
	buf := make([]byte, 5)
	_, err := io.ReadFull(c, buf)
	return err == nil && string(buf) == "ping\n"
}

// inboundNet is the test network with the relay's ORPort and SSH
// listeners (echo servers) and the sources on net's lo.
func inboundNet(t *testing.T) *testNet {
	tn := newTestNet(t)
	s := inboundSources
	var addrs []string
	for _, a := range []string{s.flood4, s.other4, s.auth4, s.early4, s.conns4, s.flood6, s.neighbour6, s.other6, s.auth6, s.early6, s.conns6} {
		addrs = append(addrs, netip.PrefixFrom(netip.MustParseAddr(a), netip.MustParseAddr(a).BitLen()).String())
	}
	addrsOnLo(t, tn.net, addrs...)
	for _, port := range []int{orPort, sshPort} {
		startListener(t, tn.relay, fmt.Sprintf("[::]:%d", port))
	}
	// A new veth's IPv6 path takes a moment (link-local addresses, then
	// neighbour discovery): wait until it carries a connection.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := dialFrom(tn.net, netip.MustParseAddr(s.other6), netip.AddrPortFrom(tn.relayAddr6, sshPort), 300*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no IPv6 connection from net to relay: %v", err)
		}
	}
	return tn
}

// inboundFlags are the flags of a relay with ORPort 9001 and [inbound]
// set by extra (none: the protection is off).
func inboundFlags(t *testing.T, b backend, extra string) []string {
	t.Helper()
	flags := relayInputs(t, b.flag, "ExitRelay 1\nIPv6Exit 1\nORPort 9001\nExitPolicy accept *:80,reject *:*\n"+inboundAuthority)
	dir := t.TempDir()
	flags[len(flags)-1] = writeTestConfig(t, dir, inboundConsensus, extra)
	return flags
}

func TestInbound(t *testing.T) {
	requireRoot(t)
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			t.Run("FloodBlocked", func(t *testing.T) { testInboundFlood(t, b) })
			t.Run("ConcurrentLimit", func(t *testing.T) { testInboundConcurrent(t, b) })
			t.Run("OffByDefault", func(t *testing.T) { testInboundOff(t, b) })
			t.Run("TrustedRelaysFollowTheConsensus", func(t *testing.T) { testInboundTrustRefresh(t, b) })
			t.Run("BoundORPortOnly", func(t *testing.T) { testInboundBound(t, b) })
		})
	}
}

// testInboundFlood: per family, a source that opens connections faster
// than the limit is blocked after the limit (its SYNs dropped) and stays
// blocked once its meter has refilled; its IPv6 /64 neighbour with it;
// other sources, the authority (never blocked, however fast) and SSH from
// the blocked source are untouched; a connection the source opened before
// the flood keeps working; status lists the block, metrics count it;
// unblock lifts it.
func testInboundFlood(t *testing.T, b backend) {
	tn := inboundNet(t)
	run := b.runner(t, tn)
	// 60 a minute with a burst of 8: the 9th quick connection breaks it,
	// and the meter refills a token a second, so a source still refused
	// seconds later is refused by the block set, not the meter.
	flags := inboundFlags(t, b, "[inbound]\nenabled = true\nper_minute = 60\nburst = 8\n")
	mustApply(t, run, flags)
	if code, out, errOut := run(append(flags, "check")...); code != 0 {
		t.Fatalf("check after apply: %d %s %s", code, out, errOut)
	}
	s := inboundSources
	for _, fam := range []struct {
		name                                 string
		flood, neighbour, other, auth, early string
		relay                                netip.Addr
	}{
		{"ipv4", s.flood4, "", s.other4, s.auth4, s.early4, tn.relayAddr4},
		{"ipv6", s.flood6, s.neighbour6, s.other6, s.auth6, s.early6, tn.relayAddr6},
	} {
		t.Run(fam.name, func(t *testing.T) {
			// The flooder's own connection, opened before the flood.
			early, err := dialFrom(tn.net, netip.MustParseAddr(fam.flood), netip.AddrPortFrom(fam.relay, orPort), time.Second)
			if err != nil {
				t.Fatalf("connection before the flood: %v", err)
			}
			defer early.Close()
			// 1 (early) + 7 more make the burst of 8; the next is over.
			for i := 0; i < 7; i++ {
				if got := attempt(t, tn, fam.flood, orPort); got != connected {
					t.Fatalf("connection %d of the burst: %s", i+2, got)
				}
			}
			if got := attempt(t, tn, fam.flood, orPort); got != timedOut {
				t.Fatalf("connection over the limit: %s, want dropped (timeout)", got)
			}
			time.Sleep(3 * time.Second) // the meter refills 3 tokens
			if got := attempt(t, tn, fam.flood, orPort); got != timedOut {
				t.Fatalf("3 s after the block: %s, want still dropped", got)
			}
			if !echoes(early) {
				t.Errorf("the connection opened before the flood stopped working")
			}
			if fam.neighbour != "" {
				if got := attempt(t, tn, fam.neighbour, orPort); got != timedOut {
					t.Errorf("the flooder's /64 neighbour: %s, want dropped", got)
				}
			}
			if got := attempt(t, tn, fam.other, orPort); got != connected {
				t.Errorf("another source: %s, want connected", got)
			}
			for i := 0; i < 5; i++ {
				if got := attempt(t, tn, fam.flood, sshPort); got != connected {
					t.Fatalf("SSH from the blocked source, try %d: %s", i+1, got)
				}
			}
			for i := 0; i < 20; i++ {
				if got := attempt(t, tn, fam.auth, orPort); got != connected {
					t.Fatalf("the authority's connection %d: %s, want connected (trusted)", i+1, got)
				}
			}
		})
	}

	// status lists both blocks; metrics count them.
	code, out, errOut := run(append(flags, "status", "--format", "json")...)
	if code != 0 {
		t.Fatalf("status: %d %s %s", code, out, errOut)
	}
	var st struct {
		InSync  bool `json:"in_sync"`
		Inbound struct {
			NewConnections uint64            `json:"new_connections"`
			Trusted        uint64            `json:"trusted"`
			Drops          map[string]uint64 `json:"drops"`
			Blocked        []struct {
				Source         string `json:"source"`
				ExpiresSeconds int64  `json:"expires_seconds"`
			} `json:"blocked"`
		} `json:"inbound"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status json: %v\n%s", err, out)
	}
	var blocked []string
	for _, bl := range st.Inbound.Blocked {
		blocked = append(blocked, bl.Source)
		if bl.ExpiresSeconds < 86400-120 || bl.ExpiresSeconds > 86400 {
			t.Errorf("block of %s expires in %d s, want about a day", bl.Source, bl.ExpiresSeconds)
		}
	}
	if want := []string{s.flood4 + "/32", "2001:db8:100::/64"}; strings.Join(blocked, " ") != strings.Join(want, " ") {
		t.Errorf("blocked: %v, want %v", blocked, want)
	}
	if !st.InSync {
		t.Errorf("blocks and meters made the firewall drift:\n%s", out)
	}
	if st.Inbound.Drops["minute"] < 2 || st.Inbound.Drops["blocked"] < 2 || st.Inbound.Trusted < 40 || st.Inbound.NewConnections < 60 {
		t.Errorf("inbound counters: %+v", st.Inbound)
	}
	code, out, _ = run(append(flags, "metrics")...)
	if code != 0 || !regexp.MustCompile(`(?m)^relayfw_inbound_blocked 2$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^relayfw_inbound_drops_total\{cause="minute"\} [2-9]`).MatchString(out) {
		t.Errorf("metrics: %d\n%s", code, out)
	}

	// An apply that changes the protection's rules and its block time
	// keeps the blocks, each with the time it has left, at most the new
	// block time.
	changed := inboundFlags(t, b, "[inbound]\nenabled = true\nper_minute = 60\nburst = 8\nmax_connections = 9\nblock = \"12h\"\ntrusted = [\"192.0.2.99\"]\n")
	code, out, errOut = run(append(changed, "apply")...)
	if code != 0 || !strings.Contains(out, "~ inbound protection") {
		t.Fatalf("apply of changed limits: %d %s %s", code, out, errOut)
	}
	code, out, _ = run(append(changed, "status", "--format", "json")...)
	if code != 0 || !strings.Contains(out, `"source": "`+s.flood4+`/32"`) || !strings.Contains(out, `"source": "2001:db8:100::/64"`) ||
		!regexp.MustCompile(`"expires_seconds": 43[12]\d\d`).MatchString(out) || strings.Contains(out, `"expires_seconds": 86`) {
		t.Errorf("the apply lost the blocks, or kept them longer than 12h:\n%s", out)
	}
	if got := attempt(t, tn, s.flood4, orPort); got != timedOut {
		t.Errorf("after the apply, the blocked source: %s, want dropped", got)
	}

	// explain --inbound reads the block from the kernel.
	code, out, errOut = run(append(flags, "explain", "--inbound", s.neighbour6, s.auth4+":9001", s.other4, s.flood4+":22")...)
	for _, want := range []string{"inbound from " + s.neighbour6 + ": blocked, source 2001:db8:100::/64 is blocked for 11h59m",
		"inbound from " + s.auth4 + ":9001: trusted", "inbound from " + s.other4 + ": limited, as source " + s.other4 + "/32",
		"inbound from " + s.flood4 + ":22: unprotected"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("explain --inbound: %d, want %q in:\n%s%s", code, want, out, errOut)
		}
	}

	// unblock lifts a block (any address of the /64 names it).
	code, out, errOut = run(append(flags, "unblock", s.neighbour6, s.flood4)...)
	if code != 0 || !strings.Contains(out, "unblocked 2001:db8:100::/64") || !strings.Contains(out, "unblocked "+s.flood4+"/32") {
		t.Fatalf("unblock: %d %s %s", code, out, errOut)
	}
	code, out, _ = run(append(flags, "unblock", s.flood4)...)
	if code != 0 || !strings.Contains(out, "was not blocked") {
		t.Errorf("second unblock: %d %s", code, out)
	}
	if code, _, errOut := run(append(flags, "unblock", "not-an-address")...); code != 64 {
		t.Errorf("unblock of a bad address: exit %d %s, want 64", code, errOut)
	}
	// Its meters start afresh (nftables forgets them; iptables lets it
	// skip its hashlimit meters until they have refilled): it connects
	// again at once, and a burst more, on both families.
	for _, src := range []string{s.flood4, s.neighbour6} {
		for i := 0; i < 4; i++ {
			if got := attempt(t, tn, src, orPort); got != connected {
				t.Errorf("%s after unblock, connection %d: %s, want connected", src, i+1, got)
			}
		}
	}
	code, out, _ = run(append(flags, "status", "--format", "json")...)
	if code != 0 || strings.Contains(out, `"source": "`+s.flood4) {
		t.Errorf("status after unblock still lists %s:\n%s", s.flood4, out)
	}

	// remove takes the input hook with everything else.
	if code, out, errOut := run(append(flags, "remove")...); code != 0 {
		t.Fatalf("remove: %d %s %s", code, out, errOut)
	}
	if hook := inputHook(t, b, tn.relay); hook != "" {
		t.Errorf("after remove, relayfw still hooks input:\n%s", hook)
	}
}

// testInboundConcurrent: with the rates out of the way, a source holding
// max_connections connections gets a reset for the next one, and gets in
// again when one closes.
func testInboundConcurrent(t *testing.T, b backend) {
	tn := inboundNet(t)
	run := b.runner(t, tn)
	flags := inboundFlags(t, b, "[inbound]\nenabled = true\nper_minute = 1000\nburst = 1000\nper_hour = 10000\nmax_connections = 4\n")
	mustApply(t, run, flags)
	s := inboundSources
	for _, src := range []string{s.conns4, s.conns6} {
		t.Run(src, func(t *testing.T) {
			a := netip.MustParseAddr(src)
			relay := tn.relayAddr4
			if a.Is6() {
				relay = tn.relayAddr6
			}
			var held []net.Conn
			defer func() {
				for _, c := range held {
					c.Close()
				}
			}()
			for i := 0; i < 4; i++ {
				c, err := dialFrom(tn.net, a, netip.AddrPortFrom(relay, orPort), time.Second)
				if err != nil {
					t.Fatalf("connection %d of 4: %v", i+1, err)
				}
				if !echoes(c) {
					t.Fatalf("connection %d of 4 does not echo", i+1)
				}
				held = append(held, c)
			}
			if got := attempt(t, tn, src, orPort); got != refused {
				t.Fatalf("5th concurrent connection: %s, want refused (reset)", got)
			}
			if got := attempt(t, tn, src, sshPort); got != connected {
				t.Errorf("SSH while at the limit: %s", got)
			}
			held[0].Close()
			held = held[1:]
			time.Sleep(200 * time.Millisecond) // the close reaches conntrack
			if got := attempt(t, tn, src, orPort); got != connected {
				t.Errorf("after one closed: %s, want connected", got)
			}
			for _, c := range held {
				if !echoes(c) {
					t.Errorf("a held connection stopped working")
				}
			}
		})
	}
	code, out, _ := run(append(flags, "status", "--format", "json")...)
	if code != 0 || !regexp.MustCompile(`"conns": [2-9]`).MatchString(out) {
		t.Errorf("status does not count the resets: %d\n%s", code, out)
	}
}

// testInboundOff: without [inbound] relayfw has nothing on the input hook,
// and an apply with it turned off takes it away again.
func testInboundOff(t *testing.T, b backend) {
	tn := inboundNet(t)
	run := b.runner(t, tn)
	off := inboundFlags(t, b, "")
	mustApply(t, run, off)
	if hook := inputHook(t, b, tn.relay); hook != "" {
		t.Fatalf("[inbound] absent, but relayfw hooks input:\n%s", hook)
	}
	for i := 0; i < 12; i++ {
		if got := attempt(t, tn, inboundSources.flood4, orPort); got != connected {
			t.Fatalf("connection %d without protection: %s", i+1, got)
		}
	}
	on := inboundFlags(t, b, "[inbound]\nenabled = true\n")
	mustApply(t, run, on)
	if hook := inputHook(t, b, tn.relay); hook == "" {
		t.Fatalf("[inbound] enabled, but nothing hooks input")
	}
	code, out, _ := run(append(off, "apply", "--dry-run")...)
	if code != 0 || !strings.Contains(out, "- inbound protection removed") {
		t.Errorf("dry run of turning it off: %d\n%s", code, out)
	}
	code, out, _ = run(append(off, "check")...)
	if code != 1 || !strings.Contains(out, "inbound") && !strings.Contains(out, "input") {
		t.Errorf("check with the protection installed but off in the config: %d\n%s", code, out)
	}
	mustApply(t, run, off)
	if hook := inputHook(t, b, tn.relay); hook != "" {
		t.Fatalf("turned off, but relayfw still hooks input:\n%s", hook)
	}
	if code, out, _ := run(append(off, "check")...); code != 0 {
		t.Errorf("check after turning it off: %d %s", code, out)
	}
	// Turned on with --confirm and rolled back: the input hook goes with
	// the rest of the apply.
	code, out, errOut := run(append(on, "apply", "--confirm", "60s")...)
	if code != 0 || inputHook(t, b, tn.relay) == "" {
		t.Fatalf("apply --confirm with [inbound]: %d %s %s", code, out, errOut)
	}
	// A flood does not wait for the window: unblock works inside it.
	if code, out, errOut := run(append(on, "unblock", inboundSources.flood4)...); code != 0 || !strings.Contains(out, "was not blocked") {
		t.Errorf("unblock inside a confirm window: %d %s %s", code, out, errOut)
	}
	if code, out, errOut := run(append(on, "--wait", "10s", "rollback")...); code != 0 {
		t.Fatalf("rollback: %d %s %s", code, out, errOut)
	}
	if hook := inputHook(t, b, tn.relay); hook != "" {
		t.Errorf("rolled back, but relayfw still hooks input:\n%s", hook)
	}
	if code, out, _ := run(append(off, "check")...); code != 0 {
		t.Errorf("check after the rollback: %d %s", code, out)
	}
}

// testInboundTrustRefresh: with trust_relays, a relay that joins the
// consensus is trusted once refresh (not apply) brings the trusted set up
// to date; until then check says the links are behind (exit 3), not that
// the rules drifted.
func testInboundTrustRefresh(t *testing.T, b backend) {
	tn := inboundNet(t)
	run := b.runner(t, tn)
	flags := inboundFlags(t, b, "[inbound]\nenabled = true\ntrust_relays = true\n")
	mustApply(t, run, flags)
	newRelay := inboundSources.conns4
	consensus := filepath.Join(filepath.Dir(flags[len(flags)-1]), "tordata", "cached-microdesc-consensus")
	text := inboundConsensus + "r newrelay CCCCCCCCCCCCCCCCCCCCCCCCCCC 2026-11-25 12:00:00 " + newRelay + " 9001 0\ns Fast Running Valid\n"
	if err := os.WriteFile(consensus, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, _ := run(append(flags, "check")...); code != 3 {
		t.Errorf("check with a relay not yet trusted: %d, want 3 (links behind)\n%s", code, out)
	}
	code, out, errOut := run(append(flags, "refresh")...)
	if code != 0 || !regexp.MustCompile(`[2-9] added`).MatchString(out) {
		t.Fatalf("refresh: %d %s %s", code, out, errOut) // its relay link and its trusted address
	}
	if code, out, _ := run(append(flags, "check")...); code != 0 {
		t.Errorf("check after refresh: %d\n%s", code, out)
	}
	for i := 0; i < 12; i++ {
		if got := attempt(t, tn, newRelay, orPort); got != connected {
			t.Fatalf("the new relay's connection %d: %s, want connected (trusted)", i+1, got)
		}
	}
}

// testInboundBound: with ORPorts bound to one address of each family
// (tor's on .11, a web server's on .10, the same port 443), a source's
// quick connections to the web server all connect and are never metered;
// the same source is still limited and blocked on tor's address, and the
// blocked source still reaches the web server.
func testInboundBound(t *testing.T, b backend) {
	tn := inboundNet(t)
	run := b.runner(t, tn)
	// The relay's two more addresses of each family, on its lo, reached
	// from net through the link.
	web4, tor4 := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11")
	web6, tor6 := netip.MustParseAddr("2001:db8:10::10"), netip.MustParseAddr("2001:db8:10::11")
	addrsOnLo(t, tn.relay, "192.0.2.10/32", "192.0.2.11/32", "2001:db8:10::10/128", "2001:db8:10::11/128")
	for _, a := range []netip.Addr{web4, tor4, web6, tor6} {
		via := tn.relayAddr4
		if a.Is6() {
			via = tn.relayAddr6
		}
		if out, err := exec.Command("ip", "-n", tn.net, "route", "add", netip.PrefixFrom(a, a.BitLen()).String(), "via", via.String()).CombinedOutput(); err != nil {
			t.Fatalf("route to %s in net: %v %s", a, err, out)
		}
		startListener(t, tn.relay, netip.AddrPortFrom(a, 443).String())
	}
	flags := relayInputs(t, b.flag, "ExitRelay 1\nIPv6Exit 1\nORPort 192.0.2.11:443\nORPort [2001:db8:10::11]:443\nExitPolicy accept *:80,reject *:*\n")
	flags[len(flags)-1] = writeTestConfig(t, t.TempDir(), inboundConsensus, "[inbound]\nenabled = true\nper_minute = 60\nburst = 8\n")
	mustApply(t, run, flags)
	if code, out, errOut := run(append(flags, "check")...); code != 0 {
		t.Fatalf("check after apply: %d %s %s", code, out, errOut)
	}
	connect := func(src string, dst netip.Addr) outcome {
		t.Helper()
		return attemptTo(t, tn, src, netip.AddrPortFrom(dst, 443))
	}
	s := inboundSources
	for _, fam := range []struct {
		name, src string
		web, tor  netip.Addr
	}{{"ipv4", s.flood4, web4, tor4}, {"ipv6", s.flood6, web6, tor6}} {
		t.Run(fam.name, func(t *testing.T) {
			// Three times the burst to the web server: never metered.
			for i := 0; i < 25; i++ {
				if got := connect(fam.src, fam.web); got != connected {
					t.Fatalf("connection %d to the web server at %s:443: %s, want connected (not an ORPort)", i+1, fam.web, got)
				}
			}
			// tor's ORPort from the same source: a fresh burst, then blocked.
			for i := 0; i < 8; i++ {
				if got := connect(fam.src, fam.tor); got != connected {
					t.Fatalf("connection %d of the burst to the ORPort %s:443: %s", i+1, fam.tor, got)
				}
			}
			if got := connect(fam.src, fam.tor); got != timedOut {
				t.Fatalf("connection over the limit to the ORPort: %s, want dropped (timeout)", got)
			}
			// Blocked from tor, not from the web server.
			for i := 0; i < 5; i++ {
				if got := connect(fam.src, fam.web); got != connected {
					t.Fatalf("the blocked source's connection %d to the web server: %s, want connected", i+1, got)
				}
			}
		})
	}
	code, out, errOut := run(append(flags, "status", "--format", "json")...)
	if code != 0 || !strings.Contains(out, `"192.0.2.11:443"`) || !strings.Contains(out, `"[2001:db8:10::11]:443"`) ||
		!strings.Contains(out, `"source": "`+s.flood4+`/32"`) || !strings.Contains(out, `"in_sync": true`) {
		t.Errorf("status: %d %s %s", code, out, errOut)
	}
	// tor moving its IPv4 ORPort to the web server's address is a change
	// check sees and apply --dry-run names.
	moved := relayInputs(t, b.flag, "ExitRelay 1\nIPv6Exit 1\nORPort 192.0.2.10:443\nORPort [2001:db8:10::11]:443\nExitPolicy accept *:80,reject *:*\n")
	moved[len(moved)-1] = flags[len(flags)-1]
	wantDrift := "missing rule 1: -A RELAYFW-INPUT -d 192.0.2.10/32 -p tcp -m multiport --dports 443 "
	if b.mode == "" {
		wantDrift = "set inbound_endpoints4: 1 elements missing, e.g. 192.0.2.10 . 443"
	}
	if code, out, errOut := run(append(moved, "check")...); code != 1 || !strings.Contains(out, wantDrift) {
		t.Errorf("check with the ORPort moved to another address: %d, want 1 and %q in:\n%s%s", code, wantDrift, out, errOut)
	}
	code, out, errOut = run(append(moved, "apply", "--dry-run")...)
	if code != 0 || !strings.Contains(out, "~ inbound protection: new TCP connections to 192.0.2.10:443, [2001:db8:10::11]:443:") {
		t.Errorf("apply --dry-run with the ORPort moved: %d %s %s", code, out, errOut)
	}
	code, out, errOut = run(append(flags, "explain", "--inbound", "--to", web4.String(), s.other4+":443")...)
	if code != 0 || !strings.Contains(out, "unprotected, 192.0.2.10:443 is not an ORPort tor listens on") {
		t.Errorf("explain --inbound --to the web server: %d %s %s", code, out, errOut)
	}
	code, out, errOut = run(append(flags, "explain", "--inbound", s.other4+":443")...)
	if code != 0 || !strings.Contains(out, "limited") || !strings.Contains(out, "to 192.0.2.11 only") {
		t.Errorf("explain --inbound to port 443: %d %s %s", code, out, errOut)
	}
}

// inputHook is what relayfw has on the input hook in ns: the nftables
// table's input chain, or the iptables jumps from INPUT; "" when nothing.
func inputHook(t *testing.T, b backend, ns string) string {
	t.Helper()
	var out []string
	if b.mode == "" {
		text, _ := exec.Command("ip", "netns", "exec", ns, "nft", "list", "table", "inet", "relayfw").CombinedOutput()
		if strings.Contains(string(text), "hook input") {
			out = append(out, string(text))
		}
		return strings.Join(out, "")
	}
	env := b.env(t)
	for _, tool := range []string{"iptables", "ip6tables"} {
		cmd := exec.Command("ip", "netns", "exec", ns, tool, "-S")
		cmd.Env = env
		text, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s -S: %v %s", tool, err, text)
		}
		for _, l := range strings.Split(string(text), "\n") {
			if strings.Contains(l, "RELAYFW-IN") {
				out = append(out, tool+": "+l)
			}
		}
	}
	return strings.Join(out, "\n")
}
