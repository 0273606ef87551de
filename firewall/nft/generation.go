package nft

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/ruleset"
)

var _ firewall.Generations = (*Backend)(nil)

// Generation asks the kernel for the namespace's nftables ruleset
// generation (NFT_MSG_GETGEN, what nft itself asks before it reads): a
// number every committed transaction on any table changes, so that an
// unchanged number means an unchanged ruleset. google/nftables has no
// call for it; it is one request and one answer.
func (b *Backend) Generation(ctx context.Context) (uint32, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	cfg := &netlink.Config{}
	if b.NetNS != 0 {
		cfg.NetNS = b.NetNS
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return 0, classify(err)
	}
	defer c.Close()
	// The kernel answers at once; a context's deadline, else a few
	// seconds, bounds a kernel that does not.
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(5 * time.Second)
	}
	if err := c.SetDeadline(deadline); err != nil {
		return 0, classify(err)
	}
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN),
			Flags: netlink.Request,
		},
		// struct nfgenmsg: family AF_UNSPEC, version NFNETLINK_V0, res_id 0.
		Data: []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	})
	if err != nil {
		return 0, classify(fmt.Errorf("reading the ruleset generation: %w", err))
	}
	for _, m := range msgs {
		if id, ok := generationOf(m); ok {
			return id, nil
		}
	}
	return 0, classify(errors.New("reading the ruleset generation: the kernel's answer has no NFTA_GEN_ID"))
}

// generationOf reads NFTA_GEN_ID from an NFT_MSG_NEWGEN message.
func generationOf(m netlink.Message) (uint32, bool) {
	if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWGEN) || len(m.Data) < 4 {
		return 0, false
	}
	ad, err := netlink.NewAttributeDecoder(m.Data[4:])
	if err != nil {
		return 0, false
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		if ad.Type() == unix.NFTA_GEN_ID {
			return ad.Uint32(), ad.Err() == nil
		}
	}
	return 0, false
}

// Counts is what Apply's result counts for rs (rules, sets, elements),
// without the kernel.
func (b *Backend) Counts(rs ruleset.Ruleset) (firewall.Result, error) {
	p, err := newPlan(rs)
	if err != nil {
		return firewall.Result{}, err
	}
	return firewall.Result{Rules: p.ruleCount(), Sets: p.setCount(), Elements: p.elementCount()}, nil
}
