package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/relayfw/relayfw/exitpolicy"
	"github.com/relayfw/relayfw/internal/digits"
	"github.com/relayfw/relayfw/internal/netnstest"
)

// BenchmarkThroughput measures what relayfw's installed firewall costs the
// traffic of an exit, against no firewall at all in the same run, and, to
// show how much of that any stateful firewall costs, against conntrack
// alone (one rule that accepts established connections); interleaved
// (each state first, second and last in turn), medians of rounds:
//
//   - bulk: one TCP stream to an accepted port (443) for a fixed time,
//     bytes a second delivered;
//   - flows: N connections (10,000 by default) opened 64 at a time to
//     accepted ports (not 443) on 507 documentation addresses, the
//     connection setup rate; then, with all N established, 64-byte
//     requests and their echo over every flow in turn, 64 in flight,
//     exchanges a second; and the conntrack entries and kernel memory the
//     N flows take.
//
// The relay is an exit with `ReducedExitPolicy 1` (the long port list tor
// ships) and a consensus of the Tor network's size (9,000 relays, about
// 12,000 relay links), User debian-tor, as on a Debian relay. The traffic
// comes from a process running as debian-tor (bench/loadgen), so the exit
// class is the one its new connections traverse; a probe to a port the
// policy rejects (25) checks, every round, that the firewall refuses it
// (and that without it the connection goes through).
//
// The relay namespace, where relayfw applies, routes everything over veth
// into a net namespace that answers for 192.0.2.0/24 and 203.0.113.0/24
// with a local route on its lo, listeners on the accepted ports and on 25.
// (integration's net redirects every destination to one listener; 10,000
// flows would then map onto one listener address and port, and two flows
// from one source port to two destinations would be the same connection.)
// Every backend gets new namespaces: iptables legacy's tables stay in a
// namespace once used.
//
//	sudo RELAYFW_BENCH_ROUNDS=5 go test ./bench -run XXX -bench Throughput -benchtime 1x -timeout 60m
//
// RELAYFW_BENCH_ROUNDS (default 7) sets the rounds, RELAYFW_THROUGHPUT_FLOWS
// the flows (10,000), RELAYFW_THROUGHPUT_SECONDS the bulk send and the
// exchanges (3 s each), RELAYFW_THROUGHPUT_MODES the backends ("nftables,
// nft,legacy": iptables in nf_tables and legacy mode).
func BenchmarkThroughput(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("SKIPPED: needs root for network namespaces and the tor user's processes")
	}
	tp := newThroughputSetup(b)
	loadBefore := loadAverage(b)
	var all, allCPU []throughputRow
	var memory []conntrackRow
	for i, mode := range tp.modes {
		b.Run("backend="+mode, func(b *testing.B) {
			tn := newThroughputNet(b, i)
			backend, env := modeEnv(b, tp.dir, mode)
			flags := []string{"--backend", backend, "--torrc", tp.torrc, "--config", tp.cfg}
			cleanupNS(b, tn.relay, env, tp.bin, flags)
			samples := map[string]*throughputSamples{}
			for n := 0; n < b.N; n++ {
				for r := 0; r < tp.rounds; r++ {
					// Each state first, second and last in turn.
					for k := range throughputStates {
						state := throughputStates[(r+k)%len(throughputStates)]
						if samples[state] == nil {
							samples[state] = &throughputSamples{}
						}
						inNS(b, tn.relay, func() {
							switch state {
							case "firewall":
								timedIn(b, env, "", tp.bin, append(flags, "apply")...)
							case "conntrack":
								timedIn(b, env, "", "nft", "-f", tp.conntrackOnly)
							}
						})
						tp.measure(b, tn, state, samples[state])
						inNS(b, tn.relay, func() {
							if state == "firewall" {
								timedIn(b, env, "", tp.bin, append(flags, "remove")...)
							}
							// iptables-nft leaves its empty tables behind.
							timedIn(b, env, "", "nft", "flush", "ruleset")
						})
					}
				}
			}
			fw, ct, none := *samples["firewall"], *samples["conntrack"], *samples["none"]
			label := throughputLabel(b, mode)
			rows, cpu := throughputRows(label, tp.flows, fw, ct, none), cpuRows(label, tp.flows, fw, ct, none)
			mem := conntrackRowOf(label, tp.flows, fw, none)
			for _, r := range append(rows, cpu...) {
				b.ReportMetric(r.fwRatio.median, r.metric)
			}
			b.ReportMetric(mem.conntrackBytes, "conntrack-slab-B/flow")
			b.ReportMetric(mem.withExtensions, "conntrack+kmalloc-B/flow")
			logThroughput(b, fmt.Sprintf("medians of %d rounds", len(fw.bulk)), rows, cpu, []conntrackRow{mem})
			all, allCPU, memory = append(all, rows...), append(allCPU, cpu...), append(memory, mem)
		})
	}
	// The machine's load says how far to trust the figures.
	logThroughput(b, fmt.Sprintf("throughput through relayfw's firewall against none, %s flows, medians of %d rounds (load average %s before, %s after)",
		digits.Grouped(tp.flows), tp.rounds, loadBefore, loadAverage(b)), all, allCPU, memory)
}

