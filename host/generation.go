package host

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/internal/phase"
	"github.com/relayfw/relayfw/ruleset"
)

// KernelRecord is what the kernel held right after relayfw's last change
// (apply, refresh), for a backend whose kernel numbers its ruleset
// (firewall.Generations): while the namespace's generation is the one
// recorded, no table changed since, and a no-op apply, check or status
// need not read the table back. It is only recorded when nothing but
// relayfw's own transaction happened between two readings of the
// generation, and it is only believed in the same boot, namespace (the
// state file's name) and relayfw binary (another relayfw may install
// the same ruleset as other kernel objects).
type KernelRecord struct {
	Generation uint32 `json:"generation"`
	// Build is the boot and the relayfw binary that recorded it.
	Build string `json:"build"`
	// Rules digests the ruleset but the contents of the sets that follow
	// the consensus; Links digests those (refresh changes only them).
	Rules string `json:"rules"`
	Links string `json:"links"`
}

// Version is relayfw's version, part of a KernelRecord's Build; the
// command sets it.
var Version = "dev"

// build names this boot and this relayfw binary: the kernel's boot_id,
// and the version and identity (fileIdentity) of the running executable.
func (s *System) build() (string, bool) {
	boot, err := os.ReadFile(filepath.Join(s.ProcRoot, "sys/kernel/random/boot_id"))
	if err != nil {
		return "", false
	}
	return fmt.Sprintf("boot %s; relayfw %s %s", strings.TrimSpace(string(boot)), Version,
		fileIdentity(filepath.Join(s.ProcRoot, "self/exe"))), true
}

// kernelBuild is build and the network namespace: a generation numbers
// the ruleset of one namespace, and a new namespace starts counting
// again. The namespace is its cookie, which the kernel never reuses;
// without cookies (Linux before 5.14) only the host's own namespace,
// which is never made anew, has a record.
func (s *System) kernelBuild() (string, bool) {
	build, ok := s.build()
	if !ok {
		return "", false
	}
	if cookie, ok := netnsCookie(); ok {
		return fmt.Sprintf("%s; netns %d", build, cookie), true
	}
	if s.inInitNetns() {
		return build + "; netns init", true
	}
	return "", false
}

// digests are a KernelRecord's Rules and Links for rs. The long lists
// (set elements, exit map prefixes) are hashed as bytes, the rest as
// JSON: at 10,000 relays JSON alone took tens of milliseconds, the cost
// this record saves. TestDigestCoversEveryField keeps them complete.
func digests(rs ruleset.Ruleset) (rules, links string, err error) {
	lh := sha256.New()
	for _, ls := range rs.LinkSets() {
		fmt.Fprintf(lh, "%q %q %t %d\n", ls.Name, ls.Family, ls.Trusted, len(ls.Want))
		writeRegions(lh, ls.Want)
	}
	bare := rs
	bare.Sets = slices.Clone(rs.Sets)
	for i := range bare.Sets {
		bare.Sets[i].Elements = nil
	}
	bare.ExitMaps = slices.Clone(rs.ExitMaps)
	for i := range bare.ExitMaps {
		bare.ExitMaps[i].Prefixes = nil
	}
	if rs.Inbound != nil {
		in := *rs.Inbound
		in.Trusted = nil // LinkSets has them
		bare.Inbound = &in
	}
	r, err := json.Marshal(bare)
	if err != nil {
		return "", "", err
	}
	rh := sha256.New()
	rh.Write(r)
	for _, m := range rs.ExitMaps {
		fmt.Fprintf(rh, "\n%q %d\n", m.Name, len(m.Prefixes))
		writePrefixes(rh, m.Prefixes)
	}
	return hex.EncodeToString(rh.Sum(nil)), hex.EncodeToString(lh.Sum(nil)), nil
}

// writeRegions writes each region as bytes: both addresses (with their
// length, so that IPv4 and IPv6 differ, and their zone) and the ports.
func writeRegions(w io.Writer, rs []ruleset.Region) {
	writeEach(w, rs, func(buf []byte, r ruleset.Region) []byte {
		buf = appendAddrZone(appendAddrZone(buf, r.AddrFirst), r.AddrLast)
		buf = binary.BigEndian.AppendUint16(buf, r.Ports.First)
		return binary.BigEndian.AppendUint16(buf, r.Ports.Last)
	})
}

// writePrefixes writes each prefix and its class as bytes.
func writePrefixes(w io.Writer, ps []ruleset.PrefixClass) {
	writeEach(w, ps, func(buf []byte, p ruleset.PrefixClass) []byte {
		buf = append(appendAddrZone(buf, p.Prefix.Addr()), byte(p.Prefix.Bits()))
		return binary.BigEndian.AppendUint64(buf, uint64(int64(p.Class)))
	})
}

