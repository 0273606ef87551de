package ipt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/coreos/go-iptables/iptables"

	"github.com/relayfw/relayfw/firewall"
	"github.com/relayfw/relayfw/rules"
)

// Backend installs the ruleset with iptables and ip6tables.
type Backend struct {
	families []*family
	mode     string // "legacy" or "nf_tables"
}

var _ firewall.Backend = (*Backend)(nil)

// family is one of iptables and ip6tables.
type family struct {
	v6      bool
	ipt     *iptables.IPTables
	restore string // path of (ip6)iptables-restore
}

func (f *family) name() string {
	if f.v6 {
		return "ip6tables"
	}
	return "iptables"
}

// New finds iptables, ip6tables and their restore commands on PATH. IPv6
// is left out, with an error only if IPv4 is missing too, when the host
// has no ip6tables.
func New() (*Backend, error) {
	b := &Backend{}
	for _, v6 := range []bool{false, true} {
		proto, tool := iptables.ProtocolIPv4, "iptables-restore"
		if v6 {
			proto, tool = iptables.ProtocolIPv6, "ip6tables-restore"
		}
		ipt, err := iptables.New(iptables.IPFamily(proto))
		if err != nil {
			if v6 && len(b.families) > 0 {
				continue
			}
			return nil, fmt.Errorf("iptables: %w: %v", firewall.ErrUnavailable, err)
		}
		restore, err := exec.LookPath(tool)
		if err != nil {
			return nil, fmt.Errorf("iptables: %w: %s not found", firewall.ErrUnavailable, tool)
		}
		b.families = append(b.families, &family{v6: v6, ipt: ipt, restore: restore})
	}
	b.mode = iptablesMode()
	return b, nil
}

// iptablesMode reads "(legacy)" or "(nf_tables)" from iptables -V.
func iptablesMode() string {
	out, err := exec.Command("iptables", "-V").Output()
	if err != nil {
		return "unknown"
	}
	s := string(out)
	if i := strings.LastIndexByte(s, '('); i >= 0 {
		if j := strings.IndexByte(s[i:], ')'); j > 0 {
			return s[i+1 : i+j]
		}
	}
	return "unknown"
}

// Name says which iptables this is, e.g. "iptables (legacy)".
func (b *Backend) Name() string { return "iptables (" + b.mode + ")" }

// Render is the iptables-restore input for both families.
func (b *Backend) Render(rs rules.Ruleset) (string, error) {
	var out strings.Builder
	for _, f := range b.families {
		text, err := Render(rs, f.v6)
		if err != nil {
			return "", err
		}
		out.WriteString(text)
	}
	return out.String(), nil
}

// classify maps iptables failures to the firewall sentinels.
func classify(err error) error {
	var ie *iptables.Error
	if errors.As(err, &ie) {
		msg := ie.Error()
		if strings.Contains(msg, "Permission denied") || strings.Contains(msg, "must be root") || ie.ExitStatus() == 4 && strings.Contains(msg, "denied") {
			return fmt.Errorf("%w: %s", firewall.ErrNotPermitted, strings.TrimSpace(msg))
		}
	}
	return err
}

// Available lists OUTPUT in each family.
func (b *Backend) Available(context.Context) error {
	for _, f := range b.families {
		if _, err := f.ipt.List("filter", "OUTPUT"); err != nil {
			return fmt.Errorf("%s: %w", f.name(), classify(err))
		}
	}
	return nil
}

// state is what a family has installed.
type state struct {
	chainExists bool
	chain       []string // -A lines of RELAYFW-OUTPUT
	jumps       []int    // positions (0-based) of the jump among OUTPUT's rules
}

