// Package firewall installs a ruleset.Ruleset into the kernel. Each backend
// (nftables over netlink, iptables/ip6tables) implements Backend, and the
// same integration suite runs against every one of them.
package firewall

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/relayfw/relayfw/ruleset"
)

// Backend is one way of installing relayfw's ruleset on a host. It owns
// only relayfw's own objects: the table inet relayfw, or the chain
// RELAYFW-OUTPUT, its one jump from OUTPUT and the relayfw-* ipsets (with
// inbound protection also RELAYFW-INPUT, its one jump from INPUT, and
// RELAYFW-INBOUND).
type Backend interface {
	// Name is "nftables" or "iptables".
	Name() string
	// Available reports whether the backend works on this host: nil, or
	// an error wrapping ErrUnavailable or ErrNotPermitted.
	Available(ctx context.Context) error
	// Render returns the ruleset as the backend's own texts (the dry run
	// of print), each loadable by its tool: nft -f, iptables-restore,
	// ip6tables-restore, ipset restore. It needs neither privileges nor
	// the kernel, and renders every family whatever the host has.
	Render(rs ruleset.Ruleset) ([]Listing, error)
	// Apply installs rs atomically. When the kernel already holds exactly
	// rs it changes nothing and says so in the result.
	Apply(ctx context.Context, rs ruleset.Ruleset) (Result, error)
	// Check compares the installed state with rs and returns each
	// difference (none when in sync).
	Check(ctx context.Context, rs ruleset.Ruleset) (drift []Drift, err error)
	// Remove deletes everything relayfw owns, and nothing else; removed is
	// false when there was nothing to remove.
	Remove(ctx context.Context) (removed bool, err error)
	// Refresh brings only the contents of the sets (relay links) up to
	// date, sending only the elements that changed, without touching rules
	// or chains; it returns how many elements it added and removed.
	Refresh(ctx context.Context, rs ruleset.Ruleset) (added, removed int, err error)
	// Installed reports whether any object relayfw owns is in the kernel,
	// so that a firewall is never lost track of, whichever backend put it
	// there.
	Installed(ctx context.Context) (bool, error)
	// RelayLinks reads the installed contents of the sets that follow the
	// consensus, by set name: the ruleset's sets (relay links) and, with
	// inbound protection, its trusted sources (regions without ports). A
	// set that is not installed is absent.
	RelayLinks(ctx context.Context, rs ruleset.Ruleset) (map[string][]ruleset.Region, error)
	// Blocked lists the sources the inbound protection blocks now, as
	// networks of in's source prefix lengths; none when it is not
	// installed.
	Blocked(ctx context.Context, in ruleset.Inbound) ([]Block, error)
	// Unblock lifts the block of the source network and forgets its rate
	// meters, so that its next connection starts afresh; false when it was
	// not blocked.
	Unblock(ctx context.Context, source netip.Prefix) (bool, error)
	// Counters reads the packet and byte counts of relayfw's rules, summed
	// by rule name (the ruleset's Rule.Name); empty when nothing is
	// installed.
	Counters(ctx context.Context) (map[string]Counter, error)
}

// Block is one blocked source and the time its block has left.
type Block struct {
	Source         netip.Prefix `json:"source"`
	ExpiresSeconds int64        `json:"expires_seconds"`
}

// Left is the time the block has left.
func (b Block) Left() time.Duration { return time.Duration(b.ExpiresSeconds) * time.Second }

// Counter is what one rule matched.
type Counter struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// Result says what Apply did.
type Result struct {
	Changed  bool
	Rules    int // kernel rules installed
	Sets     int
	Elements int // set elements installed
	// Drift is what the kernel held that differed from the ruleset, as
	// Check would have said it, before the apply replaced it.
	Drift []Drift
}

// Listing is the ruleset in one of a backend's formats: "nft",
// "iptables", "ip6tables" or "ipset" (print --format).
type Listing struct {
	Format string
	Text   string
}

// ErrUnavailable means the backend cannot work on this host (no nftables
// in the kernel, no iptables binary); relayfw exits 69.
var ErrUnavailable = errors.New("firewall backend not available")

// NotRestoredError is a change that failed halfway and whose undo failed
// too: the firewall is neither what it was nor what was asked (an
// iptables apply is several transactions). Without it, a failed Apply or
// Remove left the firewall it found.
type NotRestoredError struct{ Err error }

func (e *NotRestoredError) Error() string { return e.Err.Error() }
func (e *NotRestoredError) Unwrap() error { return e.Err }

// ErrNotPermitted means the caller lacks CAP_NET_ADMIN; relayfw exits 77.
var ErrNotPermitted = errors.New("not permitted (run as root or with CAP_NET_ADMIN)")

// Generations is a Backend whose kernel numbers the namespace's ruleset:
// the number changes with every committed change to any table (nftables'
// generation id). What relayfw recorded at its last apply with an
// unchanged number is still what the kernel holds, without reading it
// back.
type Generations interface {
	Backend
	// Generation is the namespace's ruleset generation now.
	Generation(ctx context.Context) (uint32, error)
	// Counts is what Apply's Result counts for rs, without the kernel.
	Counts(rs ruleset.Ruleset) (Result, error)
}
