package host

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/relayfw/relayfw/exitpolicy"
	"github.com/relayfw/relayfw/internal/torcontrol"
)

// ModelTorVersion is the tor release series relayfw's model of the exit
// policy follows.
const ModelTorVersion = "0.4.9"

// RunningTorListed bounds the entries RunningTor lists on each side.
const RunningTorListed = 10

// RunningTor is what an instance's running tor enforces (its own GETINFO
// exit-policy/full, over its control socket or port) compared with the
// exit policy relayfw compiled for the instance.
type RunningTor struct {
	Instance string `json:"instance"`
	// Control is where tor was asked; "" when the torrc names nowhere.
	Control string `json:"control,omitempty"`
	Asked   bool   `json:"asked"`
	Matches bool   `json:"matches"`
	// Why tor was not asked (Asked false).
	Why        string `json:"why,omitempty"`
	TorVersion string `json:"tor_version,omitempty"`
	// OnlyTor and OnlyRelayfw are the first RunningTorListed entries only
	// one side has, in that side's order; the totals count them all.
	OnlyTor          []string `json:"only_tor"`
	OnlyRelayfw      []string `json:"only_relayfw"`
	OnlyTorTotal     int      `json:"only_tor_total"`
	OnlyRelayfwTotal int      `json:"only_relayfw_total"`
	// OrderDiffers: the same entries in another order (first match
	// decides, so another policy).
	OrderDiffers bool `json:"order_differs"`
	// Discovered are the relay's own addresses tor found at run time
	// that relayfw's model did not have (a NAT'd host's public address):
	// tor's reject of them is no difference.
	Discovered []netip.Addr `json:"discovered,omitempty"`
	// Advice says what to do about a difference.
	Advice string `json:"advice,omitempty"`
}

// Summary is the state in a few words: "matches (tor 0.4.9.11)",
// "differs: …; reload tor (…)", "not asked: why".
func (r RunningTor) Summary() string {
	switch {
	case !r.Asked:
		return "not asked: " + r.Why
	case r.Matches:
		return fmt.Sprintf("matches (tor %s at %s)", r.TorVersion, r.Control)
	}
	return "differs: " + r.Difference() + "; " + r.Advice
}

// Difference says how the policies differ, in counts.
func (r RunningTor) Difference() string {
	if r.OrderDiffers {
		return "the same entries in another order"
	}
	entries := "entries"
	if r.OnlyTorTotal == 1 {
		entries = "entry"
	}
	return fmt.Sprintf("%d %s only tor has, %d only relayfw has", r.OnlyTorTotal, entries, r.OnlyRelayfwTotal)
}

// AskRunningTor asks every instance's running tor for the exit policy it
// enforces, all at once, each within torcontrol.DefaultTimeout (or ctx's
// earlier deadline), and compares it with relayfw's. It never fails: an
// instance tor cannot be asked about says why.
func (in *Inputs) AskRunningTor(ctx context.Context) []RunningTor {
	out := make([]RunningTor, len(in.Instances))
	var wg sync.WaitGroup
	for i, t := range in.Instances {
		wg.Go(func() { out[i] = in.sys.askRunningTor(ctx, t) })
	}
	wg.Wait()
	return out
}

// AskTor asks t's running tor what it enforces, within torcontrol.Ask's
// deadline (torcontrol.DefaultTimeout, or ctx's earlier one).
func (s *System) AskTor(ctx context.Context, t *Instance) (torcontrol.Answer, torcontrol.Endpoint, error) {
	ep, why := t.ControlEndpoint()
	if why != "" {
		return torcontrol.Answer{}, ep, &NotAskedError{Why: why}
	}
	cookie := t.readCookie
	if !t.Options.CookieAuthentication {
		cookie = nil // tor offers NULL then, or a password relayfw does not know
	}
	a, err := torcontrol.Ask(ctx, ep, cookie)
	return a, ep, err
}

