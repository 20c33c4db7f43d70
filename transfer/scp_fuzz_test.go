package transfer

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// The answers of a remote scp are untrusted bytes: whatever a server sends is
// read as ok, a bounded message, or an error, never a panic or an unbounded
// read.
func FuzzSCPAnswers(f *testing.F) {
	for _, seed := range []string{
		"\x00", "\x00\x00\x00",
		"\x01scp: /in/x: Permission denied\n",
		"\x02scp: protocol error: expected control record\n",
		"\x01", "\x01no newline", "Welcome to the box\n\x00",
		"\x01" + strings.Repeat("x", 10000) + "\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := &scpProc{out: bufio.NewReader(bytes.NewReader(data))}
		for range len(data) + 1 {
			msg, err := p.ack()
			if len(msg) > maxAnswer {
				t.Fatalf("a message of %d bytes", len(msg))
			}
			if err != nil {
				if ClassOf(err) != ClassRemoteConfig && msg != "" {
					t.Fatalf("both a message %q and an error %v", msg, err)
				}
				return
			}
		}
	})
}

// Whatever bytes a name holds (but NUL), a POSIX shell reads back exactly
// what shQuote wrote.
func FuzzShQuote(f *testing.F) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		f.Skip("no sh")
	}
	names, _ := hostileNames("fuzz")
	for _, n := range append(names, "'", `'\''`, "\\", "$(", "`") {
		f.Add(n)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if strings.IndexByte(s, 0) >= 0 || len(s) > 4096 {
			return
		}
		out, err := exec.Command(sh, "-c", "printf '%s' "+shQuote(s)).Output()
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if string(out) != s {
			t.Fatalf("%q came back as %q", s, out)
		}
	})
}
