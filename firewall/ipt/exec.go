package ipt

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"syscall"

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
// It also dies with relayfw (Pdeathsig): a relayfw killed halfway must not
// leave an iptables-restore or ipset running on its own, committing after
// the next relayfw has undone the interrupted apply (or keeping its sets
// busy so that the undo cannot destroy them).
func runTool(ctx context.Context, who, stdin, path string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// Pdeathsig follows the thread that started the child: this goroutine
	// stays on it until the child has ended.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
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
