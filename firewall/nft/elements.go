package nft

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/relayfw/relayfw/ruleset"
)

// rawElements reads a set's elements back as comparable strings, sorted:
// a point's key; an interval's first and last key, then a map's verdict
// ("jump CHAIN"). Interval sets come from the kernel as start and end
// keys: a lookup finds the greatest key not above the packet's, and
// matches when that is a start; so a start runs up to the next key,
// whatever it is. Comparing raw keys, not text, keeps a no-op apply of a
// large exit map cheap.
func rawElements(s *nftables.Set, elems []nftables.SetElement) ([]string, error) {
	out := make([]string, 0, len(elems))
	if !s.Interval {
		for _, e := range elems {
			out = append(out, string(e.Key))
		}
		slices.Sort(out)
		return out, nil
	}
	ivs, err := intervals(s, elems)
	if err != nil {
		return nil, err
	}
	for _, iv := range ivs {
		out = append(out, rawInterval(iv.first, iv.last, iv.verdict))
	}
	slices.Sort(out)
	return out, nil
}

// interval is an interval set's element read back: keys first to last,
// and a map's verdict.
type interval struct {
	first, last []byte
	verdict     string
}

// intervals reads an interval set's start and end keys back as intervals,
// neighbours with one verdict joined.
func intervals(s *nftables.Set, elems []nftables.SetElement) ([]interval, error) {
	slices.SortStableFunc(elems, func(a, b nftables.SetElement) int {
		if c := bytes.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		if a.IntervalEnd != b.IntervalEnd { // an end before a start at one key
			if a.IntervalEnd {
				return -1
			}
			return 1
		}
		return 0
	})
	var ivs []interval
	for i, e := range elems {
		if e.IntervalEnd {
			continue
		}
		iv := interval{first: e.Key, last: bytes.Repeat([]byte{0xff}, len(e.Key))}
		if i+1 < len(elems) {
			next := elems[i+1].Key
			if bytes.Equal(next, e.Key) {
				continue // a start that an equal key hides
			}
			iv.last = prevKey(next)
		}
		if s.IsMap {
			v, err := decodeVerdict(e.Val)
			if err != nil {
				return nil, err
			}
			iv.verdict = v
		}
		// Neighbouring intervals with one verdict are one interval.
		if n := len(ivs); n > 0 && ivs[n-1].verdict == iv.verdict {
			if end, ok := nextKey(ivs[n-1].last); ok && bytes.Equal(end, iv.first) {
				ivs[n-1].last = iv.last
				continue
			}
		}
		ivs = append(ivs, iv)
	}
	return ivs, nil
}

func rawInterval(first, last []byte, verdict string) string {
	return string(first) + string(last) + verdict
}

// rawText is a raw element in the text print writes, for messages; the
// wanted set's key length tells where the keys end.
func rawText(w *nftables.Set, raw string) string {
	if !w.Interval && len(raw) == 2 {
		return fmt.Sprint(uint16(raw[0])<<8 | uint16(raw[1])) // a port
	}
	if !w.Interval && len(raw) != 8 && len(raw) != 20 {
		a, ok := netip.AddrFromSlice([]byte(raw))
		if ok {
			return a.String()
		}
	}
	if !w.Interval {
		a, port, ok := decodeElementKey([]byte(raw), len(raw) > 8)
		if !ok {
			return fmt.Sprintf("%x", raw)
		}
		return elementText(ruleset.Region{AddrFirst: a, AddrLast: a, Ports: ruleset.PortRange{First: port, Last: port}})
	}
	k := int(w.KeyType.Bytes)
	if len(raw) < 2*k {
		return fmt.Sprintf("%x", raw)
	}
	keyText := func(b string) string {
		if k == 2 {
			return fmt.Sprint(uint16(b[0])<<8 | uint16(b[1]))
		}
		a, _ := netip.AddrFromSlice([]byte(b))
		return a.String()
	}
	text := keyText(raw[:k])
	if last := keyText(raw[k : 2*k]); last != text {
		text += "-" + last
	}
	if v := raw[2*k:]; v != "" {
		text += " : " + v
	}
	return text
}

// prevKey is the big-endian key one below k (k is not all zeros).
func prevKey(k []byte) []byte {
	out := slices.Clone(k)
	for i := len(out) - 1; i >= 0; i-- {
		out[i]--
		if out[i] != 0xff {
			break
		}
	}
	return out
}

// decodeVerdict reads a map element's verdict ("jump CHAIN", "accept", …).
func decodeVerdict(b []byte) (string, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return "", err
	}
	ad.ByteOrder = binary.BigEndian
	var code int32
	var chain string
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			code = int32(ad.Uint32())
		case unix.NFTA_VERDICT_CHAIN:
			chain = ad.String()
		}
	}
	if err := ad.Err(); err != nil {
		return "", err
	}
	switch code {
	case unix.NFT_JUMP:
		return "jump " + chain, nil
	case unix.NFT_GOTO:
		return "goto " + chain, nil
	case 1: // NF_ACCEPT
		return "accept", nil
	case 0: // NF_DROP
		return "drop", nil
	}
	return fmt.Sprintf("verdict %d", code), nil
}
