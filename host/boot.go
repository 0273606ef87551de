package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/ruleset"
	"github.com/relayfw/relayfw/torconf"
)

// The boot fails closed. relayfw.service runs relayfw boot, and tor's
// units require it (relayfw.service's [Install] RequiredBy=, ordered
// before them), so what boot exits with decides whether tor starts:
//
//   - The torrc's firewall installed (or, after an unconfirmed rollback,
//     the last good one, as every automatic apply keeps it): exit 0.
//   - The apply failed (a torrc relayfw cannot read, a user that does not
//     exist, a kernel that refuses the ruleset …) and the last good
//     firewall, the one that last stood before the reboot, is installed
//     instead: exit 0, loudly, and the last change says "fallback". tor
//     starts and exits as it was last confirmed to: its traffic is
//     filtered by a policy an operator applied and kept, and the host is
//     no less safe than before the reboot. Keeping tor down instead would
//     take a relay off the network for an error the firewall already
//     covers.
//   - No last good firewall (a first boot, a lost /var/lib/relayfw, one
//     that does not validate): the minimal firewall (MinimalRuleset) is
//     installed, which lets no exit traffic out, and boot exits with the
//     apply's error code. tor does not start: an exit relay that cannot
//     exit would still be listed as one and fail every client that picks
//     it, and the operator must look anyway. The host stays reachable:
//     SSH sessions, replies, the host allowances.
//   - Nothing could be installed: the apply's error code; tor does not
//     start.

// Fallback kinds, as the last change's detail and boot's output name them.
const (
	FallbackLastGood = "the last good firewall"
	FallbackMinimal  = "the minimal firewall"
)

// ValidLastGood reads the last good firewall and checks that a backend
// can install it as it is (ruleset.Ruleset.Validate): a record from an
// older relayfw, or one damaged on disk, is refused rather than half
// installed.
func (s *System) ValidLastGood() (LastGood, error) {
	lg, err := s.ReadLastGood()
	if err != nil {
		return lg, err
	}
	if lg.Ruleset.Version != ruleset.RulesetVersion {
		return lg, fmt.Errorf("%s: ruleset version %d, want %d", s.LastGoodPath(), lg.Ruleset.Version, ruleset.RulesetVersion)
	}
	if err := lg.Ruleset.Validate(); err != nil {
		return lg, fmt.Errorf("%s: %w", s.LastGoodPath(), err)
	}
	if lg.Backend != "nftables" && lg.Backend != "iptables" {
		return lg, fmt.Errorf("%s: backend %q: want nftables or iptables", s.LastGoodPath(), lg.Backend)
	}
	return lg, nil
}

// DescribeLastGood names a last good firewall for an operator.
func DescribeLastGood(lg LastGood) string {
	return fmt.Sprintf("%s (applied at %s, %s)", FallbackLastGood, lg.At.Format("2006-01-02T15:04:05Z07:00"), lg.Backend)
}

// InstallFallback installs rs, a firewall that is not the torrc's (the
// last good one, or the minimal one), with the backend named (ChooseBackend),
// and records it: installed (for status and a later rollback), and as the
// last change, of kind kind (ChangeFallback, or ChangeApplied when the
// automatic apply keeps the last good firewall after an unconfirmed
// rollback) with detail. It is never saved as the last good firewall.
// The caller holds Lock.
func (s *System) InstallFallback(ctx context.Context, backend string, rs ruleset.Ruleset, kind, detail string, log *slog.Logger) (firewall.Backend, firewall.Result, error) {
	if err := rs.Validate(); err != nil {
		return nil, firewall.Result{}, err
	}
	b, err := s.chooseBackend(ctx, backend, log)
	if err != nil {
		return nil, firewall.Result{}, err
	}
	res, err := b.Apply(ctx, rs)
	if err != nil {
		return b, res, err
	}
	s.RemoveOthers(ctx, b, log)
	_ = s.RecordApply(Kind(b), nil)
	_ = SaveRuleset(s.AppliedRulesetPath(), rs)
	if err := s.RecordChange(Change{Kind: kind, Detail: detail}); err != nil && log != nil {
		log.Warn(fmt.Sprintf("cannot record the change in %s: %v", s.LastChangePath(), err))
	}
	return b, res, nil
}

