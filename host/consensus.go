package host

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/relays"
	"github.com/relayfw/relayfw/ruleset"
)

// States of an instance's cached consensus.
const (
	ConsensusRead    = "read"
	ConsensusMissing = "missing"
	ConsensusRefused = "refused"
)

// StaleAfter is how long after its valid-until a consensus is still
// "reasonably live" to tor; past it, relayfw warns (and still uses it).
const StaleAfter = 24 * time.Hour

// ConsensusState is what relayfw made of one tor instance's cached
// consensus (status, metrics).
type ConsensusState struct {
	// Instance is the tor instance ("default", or its Debian name).
	Instance string `json:"instance"`
	// State is "read", "missing" or "refused".
	State string `json:"state"`
	// Path is the file read or refused; for a missing one, the data
	// directory.
	Path string `json:"path"`
	// Reason says why a consensus is missing or refused.
	Reason string `json:"reason,omitempty"`
	// ValidAfter and ValidUntil are the consensus's own; AgeSeconds is the
	// time since valid-after when it was read.
	ValidAfter *time.Time `json:"valid_after,omitempty"`
	ValidUntil *time.Time `json:"valid_until,omitempty"`
	AgeSeconds *int64     `json:"age_seconds,omitempty"`
	// Expired is set more than StaleAfter past valid-until.
	Expired bool `json:"expired"`
	// LeftOut counts the entries left out (ruleset.CheckRelayLink refused
	// them, or tor would not use them).
	LeftOut int `json:"left_out"`
}

// Summary is the state in one line, for status.
func (c ConsensusState) Summary() string {
	switch c.State {
	case ConsensusRefused:
		return fmt.Sprintf("refused: %s: %s; the relay links installed stay", c.Path, c.Reason)
	case ConsensusMissing:
		return fmt.Sprintf("none in %s; relay links are the directory authorities and fallbacks", c.Path)
	}
	s := c.Path
	if c.AgeSeconds != nil {
		s += fmt.Sprintf(", %s old", (time.Duration(*c.AgeSeconds) * time.Second).String())
	}
	if c.Expired {
		s += fmt.Sprintf(", expired (valid until %s)", c.ValidUntil.Format(time.RFC3339))
	}
	if c.LeftOut > 0 {
		s += fmt.Sprintf(", %d entries left out", c.LeftOut)
	}
	return s
}

// Consensus is what relayfw made of each instance's cached consensus (the
// instances whose relay links it reads), as Load read it.
func (in *Inputs) Consensus() []ConsensusState { return append([]ConsensusState{}, in.consensus...) }

// ConsensusRefused reports whether an instance's consensus was refused:
// then the relay links installed stay (WithInstalledLinks).
func (in *Inputs) ConsensusRefused() bool {
	return slices.ContainsFunc(in.consensus, func(c ConsensusState) bool { return c.State == ConsensusRefused })
}

func (in *Inputs) now() time.Time {
	if in.opts.Now != nil {
		return in.opts.Now()
	}
	return time.Now()
}

// readConsensus reads an instance's cached consensus in dir, records what
// became of it and says so: one warning line for a missing or refused
// consensus, for the entries left out, for an expired one.
func (in *Inputs) readConsensus(t *Instance, dir string) relays.Network {
	nw, path, err := in.readNetwork(dir, relays.Options{Private: t.Options.TestingTorNetwork})
	who := ""
	if len(in.Instances) > 1 {
		who = t.Describe() + ": "
	}
	warn := func(msg string) {
		if in.opts.ReadOnly {
			in.log().Debug(who + msg) // apply, check and status say it
		} else {
			in.log().Warn(who + msg)
		}
	}
	st := ConsensusState{Instance: t.Name, State: ConsensusRead, Path: path}
	var refused *relays.RefusedError
	switch {
	case errors.As(err, &refused):
		st.State, st.Reason = ConsensusRefused, refused.Err.Error()
		warn(fmt.Sprintf("consensus %s refused: %s; the relay links installed stay (a firewall installed now gets the directory authorities and fallbacks only)",
			path, st.Reason))
	case err != nil:
		st.State, st.Path, st.Reason = ConsensusMissing, dir, strings.ReplaceAll(err.Error(), "\n", "; ")
		if !errors.Is(err, fs.ErrNotExist) {
			st.Reason = err.Error()
		}
		warn(fmt.Sprintf("no cached consensus in %s (%s); relay links are the directory authorities and fallbacks only", dir, st.Reason))
	default:
		in.log().Debug("read consensus", "path", path, "links", len(nw.Links))
		if s := nw.LeftOutSummary(); s != "" {
			st.LeftOut = nw.LeftOutTotal()
			warn(fmt.Sprintf("consensus %s: %s", path, s))
		}
		now := in.now()
		if !nw.ValidAfter.IsZero() {
			va := nw.ValidAfter
			age := int64(now.Sub(va) / time.Second)
			st.ValidAfter, st.AgeSeconds = &va, &age
		}
		if !nw.ValidUntil.IsZero() {
			vu := nw.ValidUntil
			st.ValidUntil = &vu
			if now.Sub(vu) > StaleAfter {
				st.Expired = true
				warn(fmt.Sprintf("consensus %s expired %s ago (valid until %s): its relay links are used until tor fetches a new one",
					path, now.Sub(vu).Round(time.Minute), vu.Format(time.RFC3339)))
			}
		}
	}
	in.consensus = append(in.consensus, st)
	return nw
}

