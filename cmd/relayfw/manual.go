package main

// The parts of relayfw(8) that no command's help holds, rendered by
// gendocs. Markdown, as the commands' Long texts.

// exitStatuses is relayfw(8)'s EXIT STATUS: every exit code relayfw
// returns (a test holds it to the exit* constants of this package).
var exitStatuses = []struct {
	code    int
	meaning string
}{
	{0, "Success."},
	{1, "**check** found drift; **confirm** or **rollback** found nothing pending; **confirm** after the deadline (it was rolled back); **apply --confirm** on a terminal rolled back; or an operation failed after starting."},
	{2, "**apply --detailed-exitcode** changed something (with **--dry-run**: would change something)."},
	{3, "**check**: the rules are in sync, but the relay links are behind tor's cached consensus (**relayfw refresh**, or the relayfw-consensus path unit, brings them up to date). **check** returns the most severe of what it found: 1, then 4, then 3."},
	{4, "**check**: a running tor enforces another exit policy than the one relayfw compiled from its torrc (asked over its control socket with the cookie): the torrc was edited and tor not reloaded, or tor is another release than relayfw's model. **check** lists the entries and says what to do (reload tor)."},
	{5, "**apply**: the **apply --confirm** window it found open (and, with **--wait**, waited for) was rolled back; nothing was installed (run apply again to install the torrc's firewall)."},
	{64, "Usage error: an unknown flag or command, a bad argument or target."},
	{65, "Bad input data: a torrc tor refuses (an unknown option, a bad value, not text, a combination tor aborts on), exit policy or relayfw.toml syntax, two exit instances of one user, a torrc or relayfw.toml others can write, an include file name systemd cannot watch. The message names file:line (or --policy). Not for **status** and **metrics**: they report it and exit 0."},
	{66, "An input file is missing or unreadable (not for **status** and **metrics**: they report it and exit 0)."},
	{69, "The chosen backend is not available on this host."},
	{73, "relayfw's state (*/run/relayfw*) or a **metrics --output** file cannot be written; nothing was changed."},
	{75, "Another relayfw is changing the firewall (**apply**, **refresh**, **remove** and **confirm** take a lock per network namespace; **--wait 30s** waits for it), or an **apply --confirm** window is open (**relayfw confirm**, **relayfw rollback**, or **--wait** until it ends). Readers (**check**, **status**, **metrics**, **apply --dry-run**) never exit 75."},
	{77, "Not permitted: needs root (CAP_NET_ADMIN)."},
}

const manExitNote = `On error relayfw prints one line, "relayfw: ...", on stderr and nothing on
stdout. Warnings (for example an accept6 entry with an IPv4 address, which
tor ignores) go to stderr and do not change the exit code.`

// manFiles is relayfw(8)'s FILES.
var manFiles = []struct{ path, what string }{
	{"/etc/relayfw/relayfw.toml", "relayfw's own settings, see **relayfw.toml**(5). Optional; the package installs it with every line commented out."},
	{"/etc/tor/torrc, /usr/share/tor/tor-service-defaults-torrc", "The default tor instance's torrc and the defaults file Debian's unit passes to tor; read when neither --torrc nor relayfw.toml names a torrc."},
	{"/etc/tor/instances/NAME/torrc, /usr/share/tor/tor-service-defaults-torrc-instances", "The torrcs of the instances tor-instance-create(8) makes, and their defaults file (@@NAME@@ replaced)."},
	{"/var/lib/tor/cached-microdesc-consensus, /var/lib/tor/cached-consensus", "tor's cached consensus (in each instance's DataDirectory, /var/lib/tor-instances/NAME for Debian's instances): the relay links. Written by tor's user and read as untrusted input."},
	{"/etc/resolv.conf, /run/systemd/resolve/resolv.conf", "The resolvers DNS may reach (or the torrc's ServerDNSResolvConfFile); with systemd-resolved's stub, its upstream servers."},
	{"/run/relayfw/", "relayfw's state per boot, per network namespace: the lock, the backend of the last apply, a pending confirm window and its watcher's log, an apply's journal."},
	{"/var/lib/relayfw/", "State that outlives a reboot: the last good firewall (installed by **boot** when the torrc's cannot be) and the last change. Deleted by apt-get purge."},
	{"/run/systemd/system/relayfw-reapply.path.d/50-inputs.conf", "The PathChanged= lines **paths --update-path-unit** writes: every file the firewall depends on."},
	{"/lib/systemd/system/relayfw.service", "Runs **relayfw boot** at boot, before the network and tor's units (which require it once it is enabled); reload re-applies."},
	{"/lib/systemd/system/relayfw-reapply.path, relayfw-reapply.service", "Re-apply when a torrc, a defaults file, an %include'd file, relayfw.toml or resolv.conf changes."},
	{"/lib/systemd/system/relayfw-consensus.path, relayfw-consensus@.path, relayfw-refresh.timer", "Run **relayfw refresh** when tor writes a new consensus (tor@default's, or instance NAME's with relayfw-consensus@NAME.path), and hourly."},
	{"/lib/systemd/system/relayfw-metrics.timer, relayfw-metrics.service", "Write **relayfw metrics** to /var/lib/prometheus/node-exporter/relayfw.prom every minute, in the group debian-tor, which may ask tor@default over /run/tor/control."},
	{"/run/tor/control, /run/tor/control.authcookie", "tor@default's control socket and cookie (Debian's defaults file; /run/tor-instances/NAME/ for instance NAME): **check**, **status**, **metrics** and **policy --from-tor** ask the running tor's exit policy there. Written by tor's user and read as untrusted input."},
}

