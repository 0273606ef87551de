package host

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestInputsNeverBlock: a FIFO or a device where a torrc, an include or a
// resolv.conf was expected is refused at once (it would hang relayfw while
// it holds the lock, and keep a confirm window from rolling back); a
// symbolic link to a regular file is read.
func TestInputsNeverBlock(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	regular := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(regular, []byte("nameserver 192.0.2.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(regular, link); err != nil {
		t.Fatal(err)
	}
	urandom := filepath.Join(dir, "urandom")
	if err := os.Symlink("/dev/urandom", urandom); err != nil {
		t.Fatal(err)
	}
	sys := DefaultSystem()
	readers := map[string]func(string) error{
		"readTrusted":    func(p string) error { _, _, err := sys.readTrusted(p); return err },
		"readResolvers":  func(p string) error { _, err := readResolvers(p); return err },
		"readDirTrusted": func(p string) error { _, _, err := sys.readDirTrusted(p); return err },
	}
	for name, read := range readers {
		for _, p := range []string{fifo, urandom} {
			done := make(chan error, 1)
			go func() { done <- read(p) }()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), "not a regular file") {
					t.Errorf("%s(%s): %v, want a refusal", name, filepath.Base(p), err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s(%s) blocks", name, filepath.Base(p))
			}
		}
	}
	if addrs, err := readResolvers(link); err != nil || len(addrs) != 1 {
		t.Errorf("a symlinked resolv.conf: %v %v", addrs, err)
	}
	if _, _, err := sys.readTrusted(link); err != nil {
		t.Errorf("a symlinked torrc: %v", err)
	}
}
