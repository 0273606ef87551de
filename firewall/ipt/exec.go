package ipt

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"

	"github.com/relayfw/relayfw/firewall"
)

// toolError is a failed run of iptables-save/-restore or ipset: what ran,
// how it ended and what it printed on stderr.
type toolError struct {
	command string
	err     error
	stderr  string
}

func (e *toolError) Error() string {
	return fmt.Sprintf("%s: %v: %s", e.command, e.err, e.stderr)
}

func (e *toolError) Unwrap() error { return e.err }

// runTool runs path with args, feeding it stdin when that is not empty, and
// returns its stdout. A refusal for lack of privilege (the wording differs
// between legacy, nft and ipset) wraps firewall.ErrNotPermitted under who,
// so the CLI says what to fix and exits 77; any other failure is a
// *toolError.
//
// The command ends with ctx: a canceled or timed-out operation kills it.
func runTool(ctx context.Context, who, stdin, path string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err == nil {
		return out, nil
	}
	msg := strings.TrimSpace(stderr.String())
	for _, refused := range []string{"Permission denied", "must be root", "Operation not permitted"} {
		if strings.Contains(msg, refused) {
			return nil, fmt.Errorf("%s: %w: %s", who, firewall.ErrNotPermitted, msg)
		}
	}
	return nil, &toolError{command: strings.Join(append([]string{path}, args...), " "), err: err, stderr: msg}
}