// MinimalRuleset is the firewall of a boot that has neither the torrc's
// firewall nor a last good one: it keeps the host working and lets no
// exit traffic out. It has loopback, established and related packets and
// the mid-stream pickup (SSH sessions and every reply go on), ICMP and
// NDP, the host allowances of the configuration given (DNS to the
// resolvers, DHCP, NTP, package updates, allow.extra; the caller passes
// DefaultConfig when relayfw.toml itself cannot be read), and the relay
// links of the tor users that can be known; no exit map: everything else
// is rejected. Inbound protection is left out (it guards relays that are
// not running).
//
// The tor users are read instance by instance: the User of a torrc that
// can be read; for one that cannot, the User of its defaults file
// (Debian's sets debian-tor, and _tor-NAME for tor-instance-create's
// instances: what the unit runs tor as). A user that does not exist on
// the host, or an instance whose user cannot be known, gets nothing: the
// relay links go to tor's users alone, never to a guess (a torrc without
// User that can be read means root, as in every ruleset). users names
// them, for the record.
func MinimalRuleset(ctx context.Context, opts Options) (rs ruleset.Ruleset, users []string) {
	in := newInputs(opts)
	srcs, err := in.instanceSources()
	if err != nil {
		in.log().Warn(fmt.Sprintf("minimal firewall: the tor instances cannot be listed (%v): no relay links", err))
	}
	var known []ruleset.UserRef
	for _, src := range srcs {
		t := &Instance{Name: src.name, Torrc: src.torrc, Defaults: src.defaults, defaultsName: src.defaultsName}
		defaults, lines, _, err := in.readInstance(src)
		whole := err == nil
		if whole {
			if t.Options, err = torconf.OptionsFromGroups(defaults, lines); err != nil {
				whole = false
			}
		}
		if !whole {
			// What the defaults file alone says (its User, DataDirectory).
			t.Options, _ = torconf.OptionsFromGroups(defaults)
		}
		in.Instances = append(in.Instances, t)
		var user string
		switch {
		case t.Options.User != "":
			user = t.Options.User
		case whole:
			user = "root" // tor without User runs as root
		default:
			continue // unknown: no relay links
		}
		uid, err := in.sys.lookupUID(user)
		if err != nil {
			continue
		}
		t.UID = &uid
		if !slices.ContainsFunc(known, func(u ruleset.UserRef) bool { return u.UID == uid }) {
			known = append(known, ruleset.UserRef{Name: user, UID: uid})
		}
	}
	h := in.readHost(ctx)
	h.RelayLinkUsers = known
	h.Inbound = nil
	rs = ruleset.CompileInstances(nil, h)
	if len(known) == 0 {
		// CompileInstances gives root the links when no user is named:
		// here no user is known, so nobody gets them.
		rs.Outbound = slices.DeleteFunc(rs.Outbound, func(r ruleset.Rule) bool { return r.Class == ruleset.ClassRelayLink })
	}
	for _, u := range known {
		users = append(users, u.Name)
	}
	return rs, users
}

// DescribeMinimal says what the minimal firewall lets out, for the record.
func DescribeMinimal(users []string) string {
	links := "no relay links, no tor user being known"
	if len(users) > 0 {
		links = "relay links for " + strings.Join(users, ", ")
	}
	return fmt.Sprintf("%s (no exit traffic; SSH and the host allowances; %s)", FallbackMinimal, links)
}

// BootNeedsNoFallback says whether a boot apply's error leaves the firewall
// as it is, with nothing to fall back from: another relayfw holds the lock
// or a confirm window is open (a firewall stands, and is being changed),
// or relayfw lacks the privileges any fallback would need too.
func BootNeedsNoFallback(err error) bool {
	var busy *BusyError
	var pending *PendingError
	var state *StateError
	return errors.As(err, &busy) || errors.As(err, &pending) ||
		errors.Is(err, firewall.ErrNotPermitted) || (errors.As(err, &state) && state.NotPermitted())
}