// writeEach writes the bytes add makes of each item, 64 KiB at a time.
func writeEach[T any](w io.Writer, items []T, add func([]byte, T) []byte) {
	buf := make([]byte, 0, 64*1024)
	for _, it := range items {
		if buf = add(buf, it); len(buf) > cap(buf)-64 {
			_, _ = w.Write(buf)
			buf = buf[:0]
		}
	}
	_, _ = w.Write(buf)
}

// appendAddrZone is appendAddr with the address's zone, and its length.
func appendAddrZone(buf []byte, a netip.Addr) []byte {
	buf = append(appendAddr(buf, a), byte(len(a.Zone())))
	return append(buf, a.Zone()...)
}

// rulesetDigest digests all of rs: its digests' rules and links.
func rulesetDigest(rs ruleset.Ruleset) (string, error) {
	rules, links, err := digests(rs)
	return rules + ":" + links, err
}

// generation is b's ruleset generation now; false when b has none or the
// kernel did not say.
func generation(ctx context.Context, b firewall.Backend) (uint32, bool) {
	g, ok := b.(firewall.Generations)
	if !ok {
		return 0, false
	}
	id, err := g.Generation(ctx)
	return id, err == nil
}

// generationAfter reports whether the generation is now what relayfw's
// own change made of before: one more when it committed, the same when
// it did not (else another program changed a table meanwhile).
func generationAfter(ctx context.Context, b firewall.Backend, before uint32, committed bool) (uint32, bool) {
	after, ok := generation(ctx, b)
	want := before
	if committed {
		want++
	}
	return after, ok && after == want
}

// kernelRecord is the record of rs installed with b at generation gen.
func (s *System) kernelRecord(rs ruleset.Ruleset, gen uint32) *KernelRecord {
	build, ok := s.kernelBuild()
	if !ok {
		return nil
	}
	rules, links, err := digests(rs)
	if err != nil {
		return nil
	}
	return &KernelRecord{Generation: gen, Build: build, Rules: rules, Links: links}
}

// recordedNow is the kernel record of the last change with b when it is
// still true: same boot, binary and backend, and the generation unchanged.
func (s *System) recordedNow(ctx context.Context, b firewall.Backend) (*KernelRecord, uint32, bool) {
	st, ok := s.ReadState()
	if !ok || st.Kernel == nil || st.Backend != Kind(b) ||
		!rootsOnly(s.StatePath(), false) || !rootsOnly(filepath.Dir(s.StatePath()), true) {
		return nil, 0, false
	}
	build, ok := s.kernelBuild()
	if !ok || build != st.Kernel.Build {
		return nil, 0, false
	}
	gen, ok := generation(ctx, b)
	if !ok || gen != st.Kernel.Generation {
		return nil, gen, false
	}
	return st.Kernel, gen, true
}

// KernelHolds reports, without reading the table, whether the kernel
// holds exactly rs as b installs it: the record of relayfw's last change
// is still true and was of rs. With it comes the result an apply would
// count.
func (s *System) KernelHolds(ctx context.Context, b firewall.Backend, rs ruleset.Ruleset) (res firewall.Result, holds bool) {
	res, _, holds = s.kernelHolds(ctx, b, rs)
	return res, holds
}

// kernelHolds is KernelHolds, and the generation it found.
func (s *System) kernelHolds(ctx context.Context, b firewall.Backend, rs ruleset.Ruleset) (res firewall.Result, gen uint32, holds bool) {
	end := phase.Start(ctx, "kernel generation")
	defer func() { end("holds_ruleset", holds) }()
	rec, gen, ok := s.recordedNow(ctx, b)
	if !ok {
		return firewall.Result{}, gen, false
	}
	rules, links, err := digests(rs)
	if err != nil || rules != rec.Rules || links != rec.Links {
		return firewall.Result{}, gen, false
	}
	res, err = b.(firewall.Generations).Counts(rs)
	return res, gen, err == nil
}

// Refresh is b.Refresh of rs, and the record of what the kernel then
// holds: when the record of the last change was true before, the same
// rules with rs's relay links.
func (s *System) Refresh(ctx context.Context, b firewall.Backend, rs ruleset.Ruleset) (added, removed int, err error) {
	rec, before, valid := s.recordedNow(ctx, b)
	added, removed, err = b.Refresh(ctx, rs)
	if err != nil || !valid {
		return added, removed, err
	}
	st, ok := s.ReadState()
	if !ok {
		return added, removed, nil
	}
	st.Kernel = nil
	if after, ok := generationAfter(ctx, b, before, added+removed > 0); ok {
		if _, links, err := digests(rs); err == nil {
			st.Kernel = &KernelRecord{Generation: after, Build: rec.Build, Rules: rec.Rules, Links: links}
		}
	}
	_ = s.writeState(st)
	return added, removed, nil
}