// NotAskedError: the torrc names no control socket or port relayfw can
// ask.
type NotAskedError struct{ Why string }

func (e *NotAskedError) Error() string { return e.Why }

func (s *System) askRunningTor(ctx context.Context, t *Instance) RunningTor {
	r := RunningTor{Instance: t.Name, OnlyTor: []string{}, OnlyRelayfw: []string{}}
	a, ep, err := s.AskTor(ctx, t)
	if ep.Address != "" {
		r.Control = ep.Address
	}
	if err != nil {
		r.Why = err.Error()
		return r
	}
	r.Asked, r.TorVersion = true, a.Version
	compareRunning(&r, t.Effective, t.Options.ExitPolicyRejectPrivate, a)
	if !r.Matches {
		r.Advice = t.reloadAdvice(a.Version)
	}
	return r
}

// ControlEndpoint is where t's tor takes controllers: its first
// ControlSocket, else its first ControlPort on loopback; why says why
// there is none.
func (t *Instance) ControlEndpoint() (ep torcontrol.Endpoint, why string) {
	o := t.Options
	if !t.IsRelay() {
		return ep, "a tor client, not a relay: it has no exit policy"
	}
	if len(o.ControlSockets) > 0 {
		// tor chowns its control sockets to its User.
		return torcontrol.Endpoint{Network: "unix", Address: o.ControlSockets[0], Owner: t.UID}, ""
	}
	var whyNot []string
	for _, p := range o.Ports {
		if p.Kind != "ControlPort" {
			continue
		}
		addr := p.Addr
		if !addr.IsValid() && p.Host == "" {
			addr = netip.MustParseAddr("127.0.0.1") // tor's default address for a ControlPort
		}
		switch {
		case p.Port == "auto":
			whyNot = append(whyNot, fmt.Sprintf("ControlPort %s is chosen when tor starts", p.Where.Value))
		case !addr.IsValid() || !addr.IsLoopback():
			whyNot = append(whyNot, fmt.Sprintf("ControlPort %s is not on loopback", p.Where.Value))
		default:
			return torcontrol.Endpoint{Network: "tcp", Address: netip.AddrPortFrom(addr, parsePort(p.Port)).String()}, ""
		}
	}
	if len(whyNot) > 0 {
		return ep, strings.Join(whyNot, "; ")
	}
	why = "the torrc has no ControlSocket or ControlPort"
	if o.ControlSocketOff {
		at := o.Origin["controlsocket"]
		why += fmt.Sprintf(" (\"ControlSocket 0\" at %s, as relayor's torrcs have it)", at.Where())
	}
	return ep, why
}

func parsePort(s string) uint16 {
	var p uint16
	_, _ = fmt.Sscan(s, &p)
	return p
}

// CookiePath is where t's tor writes its control cookie: CookieAuthFile,
// else DataDirectory/control_auth_cookie.
func (t *Instance) CookiePath() (string, error) {
	o := t.Options
	switch {
	case !o.CookieAuthentication:
		return "", fmt.Errorf("the torrc does not set CookieAuthentication 1 (relayfw authenticates with the cookie)")
	case o.CookieAuthFile != "":
		return o.CookieAuthFile, nil
	case o.DataDirectory != "":
		return filepath.Join(o.DataDirectory, "control_auth_cookie"), nil
	}
	return "", fmt.Errorf("the torrc sets neither CookieAuthFile nor DataDirectory: relayfw does not guess where tor keeps the cookie")
}

// readCookie reads t's cookie, which tor writes as t's User.
func (t *Instance) readCookie() ([]byte, error) {
	path, err := t.CookiePath()
	if err != nil {
		return nil, err
	}
	return torcontrol.ReadCookie(path, t.UID)
}

