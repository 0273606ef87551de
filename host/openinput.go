package host

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"

	"github.com/relayfw/relayfw/relays"
)

// maxInputBytes caps what relayfw reads of a torrc, an %include, a
// defaults file, relayfw.toml or a resolv.conf: the largest block-list
// torrcs relayfw supports are a few MiB.
const maxInputBytes = 64 << 20

// openInput opens an input file without blocking, so that a FIFO or a
// device put where a file was expected (by whoever can write its
// directory: systemd-resolved's for resolv.conf) is refused at once
// instead of hanging relayfw while it holds the lock, which would keep a
// confirm window from ever rolling back. Symbolic links are followed
// (/etc/resolv.conf usually is one); what they end at must be a regular
// file, or a directory when dirOK. O_NONBLOCK changes nothing for the read
// of a regular file.
func openInput(path string, dirOK bool) (*os.File, fs.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() && !(dirOK && fi.IsDir()) {
		f.Close()
		return nil, nil, &fs.PathError{Op: "open", Path: path, Err: fmt.Errorf("not a regular file (%s)", relays.FileKind(fi.Mode()))}
	}
	return f, fi, nil
}

// readInput reads an input file opened with openInput, up to
// maxInputBytes.
func readInput(f *os.File) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(f, maxInputBytes+1))
	if err == nil && len(data) > maxInputBytes {
		err = &fs.PathError{Op: "read", Path: f.Name(), Err: fmt.Errorf("larger than %d MiB", maxInputBytes>>20)}
	}
	return data, err
}
