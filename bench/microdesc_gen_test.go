package bench

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"

	"github.com/relayfw/relayfw/ruleset"
)

// consensusSeed fixes the realistic workload's consensus: every run
// measures the same relays.
const consensusSeed = 23

// realisticRelays is about the Tor network's size: its microdesc consensus
// lists some 9,000 relays in about 3 MB.
const realisticRelays = 9000

// authority is a directory authority as a consensus lists it: a
// dir-source line, and an entry of its own with the Authority flag.
type authority struct {
	nick            string
	addr            netip.Addr
	dirPort, orPort uint16
}

// microdescConsensus is a cached-microdesc-consensus of n relays, made
// from seed alone but for its times (valid from validAfter, for three
// hours): a header with nine dir-source lines, then one entry per relay
// with the lines tor's own has (r, a for about a third, m, s, v, pr, w),
// then the footer and nine signatures. Addresses are spread over public
// IPv4 space and a few hosting providers' IPv6 prefixes, as relays are;
// nothing is ever sent to them. Every relay has its own IPv4 address and
// every IPv6 one its own address, so each entry adds exactly one link per
// address.
func microdescConsensus(seed uint64, n int, validAfter time.Time) string {
	r := rand.New(rand.NewPCG(seed, 0x6d6963726f))
	var b strings.Builder
	b.Grow(n * 400)
	seen := map[netip.Addr]bool{}
	auths := make([]authority, 9)
	for i := range auths {
		auths[i] = authority{fmt.Sprintf("auth%d", i+1), publicIPv4(r, seen), []uint16{80, 9030, 443}[i%3], []uint16{443, 9001, 9101}[i%3]}
	}
	writeConsensusHeader(&b, r, validAfter, auths)
	for _, a := range auths {
		fmt.Fprintf(&b, "r %s %s %s %s %d %d\n", a.nick, b64(r, 20), published(r, validAfter), a.addr, a.orPort, a.dirPort)
		writeEntryTail(&b, r, "Authority Fast Running Stable V2Dir Valid")
	}
	for i := len(auths); i < n; i++ {
		orPort := orPorts[r.IntN(len(orPorts))]
		dirPort := 0
		if r.IntN(10) == 0 {
			dirPort = []int{80, 9030}[r.IntN(2)]
		}
		fmt.Fprintf(&b, "r %s %s %s %s %d %d\n", nickname(r), b64(r, 20), published(r, validAfter), publicIPv4(r, seen), orPort, dirPort)
		if r.IntN(3) == 0 {
			v6Port := orPort
			if r.IntN(10) == 0 {
				v6Port = orPorts[r.IntN(len(orPorts))]
			}
			fmt.Fprintf(&b, "a [%s]:%d\n", publicIPv6(r, seen), v6Port)
		}
		writeEntryTail(&b, r, relayFlags[r.IntN(len(relayFlags))])
	}
	writeConsensusFooter(&b, r, auths)
	return b.String()
}

// orPorts is the mix of ORPorts relays use, the common ones repeated by
// how often they occur.
var orPorts = []int{9001, 9001, 9001, 9001, 9001, 9001, 9001, 9001, 9001, 9001, 443, 443, 443, 443, 443, 9000, 9000, 8443, 8443, 80, 9002, 9003, 9100, 8080, 993, 110, 143, 5443, 4443, 21, 24056, 31337, 48001, 60010, 8001, 9090}

// relayFlags are common flag sets, the plain middle relay most often.
var relayFlags = []string{
	"Fast Running Stable V2Dir Valid",
	"Fast Running Stable V2Dir Valid",
	"Fast Guard HSDir Running Stable V2Dir Valid",
	"Fast Guard HSDir Running Stable V2Dir Valid",
	"Exit Fast Running Stable V2Dir Valid",
	"Exit Fast Guard HSDir Running Stable V2Dir Valid",
	"Fast Running V2Dir Valid",
	"Running V2Dir Valid",
	"Fast HSDir Running Stable StaleDesc V2Dir Valid",
	"Fast MiddleOnly Running Stable V2Dir Valid",
}

