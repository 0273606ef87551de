package torcontrol

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeTor is an in-process control server that answers as tor 0.4.9
// does, or misbehaves as a test asks.
type fakeTor struct {
	cookie  []byte
	methods string // PROTOCOLINFO's METHODS
	policy  string // exit-policy/full; "" answers 551 as a tor still building its descriptor
	v4, v6  string // address/v4, address/v6; "" answers 551
	noV4Key bool   // answer 552 to address/v4 and address/v6, as a tor before them
	version string
	// replies replaces the answer to a command (its first word, or
	// "GETINFO key") with raw bytes.
	replies map[string]string
	// hang: read commands, never answer.
	hang bool
	// wrongServerHash: answer AUTHCHALLENGE with a hash of another cookie.
	wrongServerHash bool

	mu       sync.Mutex
	received []string // every command line read
}

func newFakeTor() *fakeTor {
	cookie := make([]byte, 32)
	_, _ = rand.Read(cookie)
	return &fakeTor{cookie: cookie, methods: "COOKIE,SAFECOOKIE", version: "0.4.9.11",
		policy: "reject *:25\nreject6 *:*\naccept *:*", v4: "203.0.113.5"}
}

// serve listens on a unix socket in a temporary directory and returns
// its path; the listener closes with the test.
func (f *fakeTor) serve(t *testing.T) Endpoint {
	t.Helper()
	path := filepath.Join(t.TempDir(), "control")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	f.accept(t, ln)
	return Endpoint{Network: "unix", Address: path}
}

func (f *fakeTor) accept(t *testing.T, ln net.Listener) {
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				f.converse(conn)
			}()
		}
	}()
}

func (f *fakeTor) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.received...)
}

func (f *fakeTor) converse(conn net.Conn) {
	r := bufio.NewReader(conn)
	var clientNonce, serverNonce []byte
	authed := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimSuffix(line, "\r\n")
		f.mu.Lock()
		f.received = append(f.received, line)
		f.mu.Unlock()
		if f.hang {
			continue
		}
		word, arg, _ := strings.Cut(line, " ")
		key := word
		if word == "GETINFO" {
			key += " " + arg
		}
		if raw, ok := f.replies[key]; ok {
			if _, err := conn.Write([]byte(raw)); err != nil || !strings.HasSuffix(raw, "\n") {
				return // a reply cut short: the connection ends with it
			}
			continue
		}
		var out string
		switch word {
		case "PROTOCOLINFO":
			out = fmt.Sprintf("250-PROTOCOLINFO 1\r\n250-AUTH METHODS=%s COOKIEFILE=\"/run/tor/control.authcookie\"\r\n250-VERSION Tor=%q\r\n250 OK\r\n", f.methods, f.version)
		case "AUTHCHALLENGE":
			clientNonce, _ = hex.DecodeString(strings.TrimPrefix(arg, "SAFECOOKIE "))
			serverNonce = make([]byte, 32)
			_, _ = rand.Read(serverNonce)
			key := f.cookie
			if f.wrongServerHash {
				key = make([]byte, 32)
			}
			hash := mac(serverHashKey, append(append(append([]byte{}, key...), clientNonce...), serverNonce...))
			out = fmt.Sprintf("250 AUTHCHALLENGE SERVERHASH=%X SERVERNONCE=%X\r\n", hash, serverNonce)
		case "AUTHENTICATE":
			want := hex.EncodeToString(f.cookie)
			if serverNonce != nil {
				want = hex.EncodeToString(mac(clientHashKey, append(append(append([]byte{}, f.cookie...), clientNonce...), serverNonce...)))
			}
			if f.methods == "NULL" {
				want = ""
			}
			if !strings.EqualFold(arg, want) {
				_, _ = conn.Write([]byte("515 Authentication failed: Safe cookie response did not match expected value.\r\n"))
				return
			}
			authed = true
			out = "250 OK\r\n"
		case "QUIT":
			_, _ = conn.Write([]byte("250 closing connection\r\n"))
			return
		case "GETINFO":
			if !authed {
				_, _ = conn.Write([]byte("514 Authentication required.\r\n"))
				return
			}
			out = f.getinfo(arg)
		default:
			out = fmt.Sprintf("510 Unrecognized command %q\r\n", word)
		}
		if _, err := conn.Write([]byte(out)); err != nil {
			return
		}
	}
}

func (f *fakeTor) getinfo(key string) string {
	kv := func(v string) string {
		if strings.Contains(v, "\n") {
			return Reply{Code: 250, Lines: []ReplyLine{{Text: key + "=", HasData: true, Data: v}, {Text: "OK"}}}.String()
		}
		return "250-" + key + "=" + v + "\r\n250 OK\r\n"
	}
	switch key {
	case "version":
		return kv(f.version)
	case "exit-policy/full":
		if f.policy == "" {
			return "551 Descriptor still rebuilding - not ready yet\r\n"
		}
		return kv(f.policy)
	case "address/v4", "address/v6":
		v := f.v4
		if key == "address/v6" {
			v = f.v6
		}
		switch {
		case f.noV4Key:
			return fmt.Sprintf("552 Unrecognized key \"%s\"\r\n", key)
		case v == "":
			return "551 Address unknown\r\n"
		}
		return kv(v)
	case "address":
		if f.v4 == "" {
			return "551 Address unknown\r\n"
		}
		return kv(f.v4)
	}
	return fmt.Sprintf("552 Unrecognized key \"%s\"\r\n", key)
}

// String is Encode as a string.
func (rep Reply) String() string { return string(rep.Encode()) }
