package transfer

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

type tokens struct {
	lines, frames []string
}

func tokenize(chunks ...string) (*tokenizer, *tokens) {
	got := &tokens{}
	tk := &tokenizer{
		onLine:  func(s string) { got.lines = append(got.lines, s) },
		onFrame: func(s string) { got.frames = append(got.frames, s) },
	}
	for _, c := range chunks {
		_, _ = tk.Write([]byte(c))
	}
	return tk, got
}

func TestTokenizerSplitsLinesFramesAndPrompts(t *testing.T) {
	cases := []struct {
		name          string
		chunks        []string
		lines, frames []string
		tail          string
	}{
		{"log line on a pty", []string{"Warning: Permanently added '[127.0.0.1]:2299' (ED25519) to the list of known hosts.\r\r\n"},
			[]string{"Warning: Permanently added '[127.0.0.1]:2299' (ED25519) to the list of known hosts."}, nil, ""},
		{"prompt split across reads", []string{"\r", "scptest@127.0.0.1's pass", "word: "}, nil, nil, "scptest@127.0.0.1's password: "},
		{"answered prompt becomes a line", []string{"\rscptest@127.0.0.1's password: ", "\r\n", "Authenticated to 127.0.0.1.\r\r\n"},
			[]string{"scptest@127.0.0.1's password: ", "Authenticated to 127.0.0.1."}, nil, ""},
		{"progress frames then final line", []string{"\rbig 0% 0 0.0KB/s --:-- ETA", "\rbig 1% 255KB 249.1KB/s 01:17 ETA", "\rbig 100% 19MB 4.9MB/s 00:03    \r\n"},
			[]string{"big 100% 19MB 4.9MB/s 00:03    "}, []string{"big 0% 0 0.0KB/s --:-- ETA", "big 1% 255KB 249.1KB/s 01:17 ETA"}, ""},
		{"host-key block", []string{"\rThe authenticity of host '[127.0.0.1]:2299 ([127.0.0.1]:2299)' can't be established.\r\nED25519 key fingerprint is SHA256:ifzbkyU5VhctKyEy0nh5TwM0J8m0n+M15PCDRj1jTuc.\r\nThis key is not known by any other names.\r\nAre you sure you want to continue connecting (yes/no/[fingerprint])? "},
			[]string{"The authenticity of host '[127.0.0.1]:2299 ([127.0.0.1]:2299)' can't be established.", "ED25519 key fingerprint is SHA256:ifzbkyU5VhctKyEy0nh5TwM0J8m0n+M15PCDRj1jTuc.", "This key is not known by any other names."}, nil,
			"Are you sure you want to continue connecting (yes/no/[fingerprint])? "},
		{"bare newline inside a log line", []string{"The fingerprint for the ED25519 key sent by the remote host is\nSHA256:abc.\r\r\n"},
			[]string{"The fingerprint for the ED25519 key sent by the remote host is", "SHA256:abc."}, nil, ""},
		{"empty lines dropped", []string{"\r\n\r\n\r\r\n"}, nil, nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tk, got := tokenize(c.chunks...)
			if strings.Join(got.lines, "|") != strings.Join(c.lines, "|") {
				t.Errorf("lines = %q, want %q", got.lines, c.lines)
			}
			if strings.Join(got.frames, "|") != strings.Join(c.frames, "|") {
				t.Errorf("frames = %q, want %q", got.frames, c.frames)
			}
			if tk.Tail() != c.tail {
				t.Errorf("tail = %q, want %q", tk.Tail(), c.tail)
			}
		})
	}
}

// Splitting the same output at every possible point gives the same result:
// reads are arbitrary.
func TestTokenizerChunkingDoesNotMatter(t *testing.T) {
	out := "\rpassword: \r\nAuthenticated.\r\r\n\rf 1% 1KB 1.0KB/s 00:01 ETA\rf 100% 2KB 1.0KB/s 00:02    \r\nscp: Connection closed\r\r\n\rEnter passphrase for key '/k': "
	_, whole := tokenize(out)
	for i := 0; i <= len(out); i++ {
		tk, got := tokenize(out[:i], out[i:])
		if strings.Join(got.lines, "|") != strings.Join(whole.lines, "|") || strings.Join(got.frames, "|") != strings.Join(whole.frames, "|") || tk.Tail() != "Enter passphrase for key '/k': " {
			t.Fatalf("split at %d: lines %q frames %q tail %q", i, got.lines, got.frames, tk.Tail())
		}
	}
}

