// Package firewall installs a rules.Ruleset into the kernel. Each backend
// (nftables over netlink, iptables/ip6tables) implements Backend, and the
// same integration suite runs against every one of them.
package firewall

import (
	"context"

	"github.com/relayfw/relayfw/rules"
)

// Backend is one way of installing relayfw's ruleset on a host. It owns
// only relayfw's own objects (DESIGN.md, "What relayfw owns on a host").
type Backend interface {
	// Name is "nftables" or "iptables".
	Name() string
	// Render returns the ruleset as the backend's own text (the dry run
	// of print), loadable by nft -f or iptables-restore.
	Render(rs rules.Ruleset) (string, error)
	// Apply installs rs atomically; changed is false when the kernel
	// already held exactly rs.
	Apply(ctx context.Context, rs rules.Ruleset) (changed bool, err error)
	// Check compares the installed state with rs and describes any drift
	// (empty when in sync).
	Check(ctx context.Context, rs rules.Ruleset) (drift string, err error)
	// Remove deletes everything relayfw owns, and nothing else.
	Remove(ctx context.Context) error
}
