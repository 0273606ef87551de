package torcontrol

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"syscall"
)

// CookieLen is the length of tor's control cookie.
const CookieLen = 32

// ReadCookie reads tor's control cookie at path: a regular file, not a
// symbolic link, of exactly CookieLen bytes, owned by owner when it is
// not nil (tor writes it as its User). tor's user can write the
// directory, so the checks are made on the opened file.
func ReadCookie(path string, owner *uint32) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("control cookie %s is a symbolic link", path)
		}
		return nil, fmt.Errorf("control cookie: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("control cookie: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("control cookie %s is not a regular file (%s)", path, fi.Mode().Type())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && owner != nil && st.Uid != *owner {
		return nil, fmt.Errorf("control cookie %s is owned by uid %d, not by tor's user (uid %d)", path, st.Uid, *owner)
	}
	data, err := io.ReadAll(io.LimitReader(f, CookieLen+1))
	if err != nil {
		return nil, fmt.Errorf("control cookie: %w", err)
	}
	if len(data) != CookieLen {
		return nil, fmt.Errorf("control cookie %s has %d bytes, not %d", path, len(data), CookieLen)
	}
	return data, nil
}

// Answer is what relayfw asks the running tor.
type Answer struct {
	// ExitPolicy is GETINFO exit-policy/full, one entry per line.
	ExitPolicy []string
	// Addresses are the relay's own addresses as tor found them (GETINFO
	// address/v4 and address/v6, or address on a tor without them),
	// IPv4 first; none when tor does not know one yet.
	Addresses []netip.Addr
	// Version is GETINFO version ("0.4.9.11").
	Version string
}

// maxPolicyLine bounds an exit-policy line: the longest entry tor
// writes ("reject6 [full IPv6]/128:65535-65535") is far shorter.
const maxPolicyLine = 100

// Ask connects to ep, authenticates (cookie reads the cookie when the
// method needs one; nil when the torrc sets no CookieAuthentication) and asks tor's exit policy, addresses and version,
// all within ctx's deadline (or DefaultTimeout).
func Ask(ctx context.Context, ep Endpoint, cookie func() ([]byte, error)) (Answer, error) {
	return ask(ctx, ep, cookie, MaxReply)
}

// ask is Ask with the exit policy's reply bounded by limit. The socket's
// deadline bounds what is read and written; what blocks in the kernel
// before (opening the socket's path, reading the cookie, on a filesystem
// of tor's user that does not answer) is abandoned at the deadline: the
// conversation ends on its own, or with the process.
func ask(ctx context.Context, ep Endpoint, cookie func() ([]byte, error), limit int64) (Answer, error) {
	ctx, cancel := context.WithTimeout(ctx, DefaultTimeout) // or ctx's earlier deadline
	defer cancel()
	type result struct {
		a   Answer
		err error
	}
	done := make(chan result, 1)
	go func() {
		a, err := converse(ctx, ep, cookie, limit)
		done <- result{a, err}
	}()
	select {
	case r := <-done:
		return r.a, r.err
	case <-ctx.Done():
	}
	select {
	case r := <-done: // the socket's own deadline, at the same moment
		return r.a, r.err
	default:
	}
	err := error(os.ErrDeadlineExceeded)
	if errors.Is(ctx.Err(), context.Canceled) {
		err = ctx.Err()
	}
	return Answer{}, fmt.Errorf("tor's control %s: no answer: %w", what(ep), err)
}

// converse is one conversation of ask.
func converse(ctx context.Context, ep Endpoint, cookie func() ([]byte, error), limit int64) (Answer, error) {
	c, err := Dial(ctx, ep)
	if err != nil {
		return Answer{}, err
	}
	defer c.Close()
	c.limit = limit
	pi, err := c.ProtocolInfo()
	if err != nil {
		return Answer{}, err
	}
	if err := c.Authenticate(pi, cookie); err != nil {
		return Answer{}, err
	}
	var a Answer
	if a.Version, err = c.GetShortInfo("version"); err != nil {
		return Answer{}, fmt.Errorf("GETINFO version: %w", err)
	}
	if err := checkText(a.Version, maxPolicyLine); err != nil {
		return Answer{}, fmt.Errorf("GETINFO version: %w", err)
	}
	policy, err := c.GetInfo("exit-policy/full")
	if err != nil {
		return Answer{}, fmt.Errorf("GETINFO exit-policy/full: %w", err)
	}
	if a.ExitPolicy, err = policyLines(policy); err != nil {
		return Answer{}, fmt.Errorf("GETINFO exit-policy/full: %w", err)
	}
	if a.Addresses, err = addresses(c); err != nil {
		return Answer{}, err
	}
	return a, nil
}

// policyLines splits and checks tor's exit policy: non-empty lines of
// printable ASCII, each at most maxPolicyLine bytes (whatever reaches an
// operator's terminal is plain text).
func policyLines(policy string) ([]string, error) {
	n := 0
	for rest := policy; ; n++ {
		line, after, more := strings.Cut(rest, "\n")
		if line == "" {
			return nil, fmt.Errorf("line %d is empty", n+1)
		}
		if err := checkText(line, maxPolicyLine); err != nil {
			return nil, fmt.Errorf("line %d: %w", n+1, err)
		}
		if !more {
			break
		}
		rest = after
	}
	return strings.Split(policy, "\n"), nil
}

// checkText accepts printable ASCII of at most max bytes.
func checkText(s string, max int) error {
	if len(s) > max {
		return syntaxErr("%s is longer than %d bytes", Quote(s), max)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return syntaxErr("%s is not printable ASCII", Quote(s))
		}
	}
	return nil
}

// addresses asks address/v4 and address/v6 ("551 Address unknown": none
// of that family), or address on a tor that knows neither key (552).
func addresses(c *Client) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, fam := range []struct {
		key string
		v4  bool
	}{{"address/v4", true}, {"address/v6", false}} {
		value, err := c.GetShortInfo(fam.key)
		var re *ReplyError
		switch {
		case errors.As(err, &re) && re.Code == 551:
			continue
		case errors.As(err, &re) && re.Code == 552 && fam.v4:
			return oneAddress(c)
		case err != nil:
			return nil, fmt.Errorf("GETINFO %s: %w", fam.key, err)
		}
		a, err := netip.ParseAddr(value)
		if err != nil || a.Is4() != fam.v4 || a.Is4In6() || a.Zone() != "" {
			return nil, fmt.Errorf("GETINFO %s: %w", fam.key, syntaxErr("%s is not an IPv%s address", Quote(value), map[bool]string{true: "4", false: "6"}[fam.v4]))
		}
		out = append(out, a)
	}
	return out, nil
}

func oneAddress(c *Client) ([]netip.Addr, error) {
	value, err := c.GetShortInfo("address")
	var re *ReplyError
	switch {
	case errors.As(err, &re) && re.Code == 551:
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("GETINFO address: %w", err)
	}
	a, err := netip.ParseAddr(value)
	if err != nil || a.Zone() != "" || a.Is4In6() {
		return nil, fmt.Errorf("GETINFO address: %w", syntaxErr("%s is not an IP address", Quote(value)))
	}
	return []netip.Addr{a}, nil
}