// loadAverage is the host's load average over 1, 5 and 15 minutes.
func loadAverage(b *testing.B) string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		b.Fatalf("/proc/loadavg: %q", data)
	}
	return strings.Join(f[:3], " ")
}

// throughputStates are what a round measures: relayfw's firewall,
// conntrack alone (a ruleset of one rule that accepts established
// connections: what any stateful firewall costs), and no firewall.
var throughputStates = []string{"firewall", "conntrack", "none"}

// throughputSetup is what every backend's run shares.
type throughputSetup struct {
	rounds, flows int
	seconds       float64
	modes         []string
	dir           string // the benchmark's own (root's, 0700)
	bin, loadgen  string
	torrc, cfg    string
	conntrackOnly string // the nft ruleset of conntrack alone
	dests         string // the destinations file, ADDR:PORT lines
	torUser       *syscall.Credential
	// softirqThreads are ksoftirqd's /proc/PID/stat files.
	softirqThreads []string
}

// The destinations: the bulk receiver (port 443 of any address), the
// flows' addresses and ports (each accepted by ReducedExitPolicy), and a
// port it rejects.
var (
	bulkDest     = netip.MustParseAddrPort("203.0.113.80:443")
	flowNets     = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("203.0.113.0/24")}
	flowPorts    = []uint16{22, 80, 993, 5222, 6667, 8080, 8443, 9418}
	rejectedPort = uint16(25) // SMTP: every exit policy tor ships rejects it
	// relayAddr is the relay's address on the link, and its Address.
	relayAddr = netip.MustParseAddr("198.51.100.1")
	// resolver is relayfw.toml's DNS resolver: the host's allowance, not
	// the exit policy, decides for it, so no flow goes there.
	resolver = netip.MustParseAddr("192.0.2.53")
)

// exchangeConcurrency is how many connects, and exchanges, loadgen keeps
// in flight.
const exchangeConcurrency = 64

