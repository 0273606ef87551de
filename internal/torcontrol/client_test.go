package torcontrol

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/relayfw/relayfw/internal/torcontrol/torcontroltest"
)

func cookieOf(f *torcontroltest.Tor) func() ([]byte, error) {
	return func() ([]byte, error) { return f.Cookie, nil }
}

// serve serves f on a unix socket in a temporary directory.
func serve(t *testing.T, f *torcontroltest.Tor) Endpoint {
	path := filepath.Join(t.TempDir(), "control")
	f.ServeUnix(t, path)
	return Endpoint{Network: "unix", Address: path}
}

func TestAsk(t *testing.T) {
	tests := []struct {
		name  string
		setup func(f *torcontroltest.Tor)
		want  Answer
	}{
		{"safecookie", func(*torcontroltest.Tor) {},
			Answer{ExitPolicy: []string{"reject *:25", "reject6 *:*", "accept *:*"}, Addresses: []netip.Addr{netip.MustParseAddr("203.0.113.5")}, Version: "0.4.9.11"}},
		{"plain cookie on a unix socket", func(f *torcontroltest.Tor) { f.Methods = "COOKIE" },
			Answer{ExitPolicy: []string{"reject *:25", "reject6 *:*", "accept *:*"}, Addresses: []netip.Addr{netip.MustParseAddr("203.0.113.5")}, Version: "0.4.9.11"}},
		{"no authentication", func(f *torcontroltest.Tor) { f.Methods = "NULL" },
			Answer{ExitPolicy: []string{"reject *:25", "reject6 *:*", "accept *:*"}, Addresses: []netip.Addr{netip.MustParseAddr("203.0.113.5")}, Version: "0.4.9.11"}},
		{"both families, one-line policy", func(f *torcontroltest.Tor) { f.Policy, f.V6 = "reject *:*", "2001:db8::5" },
			Answer{ExitPolicy: []string{"reject *:*"}, Addresses: []netip.Addr{netip.MustParseAddr("203.0.113.5"), netip.MustParseAddr("2001:db8::5")}, Version: "0.4.9.11"}},
		{"no address known", func(f *torcontroltest.Tor) { f.V4 = "" },
			Answer{ExitPolicy: []string{"reject *:25", "reject6 *:*", "accept *:*"}, Version: "0.4.9.11"}},
		{"a tor without address/v4", func(f *torcontroltest.Tor) { f.NoV4Key = true },
			Answer{ExitPolicy: []string{"reject *:25", "reject6 *:*", "accept *:*"}, Addresses: []netip.Addr{netip.MustParseAddr("203.0.113.5")}, Version: "0.4.9.11"}},
		{"leading dots unescaped", func(f *torcontroltest.Tor) { f.Version = "0.4.8.1"; f.Policy = ".accept *:80\naccept *:443" },
			Answer{ExitPolicy: []string{".accept *:80", "accept *:443"}, Addresses: []netip.Addr{netip.MustParseAddr("203.0.113.5")}, Version: "0.4.8.1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := torcontroltest.New()
			tt.setup(f)
			cookie := cookieOf(f)
			if f.Methods == "NULL" {
				cookie = nil // the torrc sets no CookieAuthentication
			}
			got, err := Ask(context.Background(), serve(t, f), cookie)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
				t.Errorf("Ask (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAskRefuses(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(f *torcontroltest.Tor)
		cookie  []byte // nil: the fake's own
		want    string
		wantErr error
	}{
		{"wrong cookie, safecookie", func(*torcontroltest.Tor) {}, make([]byte, 32), "server hash is wrong", ErrServerHash},
		{"posing as tor", func(f *torcontroltest.Tor) { f.WrongServerHash = true }, nil, "server hash is wrong", ErrServerHash},
		{"wrong cookie, plain", func(f *torcontroltest.Tor) { f.Methods = "COOKIE" }, make([]byte, 32), "515", nil},
		{"password only", func(f *torcontroltest.Tor) { f.Methods = "HASHEDPASSWORD" }, nil, `wants "HASHEDPASSWORD"`, nil},
		{"not a server", func(f *torcontroltest.Tor) {
			f.Replies = map[string]string{"GETINFO exit-policy/full": "552 Not running in server mode\r\n"}
		}, nil, `552 "Not running in server mode"`, nil},
		{"descriptor not built", func(f *torcontroltest.Tor) { f.Policy = "" }, nil, "551", nil},
		{"garbage", func(f *torcontroltest.Tor) {
			f.Replies = map[string]string{"PROTOCOLINFO": "HTTP/1.1 400 Bad Request\r\n\r\n"}
		}, nil, "malformed control reply", nil},
		{"LF only", func(f *torcontroltest.Tor) {
			f.Replies = map[string]string{"GETINFO version": "250-version=0.4.9.11\n250 OK\n"}
		}, nil, "CRLF", nil},
		{"codes change", func(f *torcontroltest.Tor) {
			f.Replies = map[string]string{"GETINFO version": "250-version=0.4.9.11\r\n251 OK\r\n"}
		}, nil, "status code 251 within a reply of 250", nil},
		{"other key", func(f *torcontroltest.Tor) {
			f.Replies = map[string]string{"GETINFO version": "250-config-file=/etc/tor/torrc\r\n250 OK\r\n"}
		}, nil, "GETINFO version answered", nil},
		{"control characters", func(f *torcontroltest.Tor) { f.Policy = "accept *:80\naccept \x1b[31m*:443" }, nil, `"accept \x1b[31m*:443" is not printable ASCII`, nil},
		{"empty policy line", func(f *torcontroltest.Tor) { f.Policy = "accept *:80\n\naccept *:443" }, nil, "line 2 is empty", nil},
		{"not an address", func(f *torcontroltest.Tor) { f.V4 = "2001:db8::1" }, nil, "not an IPv4 address", nil},
		{"connection closed", func(f *torcontroltest.Tor) { f.Replies = map[string]string{"GETINFO version": "250-vers"} }, nil, "EOF", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := torcontroltest.New()
			tt.setup(f)
			cookie := cookieOf(f)
			if tt.cookie != nil {
				cookie = func() ([]byte, error) { return tt.cookie, nil }
			}
			ep := serve(t, f)
			_, err := Ask(context.Background(), ep, cookie)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Ask: %v; want an error with %q", err, tt.want)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Ask: %v; want %v", err, tt.wantErr)
			}
			if errors.Is(err, ErrServerHash) {
				// Close sends QUIT last: once the fake has read it, it
				// has read whatever was sent.
				for !slicesContains(f.Commands(), "QUIT") {
					time.Sleep(time.Millisecond)
				}
				for _, c := range f.Commands() {
					if strings.HasPrefix(c, "AUTHENTICATE") {
						t.Errorf("sent %q to a server that did not prove it knows the cookie", c)
					}
				}
			}
		})
	}
}

