//go:build ignore

// gen_toroptions writes toroptions_table.go: the option names tor knows,
// taken from the installed tor (which must be the version relayfw models)
// and from the lists in tor's src/app/config/config.c that tor cannot
// print (obsolete options, virtual options, abbreviations). Every name is
// confirmed against the real tor: the generator runs `tor --verify-config`
// on a one-line torrc per name and fails when tor disagrees with the table.
//
//	go generate ./torconf   (as any user; tor need not run as root)
package main

import (
	"bytes"
	"fmt"
	"go/format"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
)

const wantVersion = "0.4.9.11"

// obsolete is config.c's OBSOLETE() list: tor accepts these names, warns
// "Skipping obsolete configuration option" and ignores the value.
var obsolete = strings.Fields(`
AllowDotExit AllowInvalidNodes AllowSingleHopCircuits AllowSingleHopExits
AlternateHSAuthority AuthDirBadDir AuthDirBadDirCCs AuthDirRejectUnlisted
AuthDirListBadDirs AuthDirMaxServersPerAuthAddr CircuitIdleTimeout
ClientAutoIPv6ORPort ControlListenAddress DirListenAddress DisableIOCP
DisableV2DirectoryInfo_ DynamicDHGroups DNSListenAddress
TestingEnableTbEmptyEvent TestingEstimatedDescriptorPropagationTime
ExcludeSingleHopRelays FallbackNetworkstatusFile FastFirstHopPK
FetchV2Networkstatus Group HidServDirectoryV2 HiddenServiceAuthorizeClient
HidServAuth CloseHSClientCircuitsImmediatelyOnTimeout
CloseHSServiceRendCircuitsImmediatelyOnTimeout AndroidIdentityTag
MaxOnionsPending NamingAuthoritativeDirectory NATDListenAddress
PredictedPortsRelevanceTime WarnUnsafeSocks ORListenAddress
PathBiasDisableRate PathBiasScaleFactor PathBiasMultFactor
PathBiasUseCloseCounts OptimisticData PortForwarding PortForwardingHelper
PreferTunneledDirConns RecommendedPackages RunTesting
SchedulerLowWaterMark__ SchedulerHighWaterMark__ SchedulerMaxFlushCells__
SocksListenAddress StrictEntryNodes StrictExitNodes Support022HiddenServices
Tor2webMode Tor2webRendezvousPoints TLSECGroup TransListenAddress
TunnelDirConns UseEntryGuardsAsDirGuards UseNTorHandshake
UserspaceIOCPBuffers V1AuthoritativeDirectory V2AuthoritativeDirectory
VoteOnHidServDirectoriesV2 UseFilteringSSLBufferevents
__UseFilteringSSLBufferevents TestingConsensusMaxDownloadTries
ClientBootstrapConsensusMaxDownloadTries
ClientBootstrapConsensusAuthorityOnlyMaxDownloadTries
TestingDescriptorMaxDownloadTries TestingMicrodescMaxDownloadTries
TestingCertMaxDownloadTries`)

// virtual are the LINELIST_V options: names tor knows (so they take part
// in abbreviation matching) but refuses to assign.
var virtual = strings.Fields(`ControlPortLines DirPortLines DNSPortLines
ExtORPortLines HTTPTunnelPortLines MetricsPortLines NATDPortLines
ORPortLines SocksPortLines TransPortLines HiddenServiceOptions`)

type abbrev struct {
	short, full       string
	cmdlineOnly, warn bool
}

