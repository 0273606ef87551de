// Package torcontrol asks a running tor, over its control socket or port,
// what it enforces: the few commands of tor's control protocol
// (control-spec.txt) relayfw needs — PROTOCOLINFO, AUTHCHALLENGE and
// AUTHENTICATE with the cookie (SAFECOOKIE when tor offers it, plain
// COOKIE on a unix socket otherwise), GETINFO — written by hand.
//
// Why not a controller library (cretz/bine, the stem-like Go ports): they
// are built for long-lived controllers — events, circuits, onion services
// — with no bound on a reply's size, no deadline of their own, and
// dependencies relayfw would carry for a handful of lines. The socket is
// written by tor's user, so everything read from it is untrusted: every
// exchange runs under one deadline, a reply is read within a size limit
// and parsed strictly (ReadReply), and relayfw proves nothing to the
// other side until it has proved it knows the cookie (SAFECOOKIE's server
// hash), so a process posing as tor learns neither the cookie nor any
// other file relayfw can read.
package torcontrol

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Limits of one conversation with tor.
const (
	// DefaultTimeout bounds a whole conversation (connect, authenticate,
	// every question) when the context sets no earlier deadline.
	DefaultTimeout = 4 * time.Second
	// MaxReply bounds the exit policy's reply: a 100,000-entry policy is
	// 2.5 to 6 MB (IPv6 entries are the longest lines); reading and
	// splitting a reply costs several times its size in memory, which a
	// hostile tor user chooses.
	MaxReply = 16 << 20
	// ShortReply bounds every other reply: a few lines.
	ShortReply = 64 << 10
)

// Endpoint is where tor's controllers connect: a unix socket (Network
// "unix", Address its path) or a TCP port on loopback ("tcp",
// "127.0.0.1:9051").
type Endpoint struct {
	Network string
	Address string
	// Owner is tor's user (its User option): a unix socket owned by
	// another uid is not tor's (tor chowns its control sockets to User).
	// nil: tor runs as root, there is no other user to tell apart.
	Owner *uint32
}

func (e Endpoint) String() string { return e.Address }

// ReplyError is a reply with an error status (4xx, 5xx), such as
// "552 Unrecognized key" or "515 Authentication failed".
type ReplyError struct {
	Code int
	Text string
}

func (e *ReplyError) Error() string { return fmt.Sprintf("tor replied %d %s", e.Code, Quote(e.Text)) }

// Client is one authenticated conversation with tor.
type Client struct {
	conn net.Conn
	r    *bufio.Reader
	ep   Endpoint
	stop func() bool
	// limit bounds a GetInfo reply (MaxReply); every other is held to
	// ShortReply.
	limit int64
}

// Dial connects to ep, with ctx's deadline (or DefaultTimeout) over the
// whole conversation; canceling ctx ends it. A unix socket path that is
// not a socket of ep.Owner (a symbolic link included) is refused before
// connecting (socketPath); a TCP endpoint must be on loopback.
func Dial(ctx context.Context, ep Endpoint) (*Client, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(DefaultTimeout)
	}
	address := ep.Address
	switch ep.Network {
	case "unix":
		path, closePath, err := socketPath(ep)
		if err != nil {
			return nil, err
		}
		defer closePath()
		address = path
	case "tcp":
		host, _, err := net.SplitHostPort(ep.Address)
		if err != nil {
			return nil, fmt.Errorf("control port %s: %w", ep.Address, err)
		}
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("control port %s is not on loopback", ep.Address)
		}
	default:
		return nil, fmt.Errorf("control endpoint %s: network %q", ep.Address, ep.Network)
	}
	d := net.Dialer{Deadline: deadline}
	conn, err := d.DialContext(ctx, ep.Network, address)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) {
			err = oe.Err // without the /proc/self/fd path
		}
		return nil, fmt.Errorf("connecting to tor's control %s: %w", what(ep), err)
	}
	if err := conn.SetDeadline(deadline); err != nil {
		conn.Close()
		return nil, err
	}
	c := &Client{conn: conn, r: bufio.NewReaderSize(conn, 64<<10), ep: ep, limit: MaxReply}
	c.stop = context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	return c, nil
}

// socketPath opens ep's unix socket without following a symbolic link
// in its last component (O_PATH), checks that it is a socket owned by
// ep.Owner, and returns a path to that very inode (/proc/self/fd/N, as
// systemd connects to sockets): tor's user writes the socket's directory,
// and a link or a swap between the check and the connect would otherwise
// send relayfw, as root, to another service's socket. closePath closes
// the descriptor once connected.
func socketPath(ep Endpoint) (path string, closePath func(), err error) {
	fd, err := unix.Open(ep.Address, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, fmt.Errorf("control socket %s: %w", ep.Address, &fs.PathError{Op: "open", Path: ep.Address, Err: err})
	}
	closePath = func() { _ = unix.Close(fd) }
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		closePath()
		return "", nil, fmt.Errorf("control socket %s: %w", ep.Address, err)
	}
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		err = fmt.Errorf("control socket %s is a symbolic link: relayfw connects only to the socket itself", ep.Address)
	case st.Mode&unix.S_IFMT != unix.S_IFSOCK:
		err = fmt.Errorf("control socket %s is not a socket (%s)", ep.Address, fileType(st.Mode))
	case ep.Owner != nil && st.Uid != *ep.Owner:
		err = fmt.Errorf("control socket %s is owned by uid %d, not by tor's user (uid %d): not tor's", ep.Address, st.Uid, *ep.Owner)
	}
	if err != nil {
		closePath()
		return "", nil, err
	}
	return fmt.Sprintf("/proc/self/fd/%d", fd), closePath, nil
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "a device"
	}
	return fmt.Sprintf("file type %#o", mode&unix.S_IFMT)
}

