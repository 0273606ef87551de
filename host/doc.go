// Package host is relayfw's operational core, for the relayfw command and
// for provisioning programs alike: it reads what a relay host runs (every
// tor instance's torrc and defaults file, resolv.conf and a local
// resolver, apt's user, tor's cached consensus) into a rules.Ruleset, picks
// and remembers the firewall backend, serializes changes with a lock per
// network namespace, and applies with a confirm window that rolls back on
// its own unless confirmed.
//
// The arrows point one way: cmd/relayfw → host → firewall → rules. The
// command keeps flags, printing and exit codes; everything it does to the
// host goes through here:
//
//   - Load and LoadConfig: the inputs (Options says where they are).
//   - Inputs.Ruleset: the ruleset and host facts to install.
//   - BackendChoice, ChooseBackend, AllBackends, RemoveOthers: the backend,
//     never two relayfw firewalls at once.
//   - Lock: one change at a time per namespace (StateDir).
//   - Applier.Apply, Confirm, Rollback, Watch, GuardPending: apply with a
//     confirm window; other changes are refused while it is open.
//   - Applier.Recover, RecoveryDue: what every command that takes the lock
//     runs first — an apply that died midway undone, a window past its
//     deadline rolled back, a dead watcher restarted.
//   - RecordChange, SaveLastGood, RecordRolledBack: what outlives a reboot.
//   - ReadState, ReadPending: what status reports.
//   - ValidLastGood, MinimalRuleset, InstallFallback: what relayfw boot
//     installs when the apply fails (the last good firewall, else one that
//     lets no exit traffic out).
package host