// abbrevs is config.c's option_abbrevs_, in order (tor applies them in
// one pass, so an alias of an alias is followed only forwards).
var abbrevs = func() []abbrev {
	var a []abbrev
	for _, p := range strings.Fields(`AuthDirBadDirCC AuthDirBadExitCC
	AuthDirInvalidCC AuthDirMiddleOnlyCC AuthDirRejectCC EntryNode ExcludeNode
	FirewallPort LongLivedPort HiddenServiceNode HiddenServiceExcludeNode NumCPU
	RendNode RecommendedPackage RendExcludeNode StrictEntryNode StrictExitNode
	StrictNode`) {
		a = append(a, abbrev{p, p + "s", false, false}) // PLURAL()
	}
	a = append(a,
		abbrev{"l", "Log", true, false},
		abbrev{"AllowUnverifiedNodes", "AllowInvalidNodes", false, false},
		abbrev{"AutomapHostSuffixes", "AutomapHostsSuffixes", false, false},
		abbrev{"AutomapHostOnResolve", "AutomapHostsOnResolve", false, false},
		abbrev{"BandwidthRateBytes", "BandwidthRate", false, false},
		abbrev{"BandwidthBurstBytes", "BandwidthBurst", false, false},
		abbrev{"DirFetchPostPeriod", "StatusFetchPeriod", false, false},
		abbrev{"DirServer", "DirAuthority", false, false},
		abbrev{"MaxConn", "ConnLimit", false, true},
		abbrev{"MaxMemInCellQueues", "MaxMemInQueues", false, false},
		abbrev{"ORBindAddress", "ORListenAddress", false, false},
		abbrev{"DirBindAddress", "DirListenAddress", false, false},
		abbrev{"SocksBindAddress", "SocksListenAddress", false, false},
		abbrev{"UseHelperNodes", "UseEntryGuards", false, false},
		abbrev{"NumHelperNodes", "NumEntryGuards", false, false},
		abbrev{"UseEntryNodes", "UseEntryGuards", false, false},
		abbrev{"NumEntryNodes", "NumEntryGuards", false, false},
		abbrev{"ResolvConf", "ServerDNSResolvConfFile", false, true},
		abbrev{"SearchDomains", "ServerDNSSearchDomains", false, true},
		abbrev{"ServerDNSAllowBrokenResolvConf", "ServerDNSAllowBrokenConfig", false, false},
		abbrev{"PreferTunnelledDirConns", "PreferTunneledDirConns", false, false},
		abbrev{"BridgeAuthoritativeDirectory", "BridgeAuthoritativeDir", false, false},
		abbrev{"HashedControlPassword", "__HashedControlSessionPassword", true, false},
		abbrev{"VirtualAddrNetwork", "VirtualAddrNetworkIPv4", false, false},
		abbrev{"SocksSocketsGroupWritable", "UnixSocksGroupWritable", false, true},
		abbrev{"_HSLayer2Nodes", "HSLayer2Nodes", false, true},
		abbrev{"_HSLayer3Nodes", "HSLayer3Nodes", false, true},
	)
	for _, s := range strings.Fields(`ClientBootstrapConsensusAuthority
	ClientBootstrapConsensusAuthorityOnly ClientBootstrapConsensusFallback
	TestingBridge TestingBridgeBootstrap TestingClient TestingClientConsensus
	TestingServer TestingServerConsensus`) {
		a = append(a, abbrev{s + "DownloadSchedule", s + "DownloadInitialDelay", false, true})
	}
	return a
}()

func torLines(args ...string) []string {
	out, err := exec.Command("tor", args...).Output()
	if err != nil {
		log.Fatalf("tor %s: %v", strings.Join(args, " "), err)
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		// tor prints its startup notices on stdout too.
		if l != "" && !regexp.MustCompile(`^\w{3} \d+ `).MatchString(l) {
			names = append(names, l)
		}
	}
	return names
}

// verify runs tor on "name 1" and returns what tor said about the name.
func verify(dir, name string) string {
	f := filepath.Join(dir, strings.ReplaceAll(name, "/", "_"))
	body := fmt.Sprintf("SocksPort 0\nDataDirectory %s\n%s 1\n", filepath.Join(dir, "data"), name)
	if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
		log.Fatal(err)
	}
	out, _ := exec.Command("tor", "--verify-config", "--defaults-torrc", os.DevNull, "-f", f).CombinedOutput()
	return string(out)
}

type entry struct {
	name string
	kind string
}

// knownName is tor's config_mgr_find_var: an exact or truncated name.
func knownName(entries []entry, key string) bool {
	for _, e := range entries {
		if len(key) <= len(e.name) && strings.EqualFold(e.name[:len(key)], key) {
			return true
		}
	}
	return false
}

