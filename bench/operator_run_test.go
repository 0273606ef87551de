package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/relayfw/relayfw/exitpolicy"
)

// operatorRun is one workload on one backend: the commands it times and
// what they took, by operation.
type operatorRun struct {
	b        *testing.B
	mode     string // nftables, iptables (the host's default), legacy or nft
	label    string // the backend, in the table
	nftables bool
	env      []string // for an iptables mode, a PATH with its tools first
	bin      string
	flags    []string // relayfw's global flags
	printed  []string // relayfw's own print output: nft, or ipset, iptables and ip6tables
	linear   *linearPeer
	tor      []string // tor --verify-config of the torrc
	times    map[string][]time.Duration
}

func newOperatorRun(b *testing.B, ns netns.NsHandle, dir, bin, mode, torrc, cfg string) *operatorRun {
	o := &operatorRun{b: b, mode: mode, nftables: mode == "nftables", bin: bin, times: map[string][]time.Duration{}}
	backend := "nftables"
	o.env, o.label = os.Environ(), "nftables"
	switch mode {
	case "nftables":
	case "iptables":
		backend, o.label = "iptables", "iptables ("+hostIptablesMode(b)+", the host's default)"
	default:
		backend, o.env = modeEnv(b, dir, mode)
		o.label = map[string]string{"legacy": "iptables legacy", "nft": "iptables nf_tables"}[mode]
	}
	o.flags = []string{"--backend", backend, "--torrc", torrc, "--config", cfg}
	formats := []string{"nft"}
	if !o.nftables {
		formats = []string{"ipset", "iptables", "ip6tables"}
	}
	for _, format := range formats {
		cmd := exec.Command(bin, append(o.flags, "print", "--format", format)...)
		cmd.Env = o.env
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("print --format %s: %v", format, err)
		}
		file := filepath.Join(dir, "printed-"+filepath.Base(torrc)+"-"+mode+"."+format)
		writeFile(b, file, string(out))
		o.printed = append(o.printed, file)
	}
	cleanupNS(b, ns, o.env, bin, o.flags)
	inNS(b, ns, func() {
		o.relayfw("remove")
		o.emptyNamespace()
	})
	return o
}

// hostIptablesMode is the mode of the host's iptables: "nf_tables" or
// "legacy".
func hostIptablesMode(b *testing.B) string {
	out, err := exec.Command("iptables", "-V").Output()
	if err != nil {
		b.Fatal(err)
	}
	if strings.Contains(string(out), "legacy") {
		return "legacy"
	}
	return "nf_tables"
}

// round times every operation once, peers first: each load starts from
// an empty namespace, and relayfw's apply from one where remove ran too.
func (o *operatorRun) round() {
	o.emptyNamespace()
	if o.linear != nil {
		o.add("linear-load", o.linear.load(o.runArgs))
		o.emptyNamespace()
	}
	o.add("print-load", o.loadPrinted())
	o.emptyNamespace()
	o.add("fresh-apply", o.relayfw("apply"))
	o.add("noop-apply", o.relayfw("apply"))
	o.add("check", o.relayfw("check"))
	o.add("refresh", o.relayfw("refresh"))
	o.add("status", o.relayfw("status"))
	o.add("read-back", o.readBack())
	o.add("tor-verify", o.runArgs(o.tor[0], o.tor[1:]...))
	o.relayfw("remove")
}

func (o *operatorRun) add(op string, d time.Duration) { o.times[op] = append(o.times[op], d) }

func (o *operatorRun) relayfw(args ...string) time.Duration {
	return o.run("", o.bin, append(o.flags, args...)...)
}

func (o *operatorRun) runArgs(name string, args ...string) time.Duration {
	return o.run("", name, args...)
}

// run runs a command in the run's environment (timedIn).
func (o *operatorRun) run(stdin, name string, args ...string) time.Duration {
	return timedIn(o.b, o.env, stdin, name, args...)
}

// loadPrinted loads relayfw's own print output: what apply installs,
// through nft's or iptables' own tools.
func (o *operatorRun) loadPrinted() time.Duration {
	if o.nftables {
		return o.runArgs("nft", "-f", o.printed[0])
	}
	return o.run(o.printed[0], "ipset", "restore") +
		o.run(o.printed[1], "iptables-restore", "--noflush") +
		o.run(o.printed[2], "ip6tables-restore", "--noflush")
}

// readBack reads the installed firewall, as check must when it cannot
// tell it unchanged otherwise.
func (o *operatorRun) readBack() time.Duration {
	if o.nftables {
		return o.runArgs("nft", "list", "table", "inet", "relayfw")
	}
	return o.runArgs("iptables-save") + o.runArgs("ip6tables-save") + o.runArgs("ipset", "save")
}

// emptyNamespace flushes every rule and set in the namespace (untimed).
func (o *operatorRun) emptyNamespace() {
	if !o.nftables {
		for _, fam := range []string{"iptables", "ip6tables"} {
			o.runArgs(fam, "-F")
			o.runArgs(fam, "-X")
		}
	}
	o.runArgs("nft", "flush", "ruleset")
	if o.nftables {
		return
	}
	// Rules of iptables-nft let go of their ipsets a moment after the
	// flush.
	for try := 0; ; try++ {
		cmd := exec.Command("ipset", "destroy")
		cmd.Env = o.env
		out, err := cmd.CombinedOutput()
		if err == nil {
			return
		}
		if try == 100 {
			o.b.Fatalf("ipset destroy: %v\n%s", err, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// policyEntries is the workload's effective exit policy, as relayfw
// computes it, for the linear peer.
func (o *operatorRun) policyEntries() []exitpolicy.Entry {
	return policyEntries(o.b, o.bin, o.flags...)
}