func what(ep Endpoint) string {
	if ep.Network == "unix" {
		return "socket " + ep.Address
	}
	return "port " + ep.Address
}

// Close ends the conversation (QUIT, not waited for).
func (c *Client) Close() error {
	c.stop()
	_, _ = c.conn.Write([]byte("QUIT\r\n"))
	return c.conn.Close()
}

// command sends one command line and reads its reply, of at most limit
// bytes; an error status is a *ReplyError.
func (c *Client) command(line string, limit int64) (Reply, error) {
	if _, err := c.conn.Write([]byte(line + "\r\n")); err != nil {
		return Reply{}, fmt.Errorf("tor's control %s: %w", what(c.ep), err)
	}
	rep, err := ReadReply(c.r, limit)
	if err != nil {
		return Reply{}, fmt.Errorf("tor's control %s: %w", what(c.ep), err)
	}
	if rep.Code >= 400 {
		return rep, &ReplyError{Code: rep.Code, Text: rep.Lines[len(rep.Lines)-1].Text}
	}
	if rep.Code != 250 {
		return rep, fmt.Errorf("tor's control %s: %w", what(c.ep), syntaxErr("status %d where 250 was due", rep.Code))
	}
	return rep, nil
}

// ProtocolInfo is what PROTOCOLINFO says: the authentication methods tor
// accepts (COOKIE, SAFECOOKIE, HASHEDPASSWORD, NULL) and the cookie file
// it names. relayfw never reads the file tor names (a process posing as
// tor could name any file): the cookie's path comes from the torrc.
type ProtocolInfo struct {
	Methods    []string
	CookieFile string
}

// ProtocolInfo asks PROTOCOLINFO 1.
func (c *Client) ProtocolInfo() (ProtocolInfo, error) {
	rep, err := c.command("PROTOCOLINFO 1", ShortReply)
	if err != nil {
		return ProtocolInfo{}, err
	}
	var pi ProtocolInfo
	seenAuth := false
	for _, l := range rep.Lines {
		rest, ok := strings.CutPrefix(l.Text, "AUTH ")
		if !ok {
			continue // PROTOCOLINFO 1, VERSION, OK, and lines of later versions
		}
		if seenAuth {
			return ProtocolInfo{}, syntaxErr("PROTOCOLINFO has two AUTH lines")
		}
		seenAuth = true
		methods, rest, _ := strings.Cut(rest, " ")
		m, ok := strings.CutPrefix(methods, "METHODS=")
		if !ok || m == "" {
			return ProtocolInfo{}, syntaxErr("PROTOCOLINFO AUTH line %s", Quote(l.Text))
		}
		pi.Methods = strings.Split(m, ",")
		if f, ok := strings.CutPrefix(rest, "COOKIEFILE="); ok {
			pi.CookieFile = f
		}
	}
	if !seenAuth {
		return ProtocolInfo{}, syntaxErr("PROTOCOLINFO without an AUTH line")
	}
	return pi, nil
}

// The keys of SAFECOOKIE's HMACs (control-spec 3.24).
const (
	serverHashKey = "Tor safe cookie authentication server-to-controller hash"
	clientHashKey = "Tor safe cookie authentication controller-to-server hash"
)

// ErrServerHash is a SAFECOOKIE challenge whose server hash does not
// prove knowledge of the cookie: not the tor that wrote it.
var ErrServerHash = errors.New("the control socket's SAFECOOKIE server hash is wrong: it does not know the cookie (another tor's cookie, or not tor)")

