package torcontrol

import (
	"bufio"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func bufioReader(s string) *bufio.Reader { return bufio.NewReaderSize(strings.NewReader(s), 16) }

func slicesContains(s []string, v string) bool { return slices.Contains(s, v) }

// FuzzReadReply: whatever a control socket sends, ReadReply returns a
// reply or an error, within its limits; a reply it returns encodes to
// bytes it reads back as the same reply.
func FuzzReadReply(f *testing.F) {
	for _, seed := range []string{
		"250-PROTOCOLINFO 1\r\n250-AUTH METHODS=COOKIE,SAFECOOKIE COOKIEFILE=\"/run/tor/control.authcookie\"\r\n250-VERSION Tor=\"0.4.9.11\"\r\n250 OK\r\n",
		"250 AUTHCHALLENGE SERVERHASH=1F2E SERVERNONCE=AB\r\n",
		"250+exit-policy/full=\r\nreject6 *:*\r\nreject 0.0.0.0/8:*\r\naccept *:80\r\nreject *:*\r\n.\r\n250 OK\r\n",
		"250-exit-policy/full=reject *:*\r\n250 OK\r\n",
		"250+x=\r\n..dot\r\n\r\n.\r\n250 OK\r\n",
		"551 Address unknown\r\n",
		"552 Unrecognized key \"exit-policy/ful\"\r\n",
		"515 Authentication failed: Safe cookie response did not match expected value.\r\n",
		"250-a\r\n251 b\r\n",
		"250 OK\n",
		"250-a\rb\r\n250 \r\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		const limit = 1 << 16
		rep, err := ReadReply(bufioReader(string(in)), limit)
		if err != nil {
			return
		}
		if len(rep.Lines) == 0 || len(rep.Lines) > MaxReplyLines || rep.Code < 100 || rep.Code > 999 {
			t.Fatalf("reply %+v out of bounds", rep)
		}
		if last := rep.Lines[len(rep.Lines)-1]; last.HasData {
			t.Fatalf("a reply ending in a data line: %+v", rep)
		}
		again, err := ReadReply(bufioReader(string(rep.Encode())), limit+1<<16)
		if err != nil {
			t.Fatalf("the encoding of %+v does not read back: %v\n%q", rep, err, rep.Encode())
		}
		if diff := cmp.Diff(rep, again); diff != "" {
			t.Fatalf("read back differently (-first +again):\n%s", diff)
		}
	})
}