func (f *family) read() (state, error) {
	var st state
	exists, err := f.ipt.ChainExists("filter", Chain)
	if err != nil {
		return st, fmt.Errorf("%s: %w", f.name(), classify(err))
	}
	st.chainExists = exists
	if exists {
		lines, err := f.ipt.List("filter", Chain)
		if err != nil {
			return st, fmt.Errorf("%s: %w", f.name(), classify(err))
		}
		for _, l := range lines {
			if strings.HasPrefix(l, "-A ") {
				st.chain = append(st.chain, l)
			}
		}
	}
	out, err := f.ipt.List("filter", "OUTPUT")
	if err != nil {
		return st, fmt.Errorf("%s: %w", f.name(), classify(err))
	}
	pos := 0
	for _, l := range out {
		if !strings.HasPrefix(l, "-A ") {
			continue
		}
		if l == jumpRule {
			st.jumps = append(st.jumps, pos)
		}
		pos++
	}
	return st, nil
}

// drift describes how the family's state differs from want.
func (f *family) drift(st state, want []string) []string {
	var d []string
	if !st.chainExists {
		d = append(d, fmt.Sprintf("%s: chain %s is not installed", f.name(), Chain))
	} else {
		for _, e := range firewall.LineDiff(want, st.chain) {
			d = append(d, fmt.Sprintf("%s: %s", f.name(), e))
		}
	}
	switch {
	case len(st.jumps) == 0:
		d = append(d, fmt.Sprintf("%s: OUTPUT does not jump to %s", f.name(), Chain))
	case len(st.jumps) > 1:
		d = append(d, fmt.Sprintf("%s: OUTPUT jumps to %s %d times", f.name(), Chain, len(st.jumps)))
	case st.jumps[0] != 0:
		d = append(d, fmt.Sprintf("%s: the jump to %s is rule %d of OUTPUT, not the first", f.name(), Chain, st.jumps[0]+1))
	}
	return d
}

// restore runs (ip6)iptables-restore --noflush with the script.
func (f *family) runRestore(script string) error {
	cmd := exec.Command(f.restore, "--noflush", "--wait")
	cmd.Stdin = strings.NewReader(script)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if strings.Contains(msg, "Permission denied") {
			return fmt.Errorf("%s: %w: %s", f.name(), firewall.ErrNotPermitted, msg)
		}
		return fmt.Errorf("%s --noflush: %v: %s", f.restore, err, msg)
	}
	return nil
}

// Apply writes each family's chain (and the jump) in one iptables-restore
// transaction, skipping families already in sync.
func (b *Backend) Apply(_ context.Context, rs rules.Ruleset) (firewall.Result, error) {
	var res firewall.Result
	type job struct {
		f      *family
		script string
	}
	var jobs []job
	for _, f := range b.families {
		want, err := Lines(rs, f.v6)
		if err != nil {
			return res, err
		}
		res.Rules += len(want)
		st, err := f.read()
		if err != nil {
			return res, err
		}
		if len(f.drift(st, want)) > 0 {
			jobs = append(jobs, job{f, restoreScript(want, len(st.jumps))})
		}
	}
	for _, j := range jobs {
		if err := j.f.runRestore(j.script); err != nil {
			return res, err
		}
		res.Changed = true
	}
	return res, nil
}

// Check reports the differences of every family.
func (b *Backend) Check(_ context.Context, rs rules.Ruleset) ([]string, error) {
	var drift []string
	for _, f := range b.families {
		want, err := Lines(rs, f.v6)
		if err != nil {
			return nil, err
		}
		st, err := f.read()
		if err != nil {
			return nil, err
		}
		drift = append(drift, f.drift(st, want)...)
	}
	return drift, nil
}

// Remove deletes the jumps and the chain of each family, in one
// transaction per family, and nothing else.
func (b *Backend) Remove(context.Context) (bool, error) {
	removed := false
	for _, f := range b.families {
		st, err := f.read()
		if err != nil {
			return removed, err
		}
		if !st.chainExists && len(st.jumps) == 0 {
			continue
		}
		var s strings.Builder
		s.WriteString("*filter\n")
		for range st.jumps {
			fmt.Fprintf(&s, "-D OUTPUT -j %s\n", Chain)
		}
		if st.chainExists {
			fmt.Fprintf(&s, "-F %s\n-X %s\n", Chain, Chain)
		}
		s.WriteString("COMMIT\n")
		if err := f.runRestore(s.String()); err != nil {
			return removed, err
		}
		removed = true
	}
	return removed, nil
}
