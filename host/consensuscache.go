package host

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"syscall"
	"time"

	"github.com/relayfw/relayfw/relays"
)

// A parsed consensus is remembered under the identity of its file: tor
// replaces its cached consensus (a new file renamed over the old) when it
// fetches one, about hourly, and check, status and a no-op apply between
// two fetches would each read the same 3 MB again (15-20 ms of their
// time). The identity is the file's device, inode, size, modification
// and change times, which any write changes; whatever a remembered
// network says was read from that file, under the same checks.
type rememberedNetwork struct {
	Key        string         `json:"key"`
	ValidAfter time.Time      `json:"valid_after"`
	ValidUntil time.Time      `json:"valid_until"`
	LeftOut    map[string]int `json:"left_out,omitempty"`
	// Links, Authorities and Relays are packed (packLinks, packAddrs).
	Links, Authorities, Relays []byte
}

// readNetwork is relays.ReadNetwork(dir, o), from what an earlier
// relayfw remembered of the same file when it can.
func (in *Inputs) readNetwork(dir string, o relays.Options) (relays.Network, string, error) {
	path, key, ok := in.networkKey(dir, o)
	if ok {
		if nw, ok := in.rememberedNetwork(path, key); ok {
			in.log().Debug("consensus remembered: the same file as when it was read", "path", path)
			return nw, path, nil
		}
	}
	nw, read, err := relays.ReadNetwork(dir, o)
	if err != nil || !ok || read != path {
		return nw, read, err
	}
	if _, again, ok := in.networkKey(dir, o); ok && again == key { // not replaced while read
		in.rememberNetwork(path, key, nw)
	}
	return nw, read, nil
}

// networkKey names the consensus ReadNetwork would read in dir (the first
// of relays.ConsensusFiles that exists) and its identity; false when
// there is none that could be remembered.
func (in *Inputs) networkKey(dir string, o relays.Options) (path, key string, ok bool) {
	build, ok := in.sys.build()
	if !ok {
		return "", "", false
	}
	for _, name := range relays.ConsensusFiles {
		path = filepath.Join(dir, name)
		var st syscall.Stat_t
		err := syscall.Lstat(path, &st)
		if errors.Is(err, syscall.ENOENT) {
			continue
		}
		if err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
			return "", "", false
		}
		id := fmt.Sprintf("%s\n%s\n%t\n%s", build, path, o.Private, statIdentity(&st))
		sum := sha256.Sum256([]byte(id))
		return path, hex.EncodeToString(sum[:]), true
	}
	return "", "", false
}

// networkPath is where the network read from path is remembered.
func (in *Inputs) networkPath(path string) string { return in.sys.rememberedPath(networkKind, path) }

// networkKind names the files of remembered consensuses.
const networkKind = "consensus"

func (in *Inputs) rememberedNetwork(path, key string) (relays.Network, bool) {
	var r rememberedNetwork
	if !recall(in.networkPath(path), &r) || r.Key != key {
		return relays.Network{}, false
	}
	nw := relays.Network{ValidAfter: r.ValidAfter, ValidUntil: r.ValidUntil, LeftOut: r.LeftOut}
	var ok1, ok2, ok3 bool
	nw.Links, ok1 = unpackLinks(r.Links)
	nw.Authorities, ok2 = unpackAddrs(r.Authorities)
	nw.Relays, ok3 = unpackAddrs(r.Relays)
	return nw, ok1 && ok2 && ok3
}

// rememberNetwork remembers what was read from path.
func (in *Inputs) rememberNetwork(path, key string, nw relays.Network) {
	in.sys.remember(networkKind, in.networkPath(path), rememberedNetwork{Key: key, ValidAfter: nw.ValidAfter, ValidUntil: nw.ValidUntil,
		LeftOut: nw.LeftOut, Links: packLinks(nw.Links), Authorities: packAddrs(nw.Authorities), Relays: packAddrs(nw.Relays)})
}

// packLinks packs each link as its address's length, the address and
// the port.
func packLinks(l relays.Links) []byte {
	out := make([]byte, 0, len(l)*7)
	for _, ap := range l {
		out = binary.BigEndian.AppendUint16(appendAddr(out, ap.Addr()), ap.Port())
	}
	return out
}

func unpackLinks(b []byte) (relays.Links, bool) {
	out := make(relays.Links, 0, len(b)/7) // IPv4 links are 7 bytes; no growing
	for len(b) > 0 {
		a, rest, ok := unpackAddr(b)
		if !ok || len(rest) < 2 {
			return nil, false
		}
		out = append(out, netip.AddrPortFrom(a, binary.BigEndian.Uint16(rest)))
		b = rest[2:]
	}
	return out, true
}

func packAddrs(as []netip.Addr) []byte {
	var out []byte
	for _, a := range as {
		out = appendAddr(out, a)
	}
	return out
}

func unpackAddrs(b []byte) ([]netip.Addr, bool) {
	out := make([]netip.Addr, 0, len(b)/5)
	for len(b) > 0 {
		a, rest, ok := unpackAddr(b)
		if !ok {
			return nil, false
		}
		out = append(out, a)
		b = rest
	}
	return out, true
}

func unpackAddr(b []byte) (netip.Addr, []byte, bool) {
	if n := int(b[0]); (n == 4 || n == 16) && len(b) > n {
		a, _ := netip.AddrFromSlice(b[1 : 1+n])
		return a, b[1+n:], true
	}
	return netip.Addr{}, nil, false
}