// reloadAdvice is what to do about a difference: reload tor, or, when the
// running tor is another release than relayfw's model, say so.
func (t *Instance) reloadAdvice(version string) string {
	if !strings.HasPrefix(version, ModelTorVersion+".") {
		return fmt.Sprintf("tor's version %s differs from relayfw's model (tor %s)", version, ModelTorVersion)
	}
	if t.defaultsName != "" || t.Name == "default" && strings.HasSuffix(t.Defaults, "tor-service-defaults-torrc") {
		return fmt.Sprintf("reload tor (systemctl reload tor@%s)", t.Name)
	}
	return "reload tor (SIGHUP)"
}

// compareRunning compares relayfw's policy (model) with the running
// tor's (a), modulo the addresses tor found itself: with
// ExitPolicyRejectPrivate (rejectPrivate) tor puts "reject ADDR:*" for each
// of the relay's own addresses ahead of the configured policy, and drops
// the later entries of exactly that address, which it covers
// (exit_policy_remove_redundancies). For an address tor reports, rejects
// so, and relayfw's model did not have, neither that reject nor relayfw's
// entries of that address count. Without ExitPolicyRejectPrivate tor
// rejects no address of its own: such a reject is a difference (a tor
// still running an older torrc).
//
// tor's side is whatever tor's user sends: the comparison holds maps of
// relayfw's entries only, and lists no more than RunningTorListed of
// tor's.
func compareRunning(r *RunningTor, model exitpolicy.Effective, rejectPrivate bool, a torcontrol.Answer) {
	ours := model.Policy.Lines()
	skip := map[string]bool{} // tor's rejects of addresses it found itself
	if rejectPrivate && !model.Policy.IsRejectStar() {
		var discovered []netip.Prefix
		for _, addr := range a.Addresses {
			own := netip.PrefixFrom(addr, addr.BitLen())
			reject := exitpolicy.Entry{Action: exitpolicy.Reject, Addr: addr, Bits: own.Bits(), PortMin: 1, PortMax: 65535}.String()
			// Only an address tor rejects as its own and relayfw did not
			// know.
			if slices.Contains(model.LocalAddrs, addr) || !slices.Contains(a.ExitPolicy, reject) {
				continue
			}
			r.Discovered = append(r.Discovered, addr)
			discovered = append(discovered, own)
			skip[reject] = true
		}
		if len(discovered) > 0 {
			ours = ours[:0:0]
			for _, e := range model.Policy.Entries {
				if !slices.Contains(discovered, e.Network()) {
					ours = append(ours, e.String())
				}
			}
		}
	}
	// Entries only tor has: each of tor's that none of relayfw's left
	// accounts for, in tor's order.
	left := make(map[string]int, len(ours)) // relayfw's entries not yet matched
	for _, l := range ours {
		left[l]++
	}
	same, n := true, 0 // the same entries in the same order so far; tor's counted
	for _, l := range a.ExitPolicy {
		if skip[l] {
			continue
		}
		same = same && n < len(ours) && ours[n] == l
		n++
		if left[l] > 0 {
			left[l]--
			continue
		}
		r.OnlyTor = listed(r.OnlyTor, &r.OnlyTorTotal, l)
	}
	if same && n == len(ours) {
		r.Matches = true
		return
	}
	// Entries only relayfw has: of each entry, the last ones tor's did not
	// match, in relayfw's order.
	matched := make(map[string]int, len(left))
	for _, l := range ours {
		matched[l]++
	}
	for l, k := range left {
		matched[l] -= k
	}
	for _, l := range ours {
		if matched[l] > 0 {
			matched[l]--
			continue
		}
		r.OnlyRelayfw = listed(r.OnlyRelayfw, &r.OnlyRelayfwTotal, l)
	}
	r.OrderDiffers = r.OnlyTorTotal == 0 && r.OnlyRelayfwTotal == 0
}

// listed counts entry in total and keeps it in list while the list has
// fewer than RunningTorListed: a difference is said by its first entries.
func listed(list []string, total *int, entry string) []string {
	*total++
	if len(list) < RunningTorListed {
		list = append(list, entry)
	}
	return list
}
