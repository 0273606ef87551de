package nft

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// listChain is nft's own text of a chain's rules by handle, from the nft
// binary when the host has it (the backend itself needs none): the way an
// admin wrote a rule is the way to show it back.
func listChain(ctx context.Context, chain string) map[uint64]string {
	out := map[uint64]string{}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	text, err := exec.CommandContext(ctx, "nft", "-a", "list", "chain", "inet", TableName, chain).Output()
	if err != nil {
		return out
	}
	for _, l := range strings.Split(string(text), "\n") {
		body, handle, ok := strings.Cut(strings.TrimSpace(l), " # handle ")
		if !ok {
			continue
		}
		if h, err := strconv.ParseUint(handle, 10, 64); err == nil {
			out[h] = body
		}
	}
	return out
}