func FuzzTokenizer(f *testing.F) {
	f.Add([]byte("\rpassword: \r\nline\r\r\n\rframe\rframe2\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		total := 0
		tk := &tokenizer{
			onLine:  func(s string) { total += len(s); checkSegment(t, s) },
			onFrame: func(s string) { total += len(s); checkSegment(t, s) },
		}
		_, _ = tk.Write(b)
		checkSegment(t, tk.Tail())
		total += len(tk.Tail())
		// Nothing but line ends and carriage returns is dropped.
		kept := len(b) - strings.Count(string(b), "\r") - strings.Count(string(b), "\n")
		if total != kept {
			t.Fatalf("kept %d bytes, want %d", total, kept)
		}
	})
}

func checkSegment(t *testing.T, s string) {
	t.Helper()
	if strings.ContainsAny(s, "\r\n") {
		t.Fatalf("segment %q contains a line end", s)
	}
	if len(s) > maxSegment {
		t.Fatalf("segment of %d bytes", len(s))
	}
}

func TestParseProgress(t *testing.T) {
	cases := []struct {
		frame string
		want  Progress
		ok    bool
	}{
		{"big20m.bin                                      0%    0     0.0KB/s   --:-- ETA", Progress{}, true},
		{"big20m.bin                                      1%  255KB 249.1KB/s   01:17 ETA", Progress{Percent: 1, Bytes: 255 << 10, BytesPerSecond: 249.1 * 1024, ETA: 77 * time.Second}, true},
		{"big20m.bin                                      1%  255KB 132.7KB/s - stalled -", Progress{Percent: 1, Bytes: 255 << 10, BytesPerSecond: 132.7 * 1024, Stalled: true}, true},
		{"big20m.bin                                    100%   19MB   4.9MB/s   00:03    ", Progress{Percent: 100, Bytes: 19 << 20, BytesPerSecond: 4.9 * 1024 * 1024, Final: true}, true},
		{"small.txt   100%   12    13.1KB/s   00:00    ", Progress{Percent: 100, Bytes: 12, BytesPerSecond: 13.1 * 1024, Final: true}, true},
		{"a 50% b 99% done.txt  50%  1GB  10.0MB/s 1:02:03 ETA", Progress{Percent: 50, Bytes: 1 << 30, BytesPerSecond: 10 * 1024 * 1024, ETA: 3723 * time.Second}, true},
		{"Authenticated to 127.0.0.1 ([127.0.0.1]:2299) using \"password\".", Progress{}, false},
		{"sftp> put a b", Progress{}, false},
		{"x 250%  1KB 1.0KB/s 00:01 ETA", Progress{}, false},
	}
	for _, c := range cases {
		got, ok := parseProgress(c.frame)
		if ok != c.ok {
			t.Errorf("%q: ok = %v, want %v", c.frame, ok, c.ok)
			continue
		}
		if ok && (got.Percent != c.want.Percent || got.Bytes != c.want.Bytes || got.ETA != c.want.ETA || got.Stalled != c.want.Stalled || got.Final != c.want.Final || int64(got.BytesPerSecond) != int64(c.want.BytesPerSecond)) {
			t.Errorf("%q: got %+v, want %+v", c.frame, got, c.want)
		}
	}
}

func FuzzParseProgress(f *testing.F) {
	f.Add("big 1%  255KB 249.1KB/s   01:17 ETA")
	f.Fuzz(func(t *testing.T, s string) {
		p, ok := parseProgress(s)
		if ok && (p.Percent < 0 || p.Percent > 100 || p.Bytes < 0 || p.ETA < 0) {
			t.Fatalf("%q: impossible progress %+v", s, p)
		}
	})
}

