package transfer

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// Issue 17 point 3: no published line holds a piece of a secret longer than
// 3 bytes, however the piece is broken up by controls, escape sequences,
// octal escapes or line ends; and no published line holds a control a
// terminal would act on.

// A reference reading of the views the scrubber promises (see scrubber),
// written independently of it with regular expressions.
var (
	refBackslash = regexp.MustCompile(`\\\\|\\[0-3][0-7][0-7]`)
	refSequence  = regexp.MustCompile(`\x1b(?:\[[0-?]*[ -/]*[@-~]?|[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\)?|[ -/]*[0-~]?)|[\x00-\x1f\x7f]`)
	refControl   = regexp.MustCompile(`[\x00-\x1f\x7f]`)
)

// refViews returns the views of a scrubbed line, named.
func refViews(out string) map[string]string {
	decoded := refBackslash.ReplaceAllStringFunc(out, func(m string) string {
		if m == `\\` {
			return `\`
		}
		n, _ := strconv.ParseUint(m[1:], 8, 8)
		return string([]byte{byte(n)})
	})
	stripped := refBackslash.ReplaceAllStringFunc(out, func(m string) string {
		if m == `\\` {
			return `\`
		}
		return ""
	})
	return map[string]string{
		"as is":                      out,
		"stripped":                   refSequence.ReplaceAllString(stripped, ""),
		"decoded":                    decoded,
		"decoded, controls removed":  refControl.ReplaceAllString(decoded, ""),
		"decoded, sequences removed": refSequence.ReplaceAllString(decoded, ""),
	}
}

// scrubFaults returns how out breaks the scrubber's promises for secrets.
func scrubFaults(secrets [][]byte, out string) []string {
	var faults []string
	if !utf8.ValidString(out) {
		faults = append(faults, "invalid UTF-8")
	}
	for _, r := range out {
		if r < 0x20 && r != '\t' || r == 0x7f || r != utf8.RuneError && deceptiveRef(r) {
			faults = append(faults, fmt.Sprintf("holds %U", r))
		}
	}
	for name, v := range refViews(out) {
		for _, s := range secrets {
			if len(s) == 0 {
				continue
			}
			if len(s) < 4 {
				if strings.Contains(v, string(s)) {
					faults = append(faults, fmt.Sprintf("%s: %q holds short secret %q", name, v, s))
				}
				continue
			}
			for i := 0; i+4 <= len(s); i++ {
				if w := string(s[i : i+4]); strings.Contains(v, w) {
					faults = append(faults, fmt.Sprintf("%s: %q holds %q of secret %q", name, v, w, s))
				}
			}
		}
	}
	return faults
}

func deceptiveRef(r rune) bool {
	return r >= 0x80 && r <= 0x9f || strings.ContainsRune("\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069", r)
}

// checkScrub scrubs in and fails t if the result breaks a promise or a
// second scrub changes it.
func checkScrub(t *testing.T, sc *scrubber, secrets [][]byte, in string) string {
	t.Helper()
	out := sc.scrub(in)
	for _, f := range scrubFaults(secrets, out) {
		t.Errorf("scrub(%q) = %q: %s", in, out, f)
	}
	if again := sc.scrub(out); again != out {
		t.Errorf("scrub(%q) = %q, scrubbed again %q", in, out, again)
	}
	return out
}

func secretsOf(ss ...string) ([]Secret, [][]byte) {
	var secs []Secret
	var raw [][]byte
	for _, s := range ss {
		secs = append(secs, NewSecret([]byte(s)))
		raw = append(raw, []byte(s))
	}
	return secs, raw
}

func TestScrubTable(t *testing.T) {
	const pw, pp = "Secr3t-pass", "wörd\\7c1\x15xyz"
	secs, raw := secretsOf(pw, pp)
	sc := newScrubber(secs...)
	cases := []struct{ in, want string }{
		// Whole, twice, inside UTF-8 text.
		{"echo: Secr3t-pass and Secr3t-pass", "echo: [redacted] and [redacted]"},
		{"ü Secr3t-pass ü", "ü [redacted] ü"},
		// Interleaved with controls and escape sequences.
		{"debug1: S\x1b[0mecr3t-pass end", "debug1: [redacted] end"},
		{"Se\bcr3t-pass", "[redacted]"},
		{"Secr\x7f3t\x00-pa\tss", "[redacted]"},
		{"\x1b]0;Secr3t-pass\x07title", `\033]0;[redacted]\007title`},
		{"S\x1b(Becr\x1b[38;5;1m3t-pass", "[redacted]"},
		// Octal escapes as ssh's log.c writes them, of controls and of the
		// secret's own bytes.
		{`Secr\0173t-pass`, "[redacted]"},
		{`Sec\033[1mr3t-pass`, "[redacted]"},
		{`bad: w\303\266rd\\7c1\025xyz.`, "bad: [redacted]."},
		{"raw: wörd\\7c1\x15xyz", "raw: [redacted]"},
		{"echo: wörd\\7c1^Uxyz", "echo: [redacted]"},
		{"dropped: wörd\\7c1xyz", "dropped: [redacted]"},
		// Pieces of 4 bytes or more, as left by a line end in the middle.
		{"first half: Secr3t", "first half: [redacted]"},
		{"t-pass: second half", "[redacted]: second half"},
		{"Sec", "Sec"}, // 3 bytes: not told from other text
		// It over-redacts: "pass" is a piece of the password.
		{"Permission denied (publickey,password).", "Permission denied (publickey,[redacted]word)."},
		// Lines without a piece of a secret are left alone, but for
		// the controls, which are escaped.
		{"Authenticated to example.com ([192.0.2.1]:22) using \"publickey\".", "Authenticated to example.com ([192.0.2.1]:22) using \"publickey\"."},
		{"x\x1b[31mred\x1b[0m\r\a\u202e\u0085\xff\ttab", `x\033[31mred\033[0m\015\007\342\200\256\302\205\377` + "\ttab"},
		{`sftp> put /l/\303\274n\\001.txt`, `sftp> put /l/\303\274n\\001.txt`},
	}
	for _, c := range cases {
		if got := checkScrub(t, sc, raw, c.in); got != c.want {
			t.Errorf("scrub(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	// Only Secret's own formatting is ever printed here.
	if got := fmt.Sprint(secs); strings.Contains(got, "Secr") {
		t.Errorf("Secret printed as %q", got)
	}
}

func TestScrubWithoutSecrets(t *testing.T) {
	for _, sc := range []*scrubber{nil, newScrubber(), newScrubber(Secret{})} {
		for in, want := range map[string]string{
			"debug1: Reading configuration data /etc/ssh/ssh_config": "debug1: Reading configuration data /etc/ssh/ssh_config",
			"a\x1b[2Jb\bc":  `a\033[2Jb\010c`,
			"ü\xc3":         `ü\303`,
			"":              "",
			"tab\there.txt": "tab\there.txt",
		} {
			if got := sc.scrub(in); got != want {
				t.Errorf("scrub(%q) = %q, want %q", in, got, want)
			}
		}
	}
}

// The marker never holds, nor joins with its neighbours into, a piece of a
// secret; so scrubbing ends, and a scrubbed line scrubs to itself.
func TestScrubMarker(t *testing.T) {
	cases := []struct {
		secrets []string
		marker  string
	}{
		{[]string{"Secr3t-pass"}, "[redacted]"},
		{[]string{"br[acket]s1"}, "(redacted)"},
		{[]string{"([<{x}>])"}, "***"},
		{[]string{"redacted!"}, "***"},
		{[]string{"([<{*#~%@=}>])"}, ""},
		{[]string{"a"}, "***"},
		{[]string{"d]"}, "(redacted)"},
		{[]string{"ted]zq", "ab"}, "(redacted)"},
	}
	for _, c := range cases {
		secs, raw := secretsOf(c.secrets...)
		sc := newScrubber(secs...)
		if sc.marker != c.marker {
			t.Errorf("secrets %q: marker %q, want %q", c.secrets, sc.marker, c.marker)
		}
		for _, in := range []string{
			c.secrets[0],
			"x" + c.secrets[0] + "y" + c.secrets[0] + c.secrets[0] + "z",
			"[redacted]" + c.secrets[0] + "(redacted)" + c.secrets[0] + "zq",
			`\033` + c.secrets[0] + `\033[` + c.secrets[0] + `\\` + c.secrets[0] + `\0`,
			"a banner with all sorts of text in it: [redacted] *** ###",
		} {
			checkScrub(t, sc, raw, in)
		}
	}
}

// A short secret is matched whole, in every view.
func TestScrubShortSecret(t *testing.T) {
	secs, raw := secretsOf("ab", "x\x01y")
	sc := newScrubber(secs...)
	for in, want := range map[string]string{
		"cab":         "c[redacted]",
		"a\x1b[0mb":   "[redacted]",
		`a\033b`:      "[redacted]",
		"x\x01y":      "[redacted]",
		`x\001y`:      "[redacted]",
		"xy and ba":   "xy and ba",
		"aXb a b abc": "aXb a b [redacted]c",
	} {
		if got := checkScrub(t, sc, raw, in); got != want {
			t.Errorf("scrub(%q) = %q, want %q", in, got, want)
		}
	}
}

// The session scrubs each line, frame and prompt tail the tokenizer cuts
// from the pty's output, read in chunks of any size. A "\r" or "\n" inside
// a secret leaves each piece on a line of its own; every piece of 4 bytes or
// more is still removed.
func TestScrubSplitAcrossLines(t *testing.T) {
	const pw = "Secr3t-pass-w0rd"
	secs, raw := secretsOf(pw)
	sc := newScrubber(secs...)
	for k := 1; k < len(pw); k++ {
		for _, sep := range []string{"\r", "\n", "\r\n", "\r\r\n", "\x1b[K\r"} {
			out := "login: " + pw[:k] + sep + pw[k:] + " was typed\r\n" + "Password: " + pw[:k]
			for chunk := 1; chunk <= 7; chunk++ {
				var got []string
				emit := func(l string) { got = append(got, checkScrub(t, sc, raw, l)) }
				tok := &tokenizer{onLine: emit, onFrame: emit}
				for i := 0; i < len(out); i += chunk {
					_, _ = tok.Write([]byte(out[i:min(i+chunk, len(out))]))
					checkScrub(t, sc, raw, tok.Tail())
				}
				tok.Flush()
				all := strings.Join(got, "\n")
				for _, piece := range []string{pw[:k], pw[k:]} {
					if len(piece) >= 4 && strings.Contains(all, piece) {
						t.Errorf("split at %d by %q: %q left in %q", k, sep, piece, got)
					}
				}
				if !strings.Contains(all, "was typed") {
					t.Errorf("split at %d by %q: lines %q", k, sep, got)
				}
			}
		}
	}
}

// noise is what the fuzzer puts between the pieces of a secret.
var noise = []string{
	"\b", "\x1b[0m", "\x1b[38;5;196m", "\x1b]0;title\x07", "\x1b]2;t\x1b\\", "\x1b(B", "\x1b",
	"\x7f", "\x00", "\t", "\r", "\n", "\a", `\033[0m`, `\010`, `\\`, `\`, "\u202e", "\xc2\x9b",
	"\xff", "ü", "^", "[redacted]", "(redacted)", "***", "debug1: ", "sftp> ", " ",
}

// vis writes b as ssh's log.c does: printable ASCII as it is but for `\`,
// which is doubled, and any other byte as `\ooo`.
func vis(b []byte) []byte {
	var out []byte
	for _, c := range b {
		switch {
		case c == '\\':
			out = append(out, `\\`...)
		case c >= 0x20 && c < 0x7f:
			out = append(out, c)
		default:
			out = fmt.Appendf(out, `\%03o`, c)
		}
	}
	return out
}

// fuzzLine builds a line of at most 1 KiB from recipe: pieces of the
// secrets, whole or written as ssh and the tty write them, among controls,
// escape sequences, octal escapes and text.
func fuzzLine(secrets [][]byte, recipe []byte) []byte {
	var line []byte
	for i := 0; i < len(recipe) && len(line) < 1024; i++ {
		op := recipe[i]
		arg := func() int {
			if i+1 < len(recipe) {
				i++
				return int(recipe[i])
			}
			return 0
		}
		piece := func() []byte {
			s := secrets[int(op>>3)%len(secrets)]
			from := arg() % len(s)
			return s[from:min(len(s), from+1+arg()%len(s))]
		}
		switch op & 7 {
		case 0, 1:
			line = append(line, piece()...)
		case 2:
			line = append(line, noise[arg()%len(noise)]...)
		case 3:
			line = fmt.Appendf(line, `\%03o`, arg())
		case 4:
			line = append(line, vis(piece())...)
		case 5:
			line = append(line, caret(piece())...)
		default:
			line = append(line, byte(arg()))
		}
	}
	return line
}

func FuzzScrub(f *testing.F) {
	f.Add([]byte("Secr3t-pass"), []byte("wörd\\7c1\x15"), []byte{0, 0, 5, 2, 1, 0, 6, 9, 4, 0, 0})
	f.Add([]byte("Secr3t"), []byte{}, []byte{0, 0, 1, 2, 3, 0, 2, 20})
	f.Add([]byte("ab"), []byte("[x]"), []byte{0, 0, 0, 2, 8, 9, 0, 1, 2, 13, 8, 0, 9})
	f.Add([]byte("redacted"), []byte("a\x1b[0mb"), []byte{0, 0, 3, 2, 22, 8, 1, 3, 12, 0, 4, 7})
	f.Add([]byte("\x00\x01\x02\x03\x04"), []byte("\\\\\\\\"), []byte{0, 0, 9, 4, 0, 9, 12, 0, 9})
	f.Add([]byte{}, []byte{}, []byte("S\x1b[0mecr3t Se\bcr3t Secr\\0173t"))
	// No marker fits: stretches are deleted, and what joins is scrubbed
	// again.
	f.Add([]byte("([<{*#~%@=}>])"), []byte("ab"), []byte{0, 0, 3, 2, 13, 8, 0, 1, 2, 15, 6, 'a', 0, 2, 9, 8, 1, 1})
	f.Add([]byte("ted]zq"), []byte("\\0"), []byte{2, 22, 0, 0, 9, 6, 'z', 8, 0, 2, 6, '3', 0, 3, 9})
	f.Fuzz(func(t *testing.T, pw, pp, recipe []byte) {
		pw, pp, recipe = pw[:min(len(pw), 48)], pp[:min(len(pp), 48)], recipe[:min(len(recipe), 256)]
		sc := newScrubber(NewSecret(pw), NewSecret(pp))
		secrets := [][]byte{pw, pp}
		var present [][]byte
		for _, s := range secrets {
			if len(s) > 0 {
				present = append(present, s)
			}
		}
		lines := [][]byte{recipe}
		if len(present) > 0 {
			lines = append(lines, fuzzLine(present, recipe))
		}
		for _, line := range lines {
			checkScrub(t, sc, secrets, string(line))
			// As the session sees it: cut by the tokenizer, read in
			// chunks of sizes the recipe picks, the prompt tail looked
			// at now and then.
			emit := func(l string) { checkScrub(t, sc, secrets, l) }
			tok := &tokenizer{onLine: emit, onFrame: emit}
			for i, j := 0, 0; i < len(line); j++ {
				n := 1 + int(recipe[j%len(recipe)])%13
				_, _ = tok.Write(line[i:min(i+n, len(line))])
				i += n
				if j%8 == 0 || i >= len(line) {
					checkScrub(t, sc, secrets, tok.Tail())
				}
			}
			tok.Flush()
		}
		// Text with no byte of a secret is left as it is.
		if plainText := bytes.Map(func(r rune) rune {
			if r < 0x20 || r >= 0x7f || bytes.ContainsRune(pw, r) || bytes.ContainsRune(pp, r) || strings.ContainsRune(`\^?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]_`, r) {
				return -1
			}
			return r
		}, recipe); sc.scrub(string(plainText)) != string(plainText) {
			t.Errorf("scrub(%q) = %q: changed text without a piece of a secret", plainText, sc.scrub(string(plainText)))
		}
	})
}

func BenchmarkScrub(b *testing.B) {
	sc := newScrubber(NewSecret([]byte("Secr3t-pass-w0rd")), NewSecret([]byte("correct horse battery staple")))
	for name, line := range map[string]string{
		"plain":   "debug1: Authentications that can continue: publickey,keyboard-interactive",
		"secret":  "debug1: the server said: Secr3t-pass-w0rd is not it",
		"escaped": `debug1: Remote: banner \033[1mwelcome\033[0m to \303\274ber-host`,
		"meter":   "file.bin                                       42%  420MB  41.9MB/s   00:13 ETA",
		"hostile": strings.Repeat("Secr\x1b[0m3t-\\\033pa\bss ", maxSegment/20),
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sc.scrub(line)
			}
		})
	}
}