// TestAskDeadline: a control socket that never answers ends the
// conversation at the context's deadline.
func TestAskDeadline(t *testing.T) {
	f := torcontroltest.New()
	f.Hang = true
	ep := serve(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := Ask(ctx, ep, cookieOf(f))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Ask: %v; want the deadline exceeded", err)
	}
	// Canceled rather than timed out: the same.
	ctx, cancel = context.WithCancel(context.Background())
	c, err := Dial(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cancel()
	if _, err := c.ProtocolInfo(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ProtocolInfo after cancel: %v", err)
	}
}

// TestAskOversized: a reply over the limit (MaxReply; 1 MiB here, to
// keep the test quick) is refused; one just under it is read.
func TestAskOversized(t *testing.T) {
	const limit = 1 << 20
	f := torcontroltest.New()
	line := "accept 203.0.113.77:65535\n"
	f.Policy = strings.Repeat(line, limit/len(line)+1) + "reject *:*"
	_, err := ask(context.Background(), serve(t, f), cookieOf(f), limit)
	if !errors.Is(err, ErrReplyTooLarge) {
		t.Fatalf("Ask: %v; want %v", err, ErrReplyTooLarge)
	}
	f = torcontroltest.New()
	n := (limit - 100) / (len(line) + 1) // each line gains a CR
	f.Policy = strings.Repeat(line, n) + "reject *:*"
	a, err := ask(context.Background(), serve(t, f), cookieOf(f), limit)
	if err != nil || len(a.ExitPolicy) != n+1 {
		t.Fatalf("Ask: %d lines, %v; want %d", len(a.ExitPolicy), err, n+1)
	}
}

func TestDialRefuses(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "control")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ep   Endpoint
		want string
	}{
		{Endpoint{Network: "unix", Address: file}, "is not a socket"},
		{Endpoint{Network: "unix", Address: filepath.Join(dir, "missing")}, "no such file"},
		{Endpoint{Network: "tcp", Address: "192.0.2.1:9051"}, "not on loopback"},
		{Endpoint{Network: "tcp", Address: "localhost:9051"}, "not on loopback"},
	} {
		if _, err := Dial(context.Background(), tc.ep); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Dial(%v): %v; want %q", tc.ep, err, tc.want)
		}
	}
}

