package torcontrol

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Reply is one reply of tor's control protocol (control-spec section
// 2.3): a status code shared by every line, mid lines ("250-"), data
// lines ("250+" with a CmdData block) and the end line ("250 ").
type Reply struct {
	Code  int
	Lines []ReplyLine
}

// ReplyLine is one line of a reply. A data line ("250+key=") has Data:
// its CmdData block with the dot-escaping undone and the lines joined by
// "\n" (no newline after the last one).
type ReplyLine struct {
	Text    string
	HasData bool
	Data    string
}

// MaxReplyLines bounds the lines of one reply (a data block counts as
// one line): relayfw's questions get a handful.
const MaxReplyLines = 1024

// ErrReplyTooLarge is a reply over the size limit.
var ErrReplyTooLarge = errors.New("reply too large")

// SyntaxError is a reply that breaks the protocol's grammar.
type SyntaxError struct{ Msg string }

func (e *SyntaxError) Error() string { return "malformed control reply: " + e.Msg }

func syntaxErr(format string, args ...any) error {
	return &SyntaxError{Msg: fmt.Sprintf(format, args...)}
}

// replyReader reads one reply's lines within a byte budget.
type replyReader struct {
	r      *bufio.Reader
	budget int64  // bytes this reply may still take
	buf    []byte // the last line, reused
}

// line reads one line through its CRLF and returns it without, valid
// until the next call. A bare LF, a line past the budget and an end of
// input within a line are errors.
func (rr *replyReader) line() ([]byte, error) {
	rr.buf = rr.buf[:0]
	for {
		chunk, err := rr.r.ReadSlice('\n')
		if int64(len(chunk)) > rr.budget {
			return nil, ErrReplyTooLarge
		}
		rr.budget -= int64(len(chunk))
		rr.buf = append(rr.buf, chunk...)
		switch {
		case err == nil:
			if len(rr.buf) < 2 || rr.buf[len(rr.buf)-2] != '\r' {
				return nil, syntaxErr("line not ended by CRLF")
			}
			return rr.buf[:len(rr.buf)-2], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(rr.buf) > 0:
			return nil, fmt.Errorf("%w within a line", io.ErrUnexpectedEOF)
		default:
			return nil, err
		}
	}
}

// ReadReply reads one reply from r, strictly: three-digit status codes,
// the same on every line; "-", "+" or " " after them; CRLF line ends; a
// data block ended by "." with its leading dots unescaped; at most limit
// bytes and MaxReplyLines lines. It never reads past the reply's end
// line.
func ReadReply(r *bufio.Reader, limit int64) (Reply, error) {
	rr := &replyReader{r: r, budget: limit}
	var rep Reply
	for {
		b, err := rr.line()
		if err != nil {
			return Reply{}, err
		}
		l := string(b)
		if len(l) < 4 {
			return Reply{}, syntaxErr("line too short: %s", Quote(l))
		}
		code, err := statusCode(l[:3])
		if err != nil {
			return Reply{}, err
		}
		switch {
		case len(rep.Lines) == 0:
			rep.Code = code
		case code != rep.Code:
			return Reply{}, syntaxErr("status code %d within a reply of %d", code, rep.Code)
		}
		if len(rep.Lines) == MaxReplyLines {
			return Reply{}, fmt.Errorf("%w: more than %d lines", ErrReplyTooLarge, MaxReplyLines)
		}
		line := ReplyLine{Text: l[4:]}
		switch l[3] {
		case ' ':
			rep.Lines = append(rep.Lines, line)
			return rep, nil
		case '-':
		case '+':
			if line.Data, err = rr.data(); err != nil {
				return Reply{}, err
			}
			line.HasData = true
		default:
			return Reply{}, syntaxErr("%s after the status code", Quote(l[3:4]))
		}
		rep.Lines = append(rep.Lines, line)
	}
}

// data reads a CmdData block through its "." line.
func (rr *replyReader) data() (string, error) {
	var b strings.Builder
	first := true
	for {
		l, err := rr.line()
		if err != nil {
			return "", err
		}
		if len(l) == 1 && l[0] == '.' {
			return b.String(), nil
		}
		if !first {
			b.WriteByte('\n')
		}
		first = false
		if len(l) > 0 && l[0] == '.' {
			l = l[1:] // RFC 2821's dot-stuffing
		}
		b.Write(l)
	}
}

func statusCode(s string) (int, error) {
	for i := 0; i < 3; i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, syntaxErr("status code %s", Quote(s))
		}
	}
	code, _ := strconv.Atoi(s)
	if code < 100 {
		return 0, syntaxErr("status code %s", Quote(s))
	}
	return code, nil
}

// Encode writes rep in the protocol's form (what ReadReply reads back):
// the inverse of ReadReply, for tests and the fake servers.
func (rep Reply) Encode() []byte {
	var b strings.Builder
	for i, l := range rep.Lines {
		sep := '-'
		switch {
		case l.HasData:
			sep = '+'
		case i == len(rep.Lines)-1:
			sep = ' '
		}
		fmt.Fprintf(&b, "%03d%c%s\r\n", rep.Code, sep, l.Text)
		if l.HasData {
			b.Grow(len(l.Data) + len(l.Data)/8)
			for rest, more := l.Data, l.Data != ""; more; {
				var dl string
				dl, rest, more = strings.Cut(rest, "\n")
				if strings.HasPrefix(dl, ".") {
					b.WriteByte('.')
				}
				b.WriteString(dl)
				b.WriteString("\r\n")
			}
			b.WriteString(".\r\n")
		}
	}
	return []byte(b.String())
}

// Quote shows text from tor's side of the socket safely in a message:
// quoted when it holds anything but printable ASCII, and cut at 120
// bytes.
func Quote(s string) string {
	const max = 120
	cut := ""
	if len(s) > max {
		s, cut = s[:max], "…"
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return strconv.Quote(s) + cut
		}
	}
	return `"` + s + `"` + cut
}
