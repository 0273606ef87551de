package exitpolicy

import (
	"math"
	"strconv"
	"strings"
)

// maxSummaryLen is tor's MAX_EXITPOLICY_SUMMARY_LEN.
const maxSummaryLen = 1000

// Summarize is tor 0.4.9's policy_summarize(policy, family): the port
// summary tor publishes for one family ("accept 80,443" or "reject
// 25,119"), the one a relay's descriptor carries as its ipv6-policy
// line (and microdescriptors as p/p6). An accept counts only when it is
// for every address of the family; a reject counts its addresses, and a
// port stays accepted only while fewer than tor's cutoff (two IPv4 /8s,
// one IPv6 /16) are rejected ahead of the accept. Rejects of tor's
// private networks, written exactly so, are ignored.
func (p ExitPolicy) Summarize(v6 bool) string {
	s := newPortSummary()
	for _, e := range p.Entries {
		if e.IPv6() != v6 {
			continue
		}
		switch {
		case e.Action == Accept && e.Bits == 0:
			s.accept(e.PortMin, e.PortMax, v6)
		case e.Action == Reject && !isPrivateNetEntry(e):
			s.reject(e.Bits, e.PortMin, e.PortMax, v6)
		}
	}
	var accepts, rejects []string
	start := s[0].min
	for i, it := range s {
		last := i == len(s)-1
		if !last && it.accepted == s[i+1].accepted {
			continue
		}
		r := strconv.Itoa(int(start))
		if start != it.max {
			r += "-" + strconv.Itoa(int(it.max))
		}
		if it.accepted {
			accepts = append(accepts, r)
		} else {
			rejects = append(rejects, r)
		}
		if !last {
			start = s[i+1].min
		}
	}
	switch {
	case len(accepts) == 0:
		return "reject 1-65535"
	case len(rejects) == 0:
		return "accept 1-65535"
	}
	acceptStr, rejectStr := strings.Join(accepts, ","), strings.Join(rejects, ",")
	switch {
	case len(rejectStr) > maxSummaryLen-len("reject")-1 && len(acceptStr) > maxSummaryLen-len("accept")-1:
		// tor cuts the accepts at the last comma that fits.
		cut := strings.LastIndexByte(acceptStr[:maxSummaryLen-len("accept")], ',')
		return "accept " + acceptStr[:cut]
	case len(rejectStr) < len(acceptStr):
		return "reject " + rejectStr
	default:
		return "accept " + acceptStr
	}
}

// isPrivateNetEntry is policy_summary_add_item's test: the entry's address
// (as written, not masked) and prefix length are one of tor's
// private_nets.
func isPrivateNetEntry(e Entry) bool {
	for _, n := range privateNets {
		addr, bits := mustParseNet(n)
		if e.Addr == addr && e.Bits == bits {
			return true
		}
	}
	return false
}

// portSummary is tor's policy summary list: port ranges covering 1-65535
// in order, each with its count of rejected addresses and whether an
// accept reached it first.
type portSummary []summaryItem

type summaryItem struct {
	min, max    uint16
	rejectCount uint64
	accepted    bool
}

func newPortSummary() portSummary { return portSummary{{min: 1, max: 65535}} }

// tor's REJECT_CUTOFF_COUNT_IPV4 (addresses) and _IPV6 (/64s).
const (
	rejectCutoff4 = uint64(1) << (32 - 0 - 7)
	rejectCutoff6 = uint64(1) << (128 - 64 - 16)
)

// split is policy_summary_split: items start at lo and end at hi; it
// returns the index of the item starting at lo.
func (s *portSummary) split(lo, hi uint16) int {
	i := 0
	for (*s)[i].max < lo {
		i++
	}
	if (*s)[i].min != lo {
		s.splitAt(i, lo)
		i++
	}
	start := i
	for (*s)[i].max < hi {
		i++
	}
	if (*s)[i].max != hi {
		s.splitAt(i, hi+1)
	}
	return start
}

func (s *portSummary) splitAt(i int, newStart uint16) {
	old := (*s)[i]
	next := old
	next.min = newStart
	(*s)[i].max = newStart - 1
	*s = append((*s)[:i+1], append(portSummary{next}, (*s)[i+1:]...)...)
}

// accept is policy_summary_accept.
func (s *portSummary) accept(lo, hi uint16, v6 bool) {
	cutoff := rejectCutoff4
	if v6 {
		cutoff = rejectCutoff6
	}
	for i := s.split(lo, hi); i < len(*s) && (*s)[i].max <= hi; i++ {
		if !(*s)[i].accepted && (*s)[i].rejectCount <= cutoff {
			(*s)[i].accepted = true
		}
	}
}

// reject is policy_summary_reject: IPv4 counts addresses, IPv6 /64s
// (smaller IPv6 prefixes count nothing; /0 saturates).
func (s *portSummary) reject(bits int, lo, hi uint16, v6 bool) {
	i := s.split(lo, hi)
	addrBits, scale := 32, 0
	if v6 {
		addrBits, scale = 128, 64
	}
	if bits > addrBits-scale {
		return
	}
	count := uint64(math.MaxUint64)
	if addrBits-scale-bits < 64 {
		count = uint64(1) << (addrBits - scale - bits)
	}
	for ; i < len(*s) && (*s)[i].max <= hi; i++ {
		if (*s)[i].rejectCount <= math.MaxUint64-count {
			(*s)[i].rejectCount += count
		} else {
			(*s)[i].rejectCount = math.MaxUint64
		}
	}
}