// TestPlainCookieNotOverTCP: on a TCP port any local user may listen, so
// the cookie goes only as SAFECOOKIE.
func TestPlainCookieNotOverTCP(t *testing.T) {
	for _, methods := range []string{"COOKIE", "COOKIE,SAFECOOKIE"} {
		f := torcontroltest.New()
		f.Methods = methods
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f.Serve(t, ln)
		_, err = Ask(context.Background(), Endpoint{Network: "tcp", Address: ln.Addr().String()}, cookieOf(f))
		switch {
		case methods == "COOKIE" && (err == nil || !strings.Contains(err.Error(), "only as SAFECOOKIE")):
			t.Errorf("%s over TCP: %v", methods, err)
		case methods != "COOKIE" && err != nil:
			t.Errorf("%s over TCP: %v", methods, err)
		}
		for _, c := range f.Commands() {
			if strings.HasPrefix(c, "AUTHENTICATE "+strings.ToLower(hexOf(f.Cookie))) {
				t.Errorf("%s: the cookie itself was sent over TCP", methods)
			}
		}
	}
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

func TestReadCookie(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, n int) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, make([]byte, n), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", 32)
	if err := os.Symlink(good, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	me := uint32(os.Geteuid())
	other := me + 1
	for _, tc := range []struct {
		path  string
		owner *uint32
		want  string // "": accepted
	}{
		{good, nil, ""},
		{good, &me, ""},
		{good, &other, "is owned by uid"},
		{write("short", 31), nil, "has 31 bytes"},
		{write("long", 4096), nil, "has 33 bytes"},
		{filepath.Join(dir, "link"), nil, "symbolic link"},
		{dir, nil, "not a regular file"},
		{filepath.Join(dir, "missing"), nil, "no such file"},
	} {
		_, err := ReadCookie(tc.path, tc.owner)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("ReadCookie(%s): %v; want %q", filepath.Base(tc.path), err, tc.want)
		}
	}
}

