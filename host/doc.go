// Package host is relayfw's operational core, for the relayfw command and
// for provisioning programs alike: it reads what a relay host runs (every
// tor instance's torrc and defaults file, resolv.conf and a local
// resolver, apt's user, tor's cached consensus) into a ruleset.Ruleset, picks
// and remembers the firewall backend, serializes changes with a lock per
// network namespace, and applies with a confirm window that rolls back on
// its own unless confirmed.
//
// The arrows point one way: cmd/relayfw → host → firewall → rules. The
// command keeps flags, printing and exit codes; everything it does to the
// host goes through here. The host itself is a value, System: its state
// directories, tor's files, /proc, how users and host names are looked
// up. DefaultSystem is the real host; nothing in the package is a global
// to overwrite.
//
//   - Load (with a context) and System.LoadConfig: the inputs (Options
//     says where they are); Load reads them all, once.
//   - Inputs.Ruleset: the ruleset and host facts to install, computed from
//     what Load read, without I/O.
//   - System.BackendChoice, ChooseBackend, AllBackends, System.RemoveOthers:
//     the backend, never two relayfw firewalls at once.
//   - System.Lock: one change at a time per namespace (System.StateDir);
//     Applier.LockToChange, LockToRead and LockAndRecover: how a change, a
//     reader and a recovery start.
//   - Applier.Apply, System.Confirm, System.Rollback, Applier.Watch,
//     System.GuardPending: apply with a confirm window; other changes are
//     refused while it is open. Applier.AwaitConfirm asks the operator at
//     a terminal (a Prompt); Applier.EndWindow is relayfw confirm and
//     relayfw rollback.
//   - Applier.Recover, System.RecoveryDue: what every command that takes
//     the lock runs first — an apply that died midway undone, a window
//     past its deadline rolled back, a dead watcher restarted.
//   - System.RecordChange, SaveLastGood, RecordRolledBack: what outlives a
//     reboot.
//   - System.ReadState, ReadPending, GatherStatus: what status reports.
//   - Inputs.Explain, Inputs.ExplainInbound: whether the exit policy and
//     the firewall let a connection out, or what the inbound protection
//     does with a source's, and why.
//   - System.ValidLastGood, MinimalRuleset, System.InstallFallback: what
//     relayfw boot installs when the apply fails (the last good firewall,
//     else one that lets no exit traffic out).
package host
