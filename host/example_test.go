package host_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/firewall/fake"
	"github.com/relayfw/relayfw/host"
)

// A provisioning program compiles a torrc and applies it with a confirm
// window: unless Confirm runs within two minutes, a watcher restores the
// previous firewall.
func Example() {
	dir, _ := os.MkdirTemp("", "relayfw-example")
	defer os.RemoveAll(dir)
	sys := host.DefaultSystem()
	sys.StateDir = filepath.Join(dir, "state")    // default /run/relayfw
	sys.PersistentDir = filepath.Join(dir, "lib") // default /var/lib/relayfw
	torrc := filepath.Join(dir, "torrc")
	_ = os.WriteFile(torrc, []byte("ORPort 9001\nExitRelay 1\nExitPolicy accept *:80,accept *:443,reject *:*\nExitPolicyRejectPrivate 0\n"), 0o644)

	cfg := host.DefaultConfig() // or sys.LoadConfig("/etc/relayfw/relayfw.toml", true)
	cfg.Allow.Resolvers = []string{"192.0.2.53"}
	noUpdates := false
	cfg.Allow.Updates = &noUpdates
	ctx := context.Background()
	in, err := host.Load(ctx, host.Options{Torrcs: []string{torrc}, Config: cfg, System: sys})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(in.Instances[0].Effective.Policy.Lines())
	rs, _ := in.Ruleset()

	release, err := sys.Lock(ctx, 30*time.Second)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer release()
	applier := host.Applier{
		System: sys,
		// A real program starts "relayfw rollback-watcher" (or calls
		// sys.Watch in a process of its own) detached from its session.
		StartWatcher: func(*host.Pending) (int, error) { return 0, nil },
		// This program manages one backend: leave the others alone.
		Others: func(context.Context, firewall.Backend) []firewall.Backend { return nil },
	}
	// A real program applies with a kernel backend (nft.Backend{}, or
	// ipt.New()), which needs CAP_NET_ADMIN; fake.New keeps the firewall in
	// memory.
	b := fake.New("nftables")
	res, pending, err := applier.Apply(ctx, b, rs, 2*time.Minute)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("installed:", res.Rules, "rules")
	fmt.Println("unless confirmed, rolls back to", pending.Restores())
	if _, err := sys.Confirm(); err == nil {
		fmt.Println("confirmed")
	}
	if drift, _, err := host.Check(ctx, b, rs); err == nil && len(drift) == 0 {
		fmt.Println("in sync")
	}
	// Output:
	// [reject6 *:* accept *:80 accept *:443 reject *:*]
	// installed: 17 rules
	// unless confirmed, rolls back to no firewall (relayfw's firewall is removed)
	// confirmed
	// in sync
}
