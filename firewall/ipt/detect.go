package ipt

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"unsafe"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/relayfw/relayfw/firewall/nft"
)

// Presence is what Detect tells of relayfw's iptables objects in this
// network namespace.
type Presence int

const (
	// Absent: neither iptables mode has a chain of relayfw's, and no
	// relayfw ipset exists.
	Absent Presence = iota
	// Present: a chain or an ipset named as relayfw names them exists.
	Present
	// Unknown: the kernel could not be asked; only the iptables commands
	// can tell.
	Unknown
)

func (p Presence) String() string {
	return [...]string{"absent", "present", "unknown"}[p]
}

// Detect asks the kernel directly, without running a command, whether
// relayfw's iptables objects may be installed: its chains in iptables'
// filter tables, legacy or nf_tables, and its ipsets. Only chain and set
// names are read: a jump needs the chain it enters, so a relayfw jump
// without a relayfw chain cannot exist.
//
// It never says Absent when an object exists. It may say Present for
// objects that are not relayfw's (a user chain named RELAYFW-OUTPUT, a set
// named relayfw-x): that only costs the commands' slower look. It loads no
// kernel module and creates no table: a legacy table the kernel does not
// list in this namespace has no chains, and ipsets are only asked for when
// the ip_set module is loaded.
//
// The error, set only with Unknown, says what could not be asked.
func Detect(ctx context.Context) (Presence, error) {
	return detect(ctx, nftFilterChains, legacyFilterChains, ownedIpsets)
}

// detect is Present when a probe finds an object, else Unknown when one
// could not look, else Absent.
func detect(ctx context.Context, probes ...func(context.Context) (bool, error)) (Presence, error) {
	var errs []error
	for _, probe := range probes {
		found, err := probe(ctx)
		if found {
			return Present, nil
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return Unknown, errors.Join(errs...)
	}
	return Absent, nil
}

// nftFilterChains looks for relayfw's chains in the tables iptables in
// nf_tables mode writes, ip filter and ip6 filter, over netlink.
func nftFilterChains(ctx context.Context) (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("nf_tables: %w", err)
	}
	// A dump in several parts that a commit interrupts can skip a chain
	// (neither library checks the kernel's "dump interrupted" flag): the
	// ruleset generation before and after tells.
	gen := (&nft.Backend{}).Generation
	before, err := gen(ctx)
	if err != nil {
		return false, fmt.Errorf("nf_tables generation: %w", err)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyUnspecified)
	if err != nil {
		return false, fmt.Errorf("nf_tables chains: %w", err)
	}
	if after, err := gen(ctx); err != nil || after != before {
		return false, fmt.Errorf("nf_tables changed while its chains were listed")
	}
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name != "filter" {
			continue
		}
		if f := ch.Table.Family; (f == nftables.TableFamilyIPv4 || f == nftables.TableFamilyIPv6) && slices.Contains(ownedChains, ch.Name) {
			return true, nil
		}
	}
	return false, nil
}

// legacyFamily is what it takes to read one family's legacy filter table.
type legacyFamily struct {
	names        string // the kernel's list of the family's tables in this namespace
	domain       int    // of the raw socket the table is read through
	level        int    // of getsockopt
	targetOffset int    // of the entry's target_offset, then next_offset (ipt_entry, ip6t_entry)
}

var legacyFamilies = []legacyFamily{
	{"ip_tables_names", unix.AF_INET, unix.IPPROTO_IP, 88},
	{"ip6_tables_names", unix.AF_INET6, unix.IPPROTO_IPV6, 140},
}

// procNet is this thread's view of /proc/net: a thread switched into
// another network namespace (as the tests do) sees that namespace there,
// where /proc/self/net would show the main thread's.
const procNet = "/proc/thread-self/net"

// legacyFilterChains looks for relayfw's chains in the legacy filter
// tables. A table the kernel does not list is not asked for, as asking
// would create it.
func legacyFilterChains(context.Context) (bool, error) {
	if _, err := os.Stat(procNet); err != nil {
		return false, fmt.Errorf("legacy iptables: %w", err)
	}
	for _, fam := range legacyFamilies {
		listed, err := listsTable(procNet+"/"+fam.names, "filter")
		if err != nil {
			return false, fmt.Errorf("legacy iptables: %w", err)
		}
		if !listed {
			continue
		}
		blob, err := fam.entries("filter")
		if err != nil {
			return false, fmt.Errorf("legacy iptables (%s): %w", fam.names, err)
		}
		found, err := hasOwnedChain(blob, fam.targetOffset)
		if err != nil {
			return false, fmt.Errorf("legacy iptables (%s): %w", fam.names, err)
		}
		if found {
			return true, nil
		}
	}
	return false, nil
}

// listsTable reports whether the kernel's list of tables (one name a
// line) has table; a missing list means the kernel has no such tables at
// all (the module is not loaded).
func listsTable(path, table string) (bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if sc.Text() == table {
			return true, nil
		}
	}
	return false, nil
}

// Legacy x_tables' getsockopt interface (linux/netfilter_ipv4/ip_tables.h,
// the same numbers and layouts for IPv6 but the entry's).
const (
	soGetInfo       = 64 // IPT_SO_GET_INFO, IP6T_SO_GET_INFO
	soGetEntries    = 65 // IPT_SO_GET_ENTRIES, IP6T_SO_GET_ENTRIES
	tableNameLen    = 32 // XT_TABLE_MAXNAMELEN
	getInfoLen      = 84 // struct ipt_getinfo
	getInfoSizeAt   = 80 // its size: the length of the table's entries
	targetHeaderLen = 32 // struct xt_entry_target: u16 size, name[29], u8 revision
	targetNameLen   = 29 // XT_EXTENSION_MAXNAMELEN
	errorNameLen    = 30 // XT_FUNCTION_MAXNAMELEN: struct xt_error_target's errorname
)

