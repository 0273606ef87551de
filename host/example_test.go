package host_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/host"
	"github.com/relayfw/relayfw/rules"
)

// printer stands in for a kernel backend (nft.Backend{} or ipt.New() in a
// real program, which needs CAP_NET_ADMIN): it says what it would install.
type printer struct{ firewall.Backend }

func (printer) Name() string { return "printer" }
func (printer) Apply(_ context.Context, rs rules.Ruleset) (firewall.Result, error) {
	fmt.Println("installing:", len(rs.Outbound), "rules")
	return firewall.Result{Changed: true, Rules: len(rs.Outbound)}, nil
}
func (printer) Remove(context.Context) (bool, error)    { return true, nil }
func (printer) Installed(context.Context) (bool, error) { return true, nil }

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
	_, pending, err := applier.Apply(ctx, printer{}, rs, 2*time.Minute)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("unless confirmed, rolls back to", pending.Restores())
	if _, err := sys.Confirm(); err == nil {
		fmt.Println("confirmed")
	}
	// Output:
	// [reject6 *:* accept *:80 accept *:443 reject *:*]
	// installing: 17 rules
	// unless confirmed, rolls back to no firewall (relayfw's firewall is removed)
	// confirmed
}
