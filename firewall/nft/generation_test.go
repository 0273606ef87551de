package nft

import (
	"encoding/binary"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

func TestGenerationOf(t *testing.T) {
	attrs := func(id uint32) []byte {
		ae := netlink.NewAttributeEncoder()
		ae.ByteOrder = binary.BigEndian
		ae.Uint32(unix.NFTA_GEN_ID, id)
		ae.Uint32(unix.NFTA_GEN_PROC_PID, 42)
		b, err := ae.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return append([]byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0}, b...)
	}
	newgen := netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWGEN)
	for _, tc := range []struct {
		name string
		msg  netlink.Message
		want uint32
		ok   bool
	}{
		{"NEWGEN", netlink.Message{Header: netlink.Header{Type: newgen}, Data: attrs(1234567)}, 1234567, true},
		{"another message", netlink.Message{Header: netlink.Header{Type: newgen + 1}, Data: attrs(7)}, 0, false},
		{"too short", netlink.Message{Header: netlink.Header{Type: newgen}, Data: []byte{2, 0}}, 0, false},
		{"no id", netlink.Message{Header: netlink.Header{Type: newgen}, Data: []byte{unix.AF_UNSPEC, 0, 0, 0}}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := generationOf(tc.msg)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("generationOf = %d, %v; want %d, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}