func TestReadReply(t *testing.T) {
	tests := []struct {
		in   string
		want Reply
		err  string
	}{
		{"250 OK\r\n", Reply{Code: 250, Lines: []ReplyLine{{Text: "OK"}}}, ""},
		{"250-a=b\r\n250+c=\r\nx\r\n..y\r\n\r\n.\r\n250 OK\r\n",
			Reply{Code: 250, Lines: []ReplyLine{{Text: "a=b"}, {Text: "c=", HasData: true, Data: "x\n.y\n"}, {Text: "OK"}}}, ""},
		{"250+c=\r\n.\r\n250 OK\r\n", Reply{Code: 250, Lines: []ReplyLine{{Text: "c=", HasData: true}, {Text: "OK"}}}, ""},
		{"552 Unrecognized key \"x\"\r\n", Reply{Code: 552, Lines: []ReplyLine{{Text: `Unrecognized key "x"`}}}, ""},
		{"250 OK\r\nextra", Reply{Code: 250, Lines: []ReplyLine{{Text: "OK"}}}, ""}, // the next reply's
		{"", Reply{}, "EOF"},
		{"250\r\n", Reply{}, "too short"},
		{"25x OK\r\n", Reply{}, "status code"},
		{"099 OK\r\n", Reply{}, "status code"},
		{"250*OK\r\n", Reply{}, `"*" after the status code`},
		{"250-OK\r\n", Reply{}, "EOF"},
		{"250+x=\r\nabc\r\n", Reply{}, "EOF"},
		{"250 OK\n", Reply{}, "CRLF"},
		{"250-a\r\n650 OK\r\n", Reply{}, "status code 650 within a reply of 250"},
		{strings.Repeat("250-a\r\n", MaxReplyLines+1) + "250 OK\r\n", Reply{}, "more than 1024 lines"},
	}
	for _, tt := range tests {
		got, err := ReadReply(bufioReader(tt.in), 1<<20)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ReadReply(%q): %v; want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ReadReply(%q): %v", tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ReadReply(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
	// The limit counts every byte of the reply, data included.
	in := "250+x=\r\n" + strings.Repeat("a", 100) + "\r\n.\r\n250 OK\r\n"
	if _, err := ReadReply(bufioReader(in), int64(len(in))); err != nil {
		t.Errorf("a reply of exactly the limit: %v", err)
	}
	if _, err := ReadReply(bufioReader(in), int64(len(in)-1)); !errors.Is(err, ErrReplyTooLarge) {
		t.Errorf("a reply one byte over the limit: %v", err)
	}
}

// BenchmarkAsk: one conversation with a tor whose exit policy has
// 100,000 entries (a few MB), over a unix socket.
func BenchmarkAsk(b *testing.B) {
	f := torcontroltest.New()
	var policy strings.Builder
	for i := range 100000 {
		fmt.Fprintf(&policy, "reject 10.%d.%d.0/24:*\n", i>>8&255, i&255)
	}
	policy.WriteString("accept *:*")
	f.Policy = policy.String()
	path := filepath.Join(b.TempDir(), "control")
	f.ServeUnix(b, path)
	b.SetBytes(int64(policy.Len()))
	for b.Loop() {
		a, err := Ask(context.Background(), Endpoint{Network: "unix", Address: path}, cookieOf(f))
		if err != nil || len(a.ExitPolicy) != 100001 {
			b.Fatalf("%d lines, %v", len(a.ExitPolicy), err)
		}
	}
}

// TestDialOnlyTorsSocket: tor's user writes the socket's directory and can
// put a symbolic link where the socket was, to another service's socket
// (root's, which it could not connect to itself), or a socket of its own
// under a path that leads elsewhere. relayfw connects to neither: not
// through a link, and not to a socket tor's user does not own; the other
// service reads nothing from relayfw.
func TestDialOnlyTorsSocket(t *testing.T) {
	dir := t.TempDir()
	other := torcontroltest.New()
	foreign := filepath.Join(dir, "root-only.sock")
	other.ServeUnix(t, foreign)
	link := filepath.Join(dir, "control")
	if err := os.Symlink(foreign, link); err != nil {
		t.Fatal(err)
	}
	me := uint32(os.Geteuid())
	torUser := me + 1
	for _, tc := range []struct {
		ep   Endpoint
		want string
	}{
		{Endpoint{Network: "unix", Address: link}, "is a symbolic link"},
		{Endpoint{Network: "unix", Address: link, Owner: &me}, "is a symbolic link"},
		{Endpoint{Network: "unix", Address: foreign, Owner: &torUser}, fmt.Sprintf("owned by uid %d, not by tor's user (uid %d)", me, torUser)},
	} {
		c, err := Dial(context.Background(), tc.ep)
		if err == nil {
			c.Close()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Dial(%s): %v; want %q", tc.ep.Address, err, tc.want)
		}
	}
	// The socket itself, owned by the user named, is tor's.
	c, err := Dial(context.Background(), Endpoint{Network: "unix", Address: foreign, Owner: &me})
	if err != nil {
		t.Fatalf("Dial of a socket owned by tor's user: %v", err)
	}
	if _, err := c.ProtocolInfo(); err != nil {
		t.Fatalf("ProtocolInfo: %v", err)
	}
	c.Close()
	for !slicesContains(other.Commands(), "QUIT") {
		time.Sleep(time.Millisecond)
	}
	if got := other.Commands(); !cmp.Equal(got, []string{"PROTOCOLINFO 1", "QUIT"}) {
		t.Errorf("the socket read %q; want only the one good conversation", got)
	}
}

// TestAskShortRepliesBounded: only the exit policy may be long; every
// other reply (PROTOCOLINFO, AUTHCHALLENGE, AUTHENTICATE, version,
// addresses) is held to ShortReply, so that each question does not cost
// MaxReply of memory.
func TestAskShortRepliesBounded(t *testing.T) {
	pad := "250-" + strings.Repeat("x", ShortReply) + "\r\n"
	for _, tc := range []struct{ key, reply string }{
		{"PROTOCOLINFO", pad + "250-AUTH METHODS=SAFECOOKIE\r\n250 OK\r\n"},
		{"GETINFO version", pad + "250-version=0.4.9.11\r\n250 OK\r\n"},
		{"GETINFO address/v4", pad + "250-address/v4=203.0.113.5\r\n250 OK\r\n"},
		{"GETINFO address/v6", pad + "250-address/v6=2001:db8::5\r\n250 OK\r\n"},
	} {
		f := torcontroltest.New()
		f.Replies = map[string]string{tc.key: tc.reply}
		if _, err := Ask(context.Background(), serve(t, f), cookieOf(f)); !errors.Is(err, ErrReplyTooLarge) {
			t.Errorf("%s answered with %d bytes: %v; want %v", tc.key, len(tc.reply), err, ErrReplyTooLarge)
		}
	}
}

// TestAskDeadlineOutsideTheSocket: what blocks in the kernel rather than
// on the socket — reading a cookie on a filesystem that never answers
// (tor's user can mount FUSE on its own directory where fusermount is
// installed) — ends the question at the deadline too.
func TestAskDeadlineOutsideTheSocket(t *testing.T) {
	f := torcontroltest.New()
	ep := serve(t, f)
	release := make(chan struct{})
	defer close(release)
	stuck := func() ([]byte, error) {
		<-release
		return nil, errors.New("released")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := Ask(ctx, ep, stuck); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Ask: %v; want the deadline exceeded", err)
	}
}

// TestNullOnlyWithoutCookie: a tor whose torrc sets CookieAuthentication
// offers COOKIE and SAFECOOKIE, never NULL. A control port that offers
// NULL where the torrc names a cookie is something else listening there
// (on a TCP port, any local user, while tor listens elsewhere or not at
// all): it is not believed. Without a cookie (cookie nil) NULL is tor's
// own offer.
func TestNullOnlyWithoutCookie(t *testing.T) {
	f := torcontroltest.New()
	f.Methods = "NULL"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.Serve(t, ln)
	ep := Endpoint{Network: "tcp", Address: ln.Addr().String()}
	if _, err := Ask(context.Background(), ep, cookieOf(f)); err == nil || !strings.Contains(err.Error(), "offers no authentication") {
		t.Errorf("NULL where the torrc sets a cookie: %v; want refused", err)
	}
	if _, err := Ask(context.Background(), ep, nil); err != nil {
		t.Errorf("NULL where the torrc sets none: %v", err)
	}
	f = torcontroltest.New()
	if _, err := Ask(context.Background(), serve(t, f), nil); err == nil || !strings.Contains(err.Error(), "CookieAuthentication") {
		t.Errorf("a cookie offered where the torrc sets none: %v", err)
	}
}