func TestClassifyPrompt(t *testing.T) {
	cases := []struct {
		tail string
		idle bool
		want promptKind
	}{
		{"scptest@127.0.0.1's password: ", false, promptPassword},
		{"(scptest@127.0.0.1) Password: ", false, promptPassword},
		{"Password: ", false, promptPassword},
		{"Password:", true, promptPassword},
		{"Enter passphrase for key '/srv/lab/keys/id_ed25519_pp': ", false, promptPassphrase},
		{"Are you sure you want to continue connecting (yes/no/[fingerprint])? ", false, promptHostKey},
		{"Please type 'yes', 'no' or the fingerprint: ", false, promptHostKeyRetype},
		{"Are you sure you want to continue connecting (yes/no)? ", false, promptYesNo},
		{"Please type 'yes' or 'no': ", false, promptYesNo},
		{"Verification code: ", false, promptNone},
		{"Verification code: ", true, promptUnknown},
		{"Enter scptest@host's old password: ", true, promptUnknown},
		{"Enter scptest@host's new password: ", true, promptUnknown},
		{"Retype scptest@host's new password: ", true, promptUnknown},
		{"Current password: ", true, promptUnknown},
		{"Enter PIN for ED25519-SK key /k: ", true, promptUnknown},
		{"big 1%  255KB 249.1KB/s   01:17 ETA", true, promptNone},
		{"sftp> ", true, promptNone},
		{"", true, promptNone},
	}
	for _, c := range cases {
		if got := classifyPrompt(c.tail, c.idle); got != c.want {
			t.Errorf("classifyPrompt(%q, idle=%v) = %s, want %s", c.tail, c.idle, got, c.want)
		}
	}
}

func FuzzClassifyPrompt(f *testing.F) {
	f.Add("(u@h) Password: ", true)
	f.Fuzz(func(t *testing.T, tail string, idle bool) {
		k := classifyPrompt(tail, idle)
		if k != promptNone && tail == "" {
			t.Fatal("empty tail is a prompt")
		}
		if !idle && k == promptUnknown {
			t.Fatal("unknown prompt before the output rested")
		}
	})
}

func TestHostKeyFingerprint(t *testing.T) {
	for _, l := range []string{
		"ED25519 key fingerprint is SHA256:ifzbkyU5VhctKyEy0nh5TwM0J8m0n+M15PCDRj1jTuc.", // 9.x
		"ED25519 key fingerprint is: SHA256:ifzbkyU5VhctKyEy0nh5TwM0J8m0n+M15PCDRj1jTuc", // 10.1+
	} {
		typ, fp := hostKeyFingerprint([]string{"The authenticity of host 'x' can't be established.", l, "This key is not known by any other names."})
		if typ != "ED25519" || fp != "SHA256:ifzbkyU5VhctKyEy0nh5TwM0J8m0n+M15PCDRj1jTuc" {
			t.Errorf("%q: got %q %q", l, typ, fp)
		}
	}
	if _, fp := hostKeyFingerprint([]string{"ED25519 key fingerprint is MD5:a5:6c:65:5e:97:ce:f4:ed:6f:44:95:52:05:ee:ad:3e."}); fp != "" {
		t.Errorf("MD5 fingerprint accepted as %q", fp)
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := NewSecret([]byte("Secr3t-pass"))
	for _, got := range []string{s.String(), s.GoString(), fmt.Sprintf("%v %+v %#v %s %q %x", s, s, s, s, s, s), fmt.Sprintf("%v", struct{ P Secret }{s})} {
		if strings.Contains(got, "Secr3t") || strings.Contains(got, "53656372") {
			t.Errorf("secret leaked: %q", got)
		}
	}
	if b, _ := s.MarshalText(); string(b) != redacted {
		t.Errorf("MarshalText = %q", b)
	}
	if got := string(NewSecret([]byte("a\x15b")).answer()); got != "a\x16\x15b\n" {
		t.Errorf("control characters not quoted: %q", got)
	}
	sc := newScrubber(s)
	if got := sc.scrub("echo: Secr3t-pass and Secr3t-pass"); strings.Contains(got, "Secr3t") {
		t.Errorf("scrub left %q", got)
	}
	if !utf8.ValidString(sc.scrub("ü Secr3t-pass ü")) {
		t.Error("scrub broke UTF-8")
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