func main() {
	log.SetFlags(0)
	if v := torLines("--version"); len(v) == 0 || !strings.Contains(v[0], "Tor version "+wantVersion+".") {
		log.Fatalf("installed tor is %q; this table models tor %s", v, wantVersion)
	}
	deprecated := map[string]bool{}
	for _, d := range torLines("--list-deprecated-options") {
		deprecated[strings.ToLower(d)] = true
	}
	var entries []entry
	for _, n := range torLines("--list-torrc-options") {
		entries = append(entries, entry{n, "optSettable"})
	}
	for _, n := range obsolete {
		entries = append(entries, entry{n, "optObsolete"})
	}
	for _, n := range virtual {
		entries = append(entries, entry{n, "optVirtual"})
	}
	if problems := confirm(entries); len(problems) > 0 {
		log.Fatalf("tor %s disagrees with the table:\n%s", wantVersion, strings.Join(problems, "\n"))
	}
	// tor sorts its variables with strcasecmp; truncated names match the
	// first variable in that order.
	sort.Slice(entries, func(i, j int) bool {
		return strings.ToLower(entries[i].name) < strings.ToLower(entries[j].name)
	})
	if err := os.WriteFile("toroptions_table.go", table(entries, deprecated), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("toroptions_table.go: %d names, %d abbreviations, from tor %s\n", len(entries), len(abbrevs), wantVersion)
}

// confirm checks every obsolete and virtual name, and every
// abbreviation, against the installed tor, and returns what it disagrees
// with, sorted.
func confirm(entries []entry) []string {
	dir, err := os.MkdirTemp("", "gen-toroptions")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	var mu sync.Mutex
	var problems []string
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	// check runs tor on the name: its output must contain want and none
	// of notWant.
	check := func(name, want string, notWant ...string) {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out := verify(dir, name)
			bad := !strings.Contains(out, want)
			for _, n := range notWant {
				bad = bad || strings.Contains(out, n)
			}
			if bad {
				mu.Lock()
				problems = append(problems, fmt.Sprintf("%s: want %q and none of %q in tor's output:\n%s", name, want, notWant, out))
				mu.Unlock()
			}
		}()
	}
	for _, n := range obsolete {
		check(n, fmt.Sprintf("Skipping obsolete configuration option \"%s\"", n))
	}
	for _, n := range virtual {
		check(n, "Cannot assign directly to virtual option")
	}
	for _, a := range abbrevs {
		switch {
		case a.cmdlineOnly:
			// From a torrc tor matches it as a truncated name instead;
			// the table's prefix rule covers it.
		case a.warn:
			check(a.short, fmt.Sprintf("The configuration option '%s' is deprecated; use '%s' instead.", a.short, a.full))
		case knownName(entries, a.full):
			// A silent alias.
			check(a.short, "", "Unknown option", "The abbreviation")
		default:
			// A silent alias of a name tor no longer has (RendNodes,
			// EntryNodes...): tor calls the full name unknown, and so
			// does the table.
			check(a.short, fmt.Sprintf("Unknown option '%s'", a.full))
		}
	}
	wg.Wait()
	sort.Strings(problems)
	return problems
}

// table is the source of toroptions_table.go, gofmt-ed.
func table(entries []entry, deprecated map[string]bool) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "// Code generated by gen_toroptions.go from tor %s; DO NOT EDIT.\n\n", wantVersion)
	b.WriteString("package torconf\n\n")
	fmt.Fprintf(&b, "// torVersion is the tor whose option table this is.\nconst torVersion = %q\n\n", wantVersion)
	b.WriteString("// torOptionTable is every option name tor knows, sorted as tor sorts them\n// (strcasecmp), so the first name a truncated key prefixes is tor's pick.\n")
	b.WriteString("var torOptionTable = []torOptionName{\n")
	for _, e := range entries {
		dep := ""
		if deprecated[strings.ToLower(e.name)] {
			dep = "|optDeprecated"
		}
		fmt.Fprintf(&b, "\t{%q, %s%s},\n", e.name, e.kind, dep)
	}
	b.WriteString("}\n\n// torAbbrevTable is config.c's option_abbrevs_, in tor's order.\nvar torAbbrevTable = []torAbbrev{\n")
	for _, a := range abbrevs {
		fmt.Fprintf(&b, "\t{%q, %q, %v, %v},\n", a.short, a.full, a.cmdlineOnly, a.warn)
	}
	b.WriteString("}\n")
	src, err := format.Source(b.Bytes())
	if err != nil {
		log.Fatal(err)
	}
	return src
}
