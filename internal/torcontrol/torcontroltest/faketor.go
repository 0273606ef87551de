// Package torcontroltest is an in-process tor control server for tests:
// it answers PROTOCOLINFO, AUTHCHALLENGE, AUTHENTICATE (cookie,
// SAFECOOKIE, NULL) and GETINFO as tor 0.4.9 does, or misbehaves as a
// test asks.
package torcontroltest

import (
	"bufio"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
)

// Tor is a control server. Set its fields before it serves; Set changes
// them while it serves.
type Tor struct {
	Cookie  []byte
	Methods string // PROTOCOLINFO's METHODS
	Policy  string // exit-policy/full; "" answers 551 as a tor still building its descriptor
	V4, V6  string // address/v4, address/v6; "" answers 551
	NoV4Key bool   // answer 552 to address/v4 and address/v6, as a tor before them
	Version string
	// Replies replaces the answer to a command (its first word, or
	// "GETINFO key") with raw bytes; one not ended by a newline ends the
	// connection after it.
	Replies map[string]string
	// Hang: read commands, never answer.
	Hang bool
	// WrongServerHash: answer AUTHCHALLENGE with a hash of another cookie.
	WrongServerHash bool

	mu       sync.Mutex
	received []string // every command line read
}

// New is a tor 0.4.9.11 with a random cookie, COOKIE and SAFECOOKIE, the
// address 203.0.113.5 and a short exit policy.
func New() *Tor {
	cookie := make([]byte, 32)
	_, _ = rand.Read(cookie)
	return &Tor{Cookie: cookie, Methods: "COOKIE,SAFECOOKIE", Version: "0.4.9.11",
		Policy: "reject *:25\nreject6 *:*\naccept *:*", V4: "203.0.113.5"}
}

// Set changes the server's answers under its lock.
func (f *Tor) Set(change func(f *Tor)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f)
}

// ServeUnix listens on a unix socket at path; the listener closes with
// the test.
func (f *Tor) ServeUnix(t testing.TB, path string) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	f.Serve(t, ln)
}

// WriteCookie writes the cookie to path (mode 0600).
func (f *Tor) WriteCookie(t testing.TB, path string) {
	t.Helper()
	if err := os.WriteFile(path, f.Cookie, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Serve answers every connection ln accepts; ln closes with the test.
func (f *Tor) Serve(t testing.TB, ln net.Listener) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				f.converse(conn)
			}()
		}
	}()
}

// Commands are the command lines read so far, on every connection.
func (f *Tor) Commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.received...)
}

func (f *Tor) converse(conn net.Conn) {
	r := bufio.NewReader(conn)
	var st conversation
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimSuffix(line, "\r\n")
		f.mu.Lock()
		f.received = append(f.received, line)
		out, ok := f.answer(line, &st)
		f.mu.Unlock()
		if !ok {
			continue // hanging
		}
		// tor closes the connection after a failed authentication and
		// QUIT; a reply cut short ends it too.
		if _, err := conn.Write([]byte(out)); err != nil || !strings.HasSuffix(out, "\n") ||
			strings.HasPrefix(out, "51") || strings.HasPrefix(out, "250 closing") {
			return
		}
	}
}

// conversation is one connection's state.
type conversation struct {
	clientNonce, serverNonce []byte
	authed                   bool
}

// answer is the reply to one command line; ok false: none (hanging).
func (f *Tor) answer(line string, st *conversation) (out string, ok bool) {
	if f.Hang {
		return "", false
	}
	word, arg, _ := strings.Cut(line, " ")
	key := word
	if word == "GETINFO" {
		key += " " + arg
	}
	if raw, ok := f.Replies[key]; ok {
		return raw, true
	}
	switch word {
	case "PROTOCOLINFO":
		return fmt.Sprintf("250-PROTOCOLINFO 1\r\n250-AUTH METHODS=%s COOKIEFILE=\"/run/tor/control.authcookie\"\r\n250-VERSION Tor=%q\r\n250 OK\r\n", f.Methods, f.Version), true
	case "AUTHCHALLENGE":
		st.clientNonce, _ = hex.DecodeString(strings.TrimPrefix(arg, "SAFECOOKIE "))
		st.serverNonce = make([]byte, 32)
		_, _ = rand.Read(st.serverNonce)
		key := f.Cookie
		if f.WrongServerHash {
			key = make([]byte, 32)
		}
		hash := mac(ServerHashKey, key, st.clientNonce, st.serverNonce)
		return fmt.Sprintf("250 AUTHCHALLENGE SERVERHASH=%X SERVERNONCE=%X\r\n", hash, st.serverNonce), true
	case "AUTHENTICATE":
		want := hex.EncodeToString(f.Cookie)
		switch {
		case f.Methods == "NULL":
			want = ""
		case st.serverNonce != nil:
			want = hex.EncodeToString(mac(ClientHashKey, f.Cookie, st.clientNonce, st.serverNonce))
		}
		if !strings.EqualFold(arg, want) {
			return "515 Authentication failed: Safe cookie response did not match expected value.\r\n", true
		}
		st.authed = true
		return "250 OK\r\n", true
	case "QUIT":
		return "250 closing connection\r\n", true
	case "GETINFO":
		if !st.authed {
			return "514 Authentication required.\r\n", true
		}
		return f.getinfo(arg), true
	}
	return fmt.Sprintf("510 Unrecognized command %q\r\n", word), true
}

// The keys of SAFECOOKIE's HMACs (control-spec 3.24).
const (
	ServerHashKey = "Tor safe cookie authentication server-to-controller hash"
	ClientHashKey = "Tor safe cookie authentication controller-to-server hash"
)

func mac(key string, parts ...[]byte) []byte {
	h := hmac.New(sha256.New, []byte(key))
	for _, p := range parts {
		h.Write(p)
	}
	return h.Sum(nil)
}

func (f *Tor) getinfo(key string) string {
	kv := func(v string) string {
		if !strings.Contains(v, "\n") {
			return "250-" + key + "=" + v + "\r\n250 OK\r\n"
		}
		var b strings.Builder
		b.WriteString("250+" + key + "=\r\n")
		for _, l := range strings.Split(v, "\n") {
			if strings.HasPrefix(l, ".") {
				b.WriteByte('.')
			}
			b.WriteString(l + "\r\n")
		}
		b.WriteString(".\r\n250 OK\r\n")
		return b.String()
	}
	switch key {
	case "version":
		return kv(f.Version)
	case "exit-policy/full":
		if f.Policy == "" {
			return "551 Descriptor still rebuilding - not ready yet\r\n"
		}
		return kv(f.Policy)
	case "address/v4", "address/v6":
		v := f.V4
		if key == "address/v6" {
			v = f.V6
		}
		switch {
		case f.NoV4Key:
			return fmt.Sprintf("552 Unrecognized key \"%s\"\r\n", key)
		case v == "":
			return "551 Address unknown\r\n"
		}
		return kv(v)
	case "address":
		if f.V4 == "" {
			return "551 Address unknown\r\n"
		}
		return kv(f.V4)
	}
	return fmt.Sprintf("552 Unrecognized key \"%s\"\r\n", key)
}