// WithInstalledLinks is rs as apply, refresh, check and status use it
// with b: when an instance's consensus was refused, the relay links b has
// installed stay. Each relay-link set becomes the union of rs's and the
// installed one's elements (those ruleset.CheckRelayLink accepts), and with
// inbound protection the trusted sources likewise: nothing the refused
// consensus listed before is taken away, and check has nothing to report
// behind. Where nothing is installed, rs is used as it is: the directory
// authorities and fallbacks.
func (in *Inputs) WithInstalledLinks(ctx context.Context, b firewall.Backend, rs ruleset.Ruleset) (ruleset.Ruleset, error) {
	if !in.ConsensusRefused() {
		return rs, nil
	}
	installed, err := b.RelayLinks(ctx, rs)
	if err != nil {
		return rs, fmt.Errorf("relay links installed: %w", err)
	}
	return keepInstalled(rs, installed), nil
}

// keepInstalled is WithInstalledLinks' union of rs's sets that follow
// the consensus with the installed ones.
func keepInstalled(rs ruleset.Ruleset, installed map[string][]ruleset.Region) ruleset.Ruleset {
	out := rs
	out.Sets = slices.Clone(rs.Sets)
	var inb ruleset.Inbound
	if rs.Inbound != nil {
		inb = *rs.Inbound
	}
	for _, ls := range rs.LinkSets() {
		have, ok := installed[ls.Name]
		switch {
		case !ls.Trusted:
			i := slices.IndexFunc(out.Sets, func(s ruleset.Set) bool { return s.Name == ls.Name })
			out.Sets[i].Elements = withInstalledLinks(out.Sets[i], have)
		case ok:
			ranges := ruleset.Ranges(rs.Inbound.TrustedOf(ls.Family))
			for _, r := range have {
				if r.AddrFirst.Is4() == (ls.Family == ruleset.IPv4) && r.AddrLast.Is4() == (ls.Family == ruleset.IPv4) && r.AddrFirst.Compare(r.AddrLast) <= 0 {
					ranges = append(ranges, ruleset.AddrRange{First: r.AddrFirst, Last: r.AddrLast})
				}
			}
			inb = inb.WithTrustedRanges(ls.Family, ranges) // merges what overlaps
		}
	}
	if rs.Inbound != nil {
		out.Inbound = &inb
	}
	return out
}

// withInstalledLinks are the elements of a relay-link set and those of
// have that ruleset.CheckRelayLink accepts, sorted, once each.
func withInstalledLinks(s ruleset.Set, have []ruleset.Region) []ruleset.Region {
	elems := slices.Clone(s.Elements)
	for _, e := range have {
		ap := netip.AddrPortFrom(e.AddrFirst, e.Ports.First)
		if e.AddrFirst == e.AddrLast && e.Ports.First == e.Ports.Last && e.AddrFirst.Is4() == (s.Family == ruleset.IPv4) &&
			ruleset.CheckRelayLink(ap, s.Private) == nil {
			elems = append(elems, e)
		}
	}
	slices.SortFunc(elems, func(a, b ruleset.Region) int {
		return cmp.Or(a.AddrFirst.Compare(b.AddrFirst), cmp.Compare(a.Ports.First, b.Ports.First))
	})
	return slices.Compact(elems)
}