// ipv6Prefixes are /32s of hosting providers where many relays are.
var ipv6Prefixes = []string{"2a01:4f8", "2a01:4f9", "2001:41d0", "2a03:4000", "2a02:c207", "2605:6400", "2607:5300", "2a0b:f4c0", "2a12:a800", "2001:67c", "2a06:1700", "2604:a880"}

// writeEntryTail writes an entry's lines after r (and a).
func writeEntryTail(b *strings.Builder, r *rand.Rand, flags string) {
	fmt.Fprintf(b, "m %s\ns %s\nv Tor 0.4.%d.%d\n", b64(r, 32), flags, 8+r.IntN(2), 1+r.IntN(17))
	b.WriteString("pr Conflux=1 Cons=1-2 Desc=1-2 DirCache=2 FlowCtrl=1-2 HSDir=2 HSIntro=4-5 HSRend=1-2 Link=1-5 LinkAuth=1,3 Microdesc=1-2 Padding=2 Relay=1-4\n")
	// Bandwidths spread over orders of magnitude, as measured ones do.
	fmt.Fprintf(b, "w Bandwidth=%d\n", int(1+r.ExpFloat64()*float64([]int{50, 2000, 40000}[r.IntN(3)])))
}

func writeConsensusHeader(b *strings.Builder, r *rand.Rand, validAfter time.Time, auths []authority) {
	const layout = time.DateTime
	validAfter = validAfter.UTC()
	fmt.Fprintf(b, "network-status-version 3 microdesc\nvote-status consensus\nconsensus-method 34\nvalid-after %s\nfresh-until %s\nvalid-until %s\nvoting-delay 300 300\n",
		validAfter.Format(layout), validAfter.Add(time.Hour).Format(layout), validAfter.Add(3*time.Hour).Format(layout))
	b.WriteString("client-versions 0.4.8.1-alpha,0.4.8.2-alpha,0.4.8.3-rc,0.4.8.4,0.4.8.5,0.4.8.6,0.4.8.7,0.4.8.8,0.4.8.9,0.4.8.10,0.4.8.11,0.4.8.12,0.4.8.13,0.4.8.14,0.4.8.15,0.4.8.16,0.4.8.17,0.4.9.1-alpha,0.4.9.2-alpha\n")
	b.WriteString("server-versions 0.4.8.1-alpha,0.4.8.2-alpha,0.4.8.3-rc,0.4.8.4,0.4.8.5,0.4.8.6,0.4.8.7,0.4.8.8,0.4.8.9,0.4.8.10,0.4.8.11,0.4.8.12,0.4.8.13,0.4.8.14,0.4.8.15,0.4.8.16,0.4.8.17,0.4.9.1-alpha,0.4.9.2-alpha\n")
	b.WriteString("known-flags Authority BadExit Exit Fast Guard HSDir MiddleOnly NoEdConsensus Running Stable StaleDesc Sybil V2Dir Valid\n")
	for _, kind := range []string{"recommended-client", "recommended-relay", "required-client", "required-relay"} {
		fmt.Fprintf(b, "%s-protocols Cons=2 Desc=2 DirCache=2 HSDir=2 HSIntro=4 HSRend=2 Link=4-5 Microdesc=2 Relay=2-4\n", kind)
	}
	b.WriteString("params AuthDirMaxServersPerAddr=8 CircuitPriorityHalflifeMsec=30000 DoSCircuitCreationEnabled=1 DoSConnectionEnabled=1 DoSConnectionMaxConcurrentCount=50 DoSRefuseSingleHopClientRendezvous=1 ExtendByEd25519ID=1 KISTSchedRunInterval=3 NumNTorsPerTAP=100 UseOptimisticData=1 bwauthpid=1 cbttestfreq=10 hs_service_max_rdv_failures=1 hsdir_spread_store=4 overload_onionskin_ntor_period_secs=10800 overload_onionskin_ntor_scale_percent=500 sendme_emit_min_version=1\n")
	fmt.Fprintf(b, "shared-rand-previous-value 9 %s=\nshared-rand-current-value 9 %s=\n", b64(r, 32), b64(r, 32))
	for _, a := range auths {
		fmt.Fprintf(b, "dir-source %s %s %s %s %d %d\ncontact %s operators <%s@example.org>\nvote-digest %s\n",
			a.nick, hexID(r), a.nick+".example.org", a.addr, a.dirPort, a.orPort, a.nick, a.nick, hexID(r))
	}
}