// getEntriesLen is the length of struct ipt_get_entries before its
// entries: the name and a u32, padded to the alignment of the entries'
// u64 counters.
var getEntriesLen = (tableNameLen + 4 + int(unsafe.Alignof(uint64(0))) - 1) &^ (int(unsafe.Alignof(uint64(0))) - 1)

// entries reads the table's entries (IPT_SO_GET_INFO for their length,
// then IPT_SO_GET_ENTRIES), as iptables-legacy does. A table that
// changed between the two calls is read again.
func (fam legacyFamily) entries(table string) ([]byte, error) {
	fd, err := unix.Socket(fam.domain, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return nil, fmt.Errorf("raw socket: %w", err)
	}
	defer unix.Close(fd)
	for range 5 {
		info := make([]byte, getInfoLen)
		copy(info, table)
		if err := getsockopt(fd, fam.level, soGetInfo, info); err != nil {
			return nil, fmt.Errorf("table %s info: %w", table, err)
		}
		size := int(binary.NativeEndian.Uint32(info[getInfoSizeAt:]))
		get := make([]byte, getEntriesLen+size)
		copy(get, table)
		binary.NativeEndian.PutUint32(get[tableNameLen:], uint32(size))
		err := getsockopt(fd, fam.level, soGetEntries, get)
		if errors.Is(err, unix.EAGAIN) {
			continue // the table changed size in between
		}
		if err != nil {
			return nil, fmt.Errorf("table %s entries: %w", table, err)
		}
		return get[getEntriesLen:], nil
	}
	return nil, fmt.Errorf("table %s: changing while read", table)
}

func getsockopt(fd, level, opt int, buf []byte) error {
	n := uint32(len(buf))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// hasOwnedChain walks a legacy table's entries, as IPT_SO_GET_ENTRIES
// returns them, for the head of one of relayfw's chains: an entry whose
// target is ERROR, with the chain's name as the target's data.
// targetOffset is where an entry keeps its target's offset (a u16), its
// own length following. A walk that leaves the blob is an error.
func hasOwnedChain(blob []byte, targetOffset int) (bool, error) {
	for off := 0; off < len(blob); {
		if off+targetOffset+4 > len(blob) {
			return false, fmt.Errorf("entry at %d: truncated", off)
		}
		target := int(binary.NativeEndian.Uint16(blob[off+targetOffset:]))
		next := int(binary.NativeEndian.Uint16(blob[off+targetOffset+2:]))
		if target < targetOffset+4 || target+targetHeaderLen > next || off+next > len(blob) {
			return false, fmt.Errorf("entry at %d: target at %d, next entry at %d of %d bytes", off, target, next, len(blob))
		}
		t := blob[off+target : off+next]
		if cString(t[2:2+targetNameLen]) == "ERROR" && slices.Contains(ownedChains, cString(t[targetHeaderLen:min(len(t), targetHeaderLen+errorNameLen)])) {
			return true, nil
		}
		off += next
	}
	return false, nil
}

// cString is b up to its first NUL.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// The ipset netlink protocol (linux/netfilter/ipset/ip_set.h).
const (
	nfnlSubsysIpset    = 6
	ipsetCmdList       = 7
	ipsetAttrProtocol  = 1
	ipsetAttrSetname   = 2
	ipsetAttrFlags     = 6
	ipsetProtocol      = 6 // accepted by every kernel that has ipset over netlink
	ipsetFlagListNames = 1 << 1
)

// ipsetModule is present when the ip_set module is loaded (or built in:
// it has parameters).
const ipsetModule = "/sys/module/ip_set"

// ownedIpsets looks for a relayfw ipset by listing the sets' names (not
// their members, as ipset list -n) over netlink. Without the ip_set
// module there are no sets, and asking would load it.
func ownedIpsets(ctx context.Context) (bool, error) {
	if _, err := os.Stat(ipsetModule); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	names, err := listIpsetNames(ctx)
	if err != nil {
		return false, fmt.Errorf("ipsets: %w", err)
	}
	return slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, ownedPrefix) }), nil
}

// listIpsetNames lists the names of the namespace's ipsets.
func listIpsetNames(ctx context.Context) ([]string, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if deadline, ok := ctx.Deadline(); ok {
		if err := c.SetDeadline(deadline); err != nil {
			return nil, err
		}
	}
	ae := netlink.NewAttributeEncoder()
	ae.Uint8(ipsetAttrProtocol, ipsetProtocol)
	ae.Do(ipsetAttrFlags|unix.NLA_F_NET_BYTEORDER, func() ([]byte, error) {
		return binary.BigEndian.AppendUint32(nil, ipsetFlagListNames), nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(nfnlSubsysIpset<<8 | ipsetCmdList), Flags: netlink.Request | netlink.Dump},
		Data:   append([]byte{unix.AF_UNSPEC, 0 /* version */, 0, 0 /* res_id */}, attrs...),
	})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, m := range msgs {
		name, err := setNameOf(m.Data)
		if err != nil {
			return nil, err
		}
		if name != "" {
			names = append(names, name)
		}
	}
	return names, nil
}

// setNameOf is the set name in one message of a list dump: a
// nfgenmsg, then attributes.
func setNameOf(data []byte) (string, error) {
	if len(data) < 4 {
		return "", fmt.Errorf("ipset message of %d bytes", len(data))
	}
	ad, err := netlink.NewAttributeDecoder(data[4:])
	if err != nil {
		return "", err
	}
	var name string
	for ad.Next() {
		if ad.Type() == ipsetAttrSetname {
			name = ad.String()
		}
	}
	return name, ad.Err()
}