func newThroughputSetup(b *testing.B) *throughputSetup {
	tp := &throughputSetup{
		rounds:  envRounds(b),
		flows:   envInt(b, "RELAYFW_THROUGHPUT_FLOWS", 10000),
		seconds: float64(envInt(b, "RELAYFW_THROUGHPUT_SECONDS", 3)),
		modes:   []string{"nftables", "nft", "legacy"},
		dir:     b.TempDir(),
	}
	if env := os.Getenv("RELAYFW_THROUGHPUT_MODES"); env != "" {
		tp.modes = strings.Split(env, ",")
	}
	for _, mode := range tp.modes {
		throughputLabel(b, mode) // fails on an unknown one, before any work
	}
	raiseNofile(b, uint64(tp.flows)+4096)
	tp.softirqThreads = softirqThreads(b)
	checkConntrackMax(b, tp.flows)

	u, err := osuser.Lookup("debian-tor")
	if err != nil {
		b.Fatalf("%v: install tor (bash scripts/setup)", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	tp.torUser = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}

	tp.bin = buildRelayfw(b, tp.dir)
	// debian-tor runs loadgen and reads the destinations: not below the
	// benchmark's own temporary directory (mode 0700).
	shared, err := os.MkdirTemp("", "relayfw-bench-loadgen-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(shared) })
	if err := os.Chmod(shared, 0o755); err != nil {
		b.Fatal(err)
	}
	tp.loadgen = filepath.Join(shared, "loadgen")
	build := exec.Command("go", "build", "-o", tp.loadgen, "./loadgen")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build loadgen: %v\n%s", err, out)
	}

	data := debianTorDataDir(b, microdescConsensus(consensusSeed, realisticRelays, time.Now().UTC().Truncate(time.Hour)))
	tp.torrc = filepath.Join(tp.dir, "torrc")
	writeFile(b, tp.torrc, fmt.Sprintf("User debian-tor\nDataDirectory %s\nORPort 443\nAddress %s\nExitRelay 1\nReducedExitPolicy 1\n", data, relayAddr))
	tp.conntrackOnly = filepath.Join(tp.dir, "conntrack-only.nft")
	writeFile(b, tp.conntrackOnly, "table inet ctonly {\n\tchain output {\n\t\ttype filter hook output priority filter; policy accept;\n\t\tct state established,related accept\n\t}\n}\n")
	tp.cfg = filepath.Join(tp.dir, "relayfw.toml")
	writeFile(b, tp.cfg, fmt.Sprintf("[allow]\nresolvers = [%q]\n", resolver))

	// The flows must be ones the policy accepts, and the probe one it
	// rejects: relayfw's own effective policy says so.
	policy := exitpolicy.ExitPolicy{Entries: policyEntries(b, tp.bin, "--torrc", tp.torrc, "--config", tp.cfg)}
	dests := flowDestinations()
	for _, d := range append(dests, bulkDest) {
		if v := policy.Decide(d.Addr(), d.Port()); v.Action != exitpolicy.Accept {
			b.Fatalf("the policy rejects the destination %s (%s)", d, v.Entry)
		}
	}
	if v := policy.Decide(flowNets[0].Addr().Next(), rejectedPort); v.Action != exitpolicy.Reject {
		b.Fatalf("the policy accepts the probe's port %d", rejectedPort)
	}
	var lines strings.Builder
	for _, d := range dests {
		lines.WriteString(d.String() + "\n")
	}
	tp.dests = filepath.Join(shared, "destinations")
	if err := os.WriteFile(tp.dests, []byte(lines.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	return tp
}

// flowDestinations are the flows' destinations: every address of
// flowNets but the network's and broadcast's and the resolver, on each
// of flowPorts, addresses varying fastest.
func flowDestinations() []netip.AddrPort {
	var addrs []netip.Addr
	for _, p := range flowNets {
		for a := p.Addr().Next(); p.Contains(a.Next()); a = a.Next() {
			if a != resolver {
				addrs = append(addrs, a)
			}
		}
	}
	var dests []netip.AddrPort
	for _, port := range flowPorts {
		for _, a := range addrs {
			dests = append(dests, netip.AddrPortFrom(a, port))
		}
	}
	return dests
}

// throughputNet is the relay namespace, where relayfw applies, and the
// net namespace with the listeners.
type throughputNet struct {
	relay, net netns.NsHandle
}

// newThroughputNet makes the namespaces of one backend's run: relay
// (198.51.100.1/30, default route into net) and net (198.51.100.2/30, the
// flows' networks on lo), with net's listeners.
func newThroughputNet(b *testing.B, index int) *throughputNet {
	tn := &throughputNet{relay: newBenchNS(b, fmt.Sprintf("rfwtp%d-", index)), net: newBenchNS(b, fmt.Sprintf("rfwtpnet%d-", index))}
	gw := relayAddr.Next()
	if err := netnstest.Veth(tn.relay, tn.net, []string{relayAddr.String() + "/30"}, []string{gw.String() + "/30"}); err != nil {
		b.Fatal(err)
	}
	for _, ns := range []netns.NsHandle{tn.relay, tn.net} {
		h, err := netlink.NewHandleAt(ns)
		if err != nil {
			b.Fatal(err)
		}
		err = netnstest.LinkUp(h, "lo")
		if err == nil && ns == tn.relay {
			var veth netlink.Link
			if veth, err = h.LinkByName("veth0"); err == nil {
				err = h.RouteAdd(&netlink.Route{LinkIndex: veth.Attrs().Index, Gw: gw.AsSlice()})
			}
		}
		if err == nil && ns == tn.net {
			var lo netlink.Link
			if lo, err = h.LinkByName("lo"); err == nil {
				for _, p := range flowNets {
					if err == nil {
						err = h.RouteAdd(&netlink.Route{LinkIndex: lo.Attrs().Index, Type: unix.RTN_LOCAL, Table: unix.RT_TABLE_LOCAL, Scope: netlink.SCOPE_HOST,
							Dst: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}})
					}
				}
			}
		}
		h.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
	// Ephemeral ports for many more flows than the default range's 28,000.
	inNS(b, tn.relay, func() { writeSysctl(b, "net/ipv4/ip_local_port_range", "1024 65535") })

	serveIn(b, tn.net, fmt.Sprintf("0.0.0.0:%d", bulkDest.Port()), func(c net.Conn) {
		// Read everything, then close: the sender's cue that it all arrived.
		_, _ = io.Copy(io.Discard, c)
	})
	for _, port := range append([]uint16{rejectedPort}, flowPorts...) {
		serveIn(b, tn.net, fmt.Sprintf("0.0.0.0:%d", port), func(c net.Conn) {
			buf := make([]byte, 512)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			}
		})
	}
	return tn
}

// serveIn accepts connections on addr in ns until the benchmark ends,
// each handled in a goroutine of its own, closed after.
func serveIn(b *testing.B, ns netns.NsHandle, addr string, handle func(net.Conn)) {
	var l net.Listener
	if err := netnstest.Do(ns, func() (err error) {
		l, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	netnstest.Serve(l, handle)
}

// throughputSamples are one state's (firewall or none) measurements, a
// sample per round.
type throughputSamples struct {
	bulk, setup, exchanges []float64 // bytes/s, connections/s, exchanges/s
	// Processor time (hostCPU and loadgen's) in seconds per GB, per
	// connection set up, per exchange.
	bulkCPU, setupCPU, exchangeCPU []float64
	entries                        []float64 // conntrack entries the flows added
	conntrackSlab                  []float64 // bytes: nf_conntrack objects the flows added
	withExtensions                 []float64 // bytes: nf_conntrack and kmalloc objects the flows added
	objsize                        int       // of an nf_conntrack object
}

// measure runs one state's round: the probe, the bulk stream, the flows.
func (tp *throughputSetup) measure(b *testing.B, tn *throughputNet, state string, s *throughputSamples) {
	probe := netip.AddrPortFrom(flowNets[0].Addr().Next(), rejectedPort)
	want := "connected"
	if state == "firewall" {
		want = "refused"
	}
	if got := strings.TrimSpace(tp.loadgenOutput(b, tn, "probe", probe.String())); got != want {
		b.Fatalf("the tor user's connection to %s, %s: %s, want %s", probe, state, got, want)
	}

	var bulk struct {
		Bytes        int64
		Seconds, CPU float64
	}
	cpu0 := tp.hostCPU(b)
	decode(b, tp.loadgenOutput(b, tn, "bulk", bulkDest.String(), fmt.Sprint(tp.seconds)), &bulk)
	s.bulkCPU = append(s.bulkCPU, (tp.hostCPU(b)-cpu0+bulk.CPU)/(float64(bulk.Bytes)/1e9))
	s.bulk = append(s.bulk, float64(bulk.Bytes)/bulk.Seconds)

	flushConntrack(b, tn.relay)
	ctBefore, slabBefore := conntrackCount(b, tn.relay), readSlabinfo(b)
	cpu0 = tp.hostCPU(b)
	child := tp.startFlows(b, tn)
	var opened struct {
		Established  int
		Seconds, CPU float64
	}
	child.next(&opened)
	cpu1 := tp.hostCPU(b)
	ctAfter, slabAfter := conntrackCount(b, tn.relay), readSlabinfo(b)
	var exchanged struct {
		Exchanges    int64
		Seconds, CPU float64
	}
	cpu2 := tp.hostCPU(b)
	child.send("exchange")
	child.next(&exchanged)
	cpu3 := tp.hostCPU(b)
	child.send("close")
	child.next(&struct{ Closed int }{})
	child.wait()
	flushConntrack(b, tn.relay)

	s.setup = append(s.setup, float64(opened.Established)/opened.Seconds)
	s.setupCPU = append(s.setupCPU, (cpu1-cpu0+opened.CPU)/float64(opened.Established))
	s.exchanges = append(s.exchanges, float64(exchanged.Exchanges)/exchanged.Seconds)
	s.exchangeCPU = append(s.exchangeCPU, (cpu3-cpu2+exchanged.CPU-opened.CPU)/float64(exchanged.Exchanges))
	s.entries = append(s.entries, float64(ctAfter-ctBefore))
	s.conntrackSlab = append(s.conntrackSlab, slabAfter.bytes("nf_conntrack")-slabBefore.bytes("nf_conntrack"))
	s.withExtensions = append(s.withExtensions, slabAfter.conntrackAndKmalloc()-slabBefore.conntrackAndKmalloc())
	s.objsize = slabAfter["nf_conntrack"].objsize
}

// hostCPU is the processor time, in seconds, used so far by this process
// (where the receiving side of the traffic runs) and by the kernel's
// softirq threads, which take over the packets' work when it queues up.
// Added to loadgen's own, it is the traffic's work, which on a host busy
// with others' work moves far less than the traffic's rate.
func (tp *throughputSetup) hostCPU(b *testing.B) float64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	for _, stat := range tp.softirqThreads {
		data, err := os.ReadFile(stat)
		if err != nil {
			b.Fatal(err)
		}
		ticks, err := statCPUTicks(string(data))
		if err != nil {
			b.Fatalf("%s: %v", stat, err)
		}
		cpu += float64(ticks) / userHZ
	}
	return cpu
}

// userHZ is the unit of /proc/PID/stat's times (USER_HZ, 100 on Linux).
const userHZ = 100

// statCPUTicks is utime + stime of a /proc/PID/stat line: the 14th and
// 15th fields, counted after the command name in parentheses (which may
// hold spaces).
func statCPUTicks(stat string) (int64, error) {
	end := strings.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, fmt.Errorf("no command name in %.40q", stat)
	}
	f := strings.Fields(stat[end+1:]) // from the 3rd field, the state
	if len(f) < 13 {
		return 0, fmt.Errorf("too few fields in %.60q", stat)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("utime %q, stime %q: not numbers", f[11], f[12])
	}
	return utime + stime, nil
}

// softirqThreads are the /proc/PID/stat files of the ksoftirqd threads.
func softirqThreads(b *testing.B) []string {
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		b.Fatal(err)
	}
	var stats []string
	for _, d := range dirs {
		comm, err := os.ReadFile(filepath.Join(d, "comm"))
		if err == nil && strings.HasPrefix(string(comm), "ksoftirqd/") {
			stats = append(stats, filepath.Join(d, "stat"))
		}
	}
	if len(stats) == 0 {
		b.Fatal("no ksoftirqd threads in /proc")
	}
	return stats
}

// loadgenCmd is loadgen with args, as the tor user, started in the relay
// namespace.
func (tp *throughputSetup) loadgenCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(tp.loadgen, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: tp.torUser}
	return cmd
}