func writeConsensusFooter(b *strings.Builder, r *rand.Rand, auths []authority) {
	b.WriteString("directory-footer\nbandwidth-weights Wbd=0 Wbe=0 Wbg=4124 Wbm=10000 Wdb=10000 Web=10000 Wed=10000 Wee=10000 Weg=10000 Wem=10000 Wgb=10000 Wgd=0 Wgg=5876 Wgm=5876 Wmb=10000 Wmd=0 Wme=0 Wmg=4124 Wmm=10000\n")
	for range auths {
		fmt.Fprintf(b, "directory-signature sha256 %s %s\n-----BEGIN SIGNATURE-----\n", hexID(r), hexID(r))
		sig := base64.StdEncoding.EncodeToString(randomBytes(r, 384))
		for len(sig) > 64 {
			b.WriteString(sig[:64] + "\n")
			sig = sig[64:]
		}
		b.WriteString(sig + "\n-----END SIGNATURE-----\n")
	}
}

// publicIPv4 is an address not yet in seen that relayfw accepts as a relay
// link (no internal, reserved or multicast address).
func publicIPv4(r *rand.Rand, seen map[netip.Addr]bool) netip.Addr {
	for {
		a := netip.AddrFrom4([4]byte{byte(1 + r.IntN(223)), byte(r.IntN(256)), byte(r.IntN(256)), byte(1 + r.IntN(254))})
		if !seen[a] && ruleset.CheckRelayLink(netip.AddrPortFrom(a, 9001), false) == nil {
			seen[a] = true
			return a
		}
	}
}

// publicIPv6 is an address not yet in seen in one of ipv6Prefixes.
func publicIPv6(r *rand.Rand, seen map[netip.Addr]bool) netip.Addr {
	for {
		text := fmt.Sprintf("%s:%x:%x::%x", ipv6Prefixes[r.IntN(len(ipv6Prefixes))], r.IntN(65536), r.IntN(65536), 1+r.IntN(65535))
		a := netip.MustParseAddr(text)
		if !seen[a] {
			seen[a] = true
			return a
		}
	}
}

// nickname is a relay nickname as operators choose them: a word or two
// and often a number, at most 19 characters.
func nickname(r *rand.Rand) string {
	words := []string{"tor", "relay", "exit", "node", "onion", "freedom", "privacy", "Nice", "Quetzal", "artikel", "Unnamed", "for", "server", "digi", "mullvad", "emerald", "niftyguard", "bauruine", "prsv", "zwiebel"}
	s := words[r.IntN(len(words))]
	if r.IntN(2) == 0 {
		s += words[r.IntN(len(words))]
	}
	if r.IntN(2) == 0 {
		s += fmt.Sprint(r.IntN(1000))
	}
	return s[:min(len(s), 19)]
}

// published is a descriptor's publication time within the 18 hours
// before the consensus.
func published(r *rand.Rand, validAfter time.Time) string {
	return validAfter.UTC().Add(-time.Duration(r.IntN(18*3600)) * time.Second).Format(time.DateTime)
}

func randomBytes(r *rand.Rand, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(r.IntN(256))
	}
	return p
}

// b64 is n random bytes in unpadded base64, as identities (20 bytes, 27
// characters) and digests (32 bytes, 43 characters) are written.
func b64(r *rand.Rand, n int) string {
	return base64.RawStdEncoding.EncodeToString(randomBytes(r, n))
}

// hexID is a 40-digit fingerprint.
func hexID(r *rand.Rand) string { return fmt.Sprintf("%X", randomBytes(r, 20)) }
