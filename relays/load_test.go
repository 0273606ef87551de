package relays

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
)

// loader loads firewall text with the real tools, each run in a network
// namespace of its own that ends with it: nothing is left behind, and the
// host's firewall is never touched. why says why it cannot ("" when it
// can): it needs root and nft and ipset.
//
// Loading costs two processes, some 20 ms: too slow for the fuzzing engine,
// which minimizes every new input one mutation at a time. A text is the
// same table and chains whatever the consensus, and set elements, each a
// line of its own that nft and ipset take or refuse alone: so a text whose
// links have all been loaded before (in this process) loads, and is not
// loaded again.
type loader struct {
	nft, ipset string
	why        string

	mu   sync.Mutex
	seen map[netip.AddrPort]bool // links that were in a text that loaded
}

// loaded says whether every link was in a text that loaded.
func (l *loader) loaded(links []netip.AddrPort) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		return false // not even the table without links yet
	}
	for _, ap := range links {
		if !l.seen[ap] {
			return false
		}
	}
	return true
}

// remember notes the links of a text that loaded.
func (l *loader) remember(links []netip.AddrPort) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = map[netip.AddrPort]bool{}
	}
	for _, ap := range links {
		l.seen[ap] = true
	}
}

func newLoader() *loader {
	l := &loader{}
	if os.Geteuid() != 0 {
		l.why = "not root: no network namespace to load it in"
		return l
	}
	var err error
	if l.nft, err = exec.LookPath("nft"); err != nil {
		l.why = err.Error()
		return l
	}
	if l.ipset, err = exec.LookPath("ipset"); err != nil {
		l.why = err.Error()
		return l
	}
	// The tools work here: a namespace, nf_tables and ip_set are there.
	if err := l.nftCheck("table inet probe {\n}\n"); err != nil {
		l.why = err.Error()
	} else if err := l.ipsetRestore("create probe hash:ip,port family inet\n"); err != nil {
		l.why = err.Error()
	}
	return l
}

// run runs a tool with text on stdin in a new network namespace.
func (l *loader) run(path string, text string, args ...string) error {
	cmd := exec.Command(path, args...)
	cmd.Stdin = strings.NewReader(text)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %v: %s\ninput:\n%s", path, strings.Join(args, " "), err, out.String(), text)
	}
	return nil
}

// nftCheck runs nft -c -f - (parse and check in the kernel, commit nothing);
// nil without the tools.
func (l *loader) nftCheck(text string) error {
	if l.nft == "" {
		return nil
	}
	return l.run(l.nft, text, "-c", "-f", "-")
}

// ipsetRestore runs ipset restore; nil without the tools.
func (l *loader) ipsetRestore(text string) error {
	if l.ipset == "" {
		return nil
	}
	return l.run(l.ipset, text, "restore")
}