// loadgenOutput runs loadgen to its end and returns its standard output.
func (tp *throughputSetup) loadgenOutput(b *testing.B, tn *throughputNet, args ...string) string {
	cmd := tp.loadgenCmd(args...)
	var out []byte
	var err error
	inNS(b, tn.relay, func() { out, err = cmd.Output() })
	if err != nil {
		b.Fatalf("loadgen %v: %v\n%s", args, err, stderrOf(err))
	}
	return string(out)
}

// flowsChild is a running loadgen flows: commands on its standard input,
// a JSON line on its standard output for each.
type flowsChild struct {
	b   *testing.B
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func (tp *throughputSetup) startFlows(b *testing.B, tn *throughputNet) *flowsChild {
	cmd := tp.loadgenCmd("flows", "-n", fmt.Sprint(tp.flows), "-concurrency", fmt.Sprint(exchangeConcurrency), "-seconds", fmt.Sprint(tp.seconds), tp.dests)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	inNS(b, tn.relay, func() { err = cmd.Start() })
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return &flowsChild{b: b, cmd: cmd, in: in, out: bufio.NewScanner(out)}
}

func (c *flowsChild) send(command string) {
	if _, err := fmt.Fprintln(c.in, command); err != nil {
		c.b.Fatalf("loadgen flows: %s: %v", command, err)
	}
}

// next decodes the child's next line into v.
func (c *flowsChild) next(v any) {
	if !c.out.Scan() {
		c.b.Fatalf("loadgen flows ended early (%v); its error is above", c.cmd.Wait())
	}
	decode(c.b, c.out.Text(), v)
}

func (c *flowsChild) wait() {
	c.in.Close()
	if err := c.cmd.Wait(); err != nil {
		c.b.Fatalf("loadgen flows: %v", err)
	}
}

func decode(b *testing.B, line string, v any) {
	if err := json.Unmarshal([]byte(line), v); err != nil {
		b.Fatalf("loadgen said %q: %v", line, err)
	}
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

// flushConntrack empties the namespace's conntrack table: the next
// round's counts and memory start from none of this round's closed flows
// (which conntrack would keep for 10 s).
func flushConntrack(b *testing.B, ns netns.NsHandle) {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	if err := h.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
		b.Fatalf("conntrack flush: %v", err)
	}
}

// conntrackCount is the number of conntrack entries of the namespace.
func conntrackCount(b *testing.B, ns netns.NsHandle) int {
	var n int
	inNS(b, ns, func() { n = readSysctlInt(b, "net/netfilter/nf_conntrack_count") })
	return n
}

// checkConntrackMax fails early when the conntrack table (its limit is
// the host's, shared by every namespace) has no room for the flows; the
// benchmark never raises it.
func checkConntrackMax(b *testing.B, flows int) {
	limit := readSysctlInt(b, "net/netfilter/nf_conntrack_max")
	if limit < 2*flows {
		b.Fatalf("net.netfilter.nf_conntrack_max is %d, host-wide: %d flows need at least twice as much (room for the host's own); raise it or lower RELAYFW_THROUGHPUT_FLOWS", limit, flows)
	}
}

func readSysctlInt(b *testing.B, name string) int {
	data, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		b.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	return n
}

func writeSysctl(b *testing.B, name, value string) {
	if err := os.WriteFile("/proc/sys/"+name, []byte(value), 0o644); err != nil {
		b.Fatalf("sysctl %s: %v", name, err)
	}
}

// raiseNofile lets this process (the flows' server side) and the
// loadgen processes it starts (which raise their soft limit to the hard
// one, as every Go program does) hold at least n descriptors.
func raiseNofile(b *testing.B, n uint64) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if lim.Max >= n && lim.Cur >= n {
		return
	}
	lim.Cur, lim.Max = max(lim.Cur, n), max(lim.Max, n)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatalf("RLIMIT_NOFILE to %d: %v", n, err)
	}
}

// envInt is the positive integer in the environment variable name, or
// def.
func envInt(b *testing.B, name string, def int) int {
	env := os.Getenv(name)
	if env == "" {
		return def
	}
	n, err := strconv.Atoi(env)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive number", name, env)
	}
	return n
}

// throughputLabel is a mode's backend, in the table.
func throughputLabel(b *testing.B, mode string) string {
	switch mode {
	case "nftables":
		return "nftables"
	case "nft":
		return "iptables nf_tables"
	case "legacy":
		return "iptables legacy"
	}
	b.Fatalf("RELAYFW_THROUGHPUT_MODES: unknown backend %q (nftables, nft, legacy)", mode)
	return ""
}