// manExamples is relayfw(8)'s EXAMPLES.
var manExamples = []struct{ what, session string }{
	{"The exit policy tor publishes, and what the firewall does with two destinations:", `$ relayfw --torrc examples/torrc policy
reject 0.0.0.0/8:*
...
accept *:21-23
...
reject *:*
reject6 *:*
$ relayfw --torrc examples/torrc explain 203.0.113.5:80 '[2001:db8::1]:25'
203.0.113.5:80 accept by entry 17: accept *:80; firewall (tcp): accept, exit policy (rule exit4)
[2001:db8::1]:25 reject by entry 30: reject6 *:*; firewall (tcp): reject, rejected by the exit policy (rule reject-tcp)
$ relayfw --torrc examples/torrc explain --format json 203.0.113.5:80
{"target":"203.0.113.5:80","verdict":"accept","entry":"accept *:80","index":17,"proto":"tcp","firewall":"accept","reason":"exit policy","rule":"exit4"}`},
	{"A first apply over SSH: see what would change, install it with a confirm window, and confirm from a second session while the host still answers (without confirm the previous firewall comes back at the deadline):", `$ sudo relayfw apply --dry-run
dry run (nftables): apply would change:
  + exit4: TCP 8080 to 0.0.0.0-9.255.255.255, 11.0.0.0-126.255.255.255, … and 6 more address ranges
  + allowance updates: package updates: TCP 80 and 443 for user _apt
  relay links: +3 -1
$ sudo relayfw apply --confirm 60s
applied: 26 rules, 6 sets, 342 set elements (nftables)
waiting for relayfw confirm until 2026-11-25T18:56:44Z; without it the watcher restores the firewall applied at 2026-11-25T18:40:02Z (nftables)
$ sudo relayfw confirm
confirmed: the new firewall stays`},
	{"Drift: a rule added by hand is found (relayfw apply removes it):", `$ sudo nft add rule inet relayfw output tcp dport 25 accept
$ sudo relayfw check; echo $?
drift (nftables):
  chain output: unexpected rule (handle 36): not generated by relayfw
1`},
	{"Locked out without a confirm window: from the provider's console, remove relayfw's firewall (from every backend where it is; nothing else is touched), then find the cause and apply again with --confirm:", `# relayfw remove
removed (nftables)
# relayfw status
...
installed:  false`},
	{"Metrics for node_exporter's textfile collector, and an inbound block lifted:", `$ sudo relayfw metrics --output /var/lib/prometheus/node-exporter/relayfw.prom
$ sudo relayfw unblock 203.0.113.7 2001:db8:100::5
unblocked 203.0.113.7/32 (nftables)
unblocked 2001:db8:100::/64 (nftables)`},
}

const manSeeAlsoNote = `The design (tor fidelity, the encoding of exit policies, the inbound
protection, the ruleset JSON, performance, what relayfw trusts):
/usr/share/doc/relayfw/.`

// configManIntro follows the file's own introduction in relayfw.toml(5).
const configManIntro = `The file is TOML. Each setting below shows its line in the shipped file.
relayfw.toml must be owned by root and not writable by group or others,
and so must every directory above it (exit 65 otherwise). An explicit
--config path must exist; the default path is optional.`