// Authenticate authenticates with the methods pi offers: NULL (no
// secret), else SAFECOOKIE, else COOKIE — plain COOKIE only on a unix
// socket, where the socket's directory is tor's: on a TCP port any local
// user could be listening. cookie reads the cookie when one is needed;
// nil says the torrc sets no CookieAuthentication. A tor that writes a
// cookie never offers NULL (protocolinfo offers it only without cookie or
// password): a server that does where the torrc names a cookie is not
// that tor, and is not believed.
func (c *Client) Authenticate(pi ProtocolInfo, cookie func() ([]byte, error)) error {
	switch {
	case slices.Contains(pi.Methods, "NULL") && cookie != nil:
		return fmt.Errorf("tor's control %s offers no authentication, though the torrc sets CookieAuthentication 1: not the tor of this torrc (another process listening there?)", what(c.ep))
	case slices.Contains(pi.Methods, "NULL"):
		_, err := c.command("AUTHENTICATE", ShortReply)
		return authErr(err)
	case cookie == nil && slices.ContainsFunc(pi.Methods, func(m string) bool { return m == "SAFECOOKIE" || m == "COOKIE" }):
		return fmt.Errorf("tor's control %s wants the cookie, but the torrc does not set CookieAuthentication 1 (relayfw authenticates with the cookie)", what(c.ep))
	case slices.Contains(pi.Methods, "SAFECOOKIE"):
		secret, err := cookie()
		if err != nil {
			return err
		}
		return c.safeCookie(secret)
	case slices.Contains(pi.Methods, "COOKIE") && c.ep.Network == "unix":
		secret, err := cookie()
		if err != nil {
			return err
		}
		_, err = c.command("AUTHENTICATE "+hex.EncodeToString(secret), ShortReply)
		return authErr(err)
	case slices.Contains(pi.Methods, "COOKIE"):
		return fmt.Errorf("tor's control port %s offers plain COOKIE but not SAFECOOKIE; relayfw sends a cookie over TCP only as SAFECOOKIE", c.ep.Address)
	}
	return fmt.Errorf("tor's control %s wants %s; relayfw authenticates with the cookie (CookieAuthentication 1)", what(c.ep), Quote(strings.Join(pi.Methods, ",")))
}

func authErr(err error) error {
	if err != nil {
		return fmt.Errorf("authentication: %w", err)
	}
	return nil
}

// safeCookie is SAFECOOKIE: the server proves it knows the cookie first.
func (c *Client) safeCookie(secret []byte) error {
	clientNonce := make([]byte, 32)
	if _, err := rand.Read(clientNonce); err != nil {
		return err
	}
	rep, err := c.command("AUTHCHALLENGE SAFECOOKIE "+hex.EncodeToString(clientNonce), ShortReply)
	if err != nil {
		return authErr(err)
	}
	serverHash, serverNonce, err := parseChallenge(rep)
	if err != nil {
		return err
	}
	msg := slices.Concat(secret, clientNonce, serverNonce)
	if !hmac.Equal(serverHash, mac(serverHashKey, msg)) {
		return ErrServerHash
	}
	_, err = c.command("AUTHENTICATE "+hex.EncodeToString(mac(clientHashKey, msg)), ShortReply)
	return authErr(err)
}

func mac(key string, msg []byte) []byte {
	h := hmac.New(sha256.New, []byte(key))
	h.Write(msg)
	return h.Sum(nil)
}

// parseChallenge reads "250 AUTHCHALLENGE SERVERHASH=<64 hex>
// SERVERNONCE=<64 hex>".
func parseChallenge(rep Reply) (serverHash, serverNonce []byte, err error) {
	bad := syntaxErr("AUTHCHALLENGE reply %s", Quote(rep.Lines[len(rep.Lines)-1].Text))
	if len(rep.Lines) != 1 {
		return nil, nil, bad
	}
	f := strings.Split(rep.Lines[0].Text, " ")
	if len(f) != 3 || f[0] != "AUTHCHALLENGE" {
		return nil, nil, bad
	}
	h, ok1 := strings.CutPrefix(f[1], "SERVERHASH=")
	n, ok2 := strings.CutPrefix(f[2], "SERVERNONCE=")
	if !ok1 || !ok2 || len(h) != 64 || len(n) != 64 {
		return nil, nil, bad
	}
	if serverHash, err = hex.DecodeString(h); err != nil {
		return nil, nil, bad
	}
	if serverNonce, err = hex.DecodeString(n); err != nil {
		return nil, nil, bad
	}
	return serverHash, serverNonce, nil
}

// GetInfo asks GETINFO key and returns its value: the "key=value" line, or
// the data block of "key=" on a "250+" line; the reply may take MaxReply
// bytes (GetShortInfo: ShortReply).
func (c *Client) GetInfo(key string) (string, error) { return c.getInfo(key, c.limit) }

// GetShortInfo is GetInfo of a key whose value is short (version,
// address/v4): its reply is held to ShortReply bytes.
func (c *Client) GetShortInfo(key string) (string, error) { return c.getInfo(key, ShortReply) }

func (c *Client) getInfo(key string, limit int64) (string, error) {
	if key == "" || strings.ContainsAny(key, " \r\n") {
		return "", fmt.Errorf("GETINFO key %q", key)
	}
	rep, err := c.command("GETINFO "+key, limit)
	if err != nil {
		return "", err
	}
	if len(rep.Lines) != 2 || rep.Lines[1].Text != "OK" || rep.Lines[1].HasData {
		return "", syntaxErr("GETINFO %s: %d lines, ending %s", key, len(rep.Lines), Quote(rep.Lines[len(rep.Lines)-1].Text))
	}
	l := rep.Lines[0]
	value, ok := strings.CutPrefix(l.Text, key+"=")
	switch {
	case !ok:
		return "", syntaxErr("GETINFO %s answered %s", key, Quote(l.Text))
	case l.HasData && value != "":
		return "", syntaxErr("GETINFO %s: text after %q on a data line", key, key+"=")
	case l.HasData:
		return l.Data, nil
	}
	return value, nil
}
