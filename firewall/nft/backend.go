package nft

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/internal/phase"
	"github.com/relayfw/relayfw/ruleset"
)

// Backend installs the ruleset as the nftables table inet relayfw.
type Backend struct {
	// NetNS, when non-zero, is a network namespace file descriptor: the
	// netlink socket is opened there (tests use it).
	NetNS int
}

var _ firewall.Backend = (*Backend)(nil)

// Name is "nftables".
func (b *Backend) Name() string { return "nftables" }

// Render is the nft -f text of the ruleset (format "nft").
func (b *Backend) Render(rs ruleset.Ruleset) ([]firewall.Listing, error) {
	text, err := Render(rs)
	if err != nil {
		return nil, err
	}
	return []firewall.Listing{{Format: "nft", Text: text}}, nil
}

// conn opens a netlink connection whose send buffer fits a batch of about
// size bytes: google/nftables sends a whole batch in one sendmsg, and a
// large exit policy is tens of thousands of set elements.
func (b *Backend) conn(ctx context.Context, size int) (*nftables.Conn, error) {
	// The netlink library takes no context: an operation that was
	// canceled does not start talking to the kernel.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	opts := []nftables.ConnOption{nftables.AsLasting()}
	if b.NetNS != 0 {
		opts = append(opts, nftables.WithNetNSFd(b.NetNS))
	}
	if size > 0 {
		buf := max(size*2, 4<<20)
		opts = append(opts, nftables.WithSockOptions(func(c *netlink.Conn) error {
			// Acks must not echo the (large) requests back.
			if err := c.SetOption(netlink.CapAcknowledge, true); err != nil {
				return err
			}
			raw, err := c.SyscallConn()
			if err != nil {
				return err
			}
			var serr error
			err = raw.Control(func(fd uintptr) {
				// SO_SNDBUFFORCE passes wmem_max for CAP_NET_ADMIN callers.
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, buf)
				if serr == nil {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, buf)
				}
			})
			if err != nil {
				return err
			}
			return serr
		}))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, classify(err)
	}
	return c, nil
}

// classify maps netlink errors to the firewall package's sentinels.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return fmt.Errorf("nftables: %w", firewall.ErrNotPermitted)
	case errors.Is(err, syscall.EPROTONOSUPPORT), errors.Is(err, syscall.EAFNOSUPPORT), errors.Is(err, syscall.EOPNOTSUPP):
		return fmt.Errorf("nftables: %w: the kernel does not answer nf_tables over netlink (%v)", firewall.ErrUnavailable, err)
	}
	return fmt.Errorf("nftables: %w", err)
}

// Available asks the kernel for its inet tables.
func (b *Backend) Available(ctx context.Context) error {
	c, err := b.conn(ctx, 0)
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	_, err = c.ListTablesOfFamily(nftables.TableFamilyINet)
	return classify(err)
}

// Apply replaces the table in one transaction, unless it already holds
// exactly the ruleset.
func (b *Backend) Apply(ctx context.Context, rs ruleset.Ruleset) (firewall.Result, error) {
	end := phase.Start(ctx, "plan")
	p, err := newPlan(rs)
	end()
	if err != nil {
		return firewall.Result{}, err
	}
	res := firewall.Result{Rules: p.ruleCount(), Sets: p.setCount(), Elements: p.elementCount()}
	c, err := b.conn(ctx, p.batchSize())
	if err != nil {
		return res, err
	}
	defer c.CloseLasting()
	end = phase.Start(ctx, "read kernel")
	drift, err := p.drift(ctx, c)
	end()
	if err != nil {
		return res, err
	}
	if len(drift) == 0 {
		return res, nil
	}
	res.Drift = drift
	var keep map[string][]nftables.SetElement
	if p.inbound != nil {
		if keep, err = p.inbound.liveBlocks(c); err != nil {
			return res, err
		}
	}
	end = phase.Start(ctx, "commit", "elements", res.Elements)
	defer end()
	if err := p.queueReplace(c, keep); err != nil {
		return res, err
	}
	if err := c.Flush(); err != nil {
		return res, classify(fmt.Errorf("replacing table inet %s: %w", TableName, err))
	}
	res.Changed = true
	return res, nil
}

// batchSize estimates the netlink batch of a replacement, in bytes.
func (p plan) batchSize() int {
	return 64*1024 + len(p.rules)*512 + p.elementCount()*96
}

// Check reports how the installed table differs from the ruleset.
func (b *Backend) Check(ctx context.Context, rs ruleset.Ruleset) ([]firewall.Drift, error) {
	p, err := newPlan(rs)
	if err != nil {
		return nil, err
	}
	c, err := b.conn(ctx, 0)
	if err != nil {
		return nil, err
	}
	defer c.CloseLasting()
	defer phase.Start(ctx, "read kernel")()
	return p.drift(ctx, c)
}

// Remove deletes the table inet relayfw, and nothing else.
func (b *Backend) Remove(ctx context.Context) (bool, error) {
	return b.withTable(ctx, func(c *nftables.Conn, t *nftables.Table) error {
		c.DelTable(t)
		if err := c.Flush(); err != nil {
			return classify(fmt.Errorf("deleting table inet %s: %w", TableName, err))
		}
		return nil
	})
}

// Installed reports whether the table inet relayfw exists.
func (b *Backend) Installed(ctx context.Context) (bool, error) {
	c, err := b.conn(ctx, 0)
	if err != nil {
		return false, err
	}
	defer c.CloseLasting()
	t, err := ownTable(c)
	return t != nil, err
}

// withTable runs f on a connection with the installed table inet
// relayfw; when the table is not installed, f does not run and installed
// is false.
func (b *Backend) withTable(ctx context.Context, f func(c *nftables.Conn, t *nftables.Table) error) (installed bool, err error) {
	c, err := b.conn(ctx, 0)
	if err != nil {
		return false, err
	}
	defer c.CloseLasting()
	t, err := ownTable(c)
	if err != nil || t == nil {
		return false, err
	}
	return true, f(c, t)
}

// ownTable is the table inet relayfw, or nil when it is not installed.
func ownTable(c *nftables.Conn) (*nftables.Table, error) {
	t, err := c.ListTableOfFamily(TableName, nftables.TableFamilyINet)
	if errors.Is(err, syscall.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, classify(err)
	}
	return t, nil
}

// ownChains are the chains of the table inet relayfw.
func ownChains(c *nftables.Conn) ([]*nftables.Chain, error) {
	all, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, classify(err)
	}
	var out []*nftables.Chain
	for _, ch := range all {
		if ch.Table.Name == TableName {
			out = append(out, ch)
		}
	}
	return out, nil
}
