package transfer

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary doubles as a scripted client: with DROPSHIP_FAKE_CLIENT set
// it behaves like ssh at its prompts (writes them to /dev/tty in pieces, turns
// echo off, reads one line) and records every answer it got in
// DROPSHIP_FAKE_ANSWERS. A real sshd cannot produce these prompts on demand.
func TestMain(m *testing.M) {
	if scenario := os.Getenv("DROPSHIP_FAKE_CLIENT"); scenario != "" {
		os.Exit(fakeClient(scenario))
	}
	if frames := os.Getenv("DROPSHIP_FAKE_METER"); frames != "" {
		os.Exit(fakeMeter(frames))
	}
	os.Exit(m.Run())
}

const fakeFP = "SHA256:ifzbkyU5VhctKyEy0nh5TwM0J8m0n+M15PCDRj1jTuc"

var fakeScenarios = map[string][]string{
	// Each step is a prompt; "|" splits it into writes 300 ms apart, so
	// an answer typed before the last piece would show up early.
	"password":         {"\rfake@127.0.0.1's pass|word: "},
	"password-wrong":   {"\rfake@127.0.0.1's password: ", "\rfake@127.0.0.1's password: "},
	"kbdint":           {"\r(fake@127.0.0.1) Lab notice: use your password\r\n|Password: "},
	"kbdint-custom":    {"\r(fake@127.0.0.1) Lab 2FA: enter the 6-digit code from your token\r\nVerification code: "},
	"passphrase":       {"\rEnter passphrase for key '/k/id_ed25519': "},
	"passphrase-wrong": {"\rEnter passphrase for key '/k/id_ed25519': ", "\rEnter passphrase for key '/k/id_ed25519': "},
	"hostkey":          {"\rThe authenticity of host '[127.0.0.1]:2299 ([127.0.0.1]:2299)' can't be established.\r\nED25519 key fingerprint is " + fakeFP + ".\r\nThis key is not known by any other names.\r\n|Are you sure you want to continue connecting (yes/no/[fingerprint])? "},
	"hostkey-retype":   {"\rThe authenticity of host 'h' can't be established.\r\nED25519 key fingerprint is " + fakeFP + ".\r\nAre you sure you want to continue connecting (yes/no/[fingerprint])? ", "\rPlease type 'yes', 'no' or the fingerprint: "},
	"password-change":  {"\rEnter fake@127.0.0.1's old password: "},
}

func fakeClient(scenario string) int {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake client: no controlling tty:", err)
		return 99
	}
	answers, _ := os.OpenFile(os.Getenv("DROPSHIP_FAKE_ANSWERS"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	in := bufio.NewReader(tty)
	for _, prompt := range fakeScenarios[scenario] {
		// Like readpassphrase(): echo off for secrets, flushing typed-ahead
		// input, and only then the prompt (openbsd-compat/readpassphrase.c).
		st, _ := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		secret := !strings.Contains(prompt, "yes/no") && !strings.Contains(prompt, "Please type")
		if secret {
			quiet := *st
			quiet.Lflag &^= unix.ECHO
			_ = unix.IoctlSetTermios(int(tty.Fd()), unix.TCSETSF, &quiet)
		}
		pieces := strings.Split(prompt, "|")
		for i, p := range pieces {
			if i > 0 {
				time.Sleep(300 * time.Millisecond)
				if n, _ := unix.IoctlGetInt(int(tty.Fd()), unix.TIOCINQ); n > 0 {
					fmt.Fprintf(answers, "EARLY(%d)\n", n)
				}
			}
			_, _ = tty.WriteString(p)
		}
		line, err := in.ReadString('\n')
		if secret {
			_ = unix.IoctlSetTermios(int(tty.Fd()), unix.TCSETSF, st)
			_, _ = tty.WriteString("\n")
		}
		if err != nil {
			return 98
		}
		fmt.Fprintf(answers, "%s\n", strings.TrimRight(line, "\n"))
	}
	fmt.Fprintln(os.Stderr, "Authenticated to 127.0.0.1 ([127.0.0.1]:2299) using \"fake\".\r")
	fmt.Println("done")
	return 0
}

func runFake(t *testing.T, scenario string, target Target) (sessionResult, []string, []string) {
	t.Helper()
	answersFile := filepath.Join(t.TempDir(), "answers")
	// childEnv passes only a few variables on: /usr/bin/env sets the two
	// the fake needs.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var published []string
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := runSession(ctx, sessionSpec{
		prog:         "/usr/bin/env",
		args:         []string{"DROPSHIP_FAKE_CLIENT=" + scenario, "DROPSHIP_FAKE_ANSWERS=" + answersFile, exe, "-test.run=^$"},
		loginTimeout: 15 * time.Second,
		stallTimeout: 15 * time.Second,
		target:       &target,
		scrub:        newScrubber(target.Password, target.Passphrase),
		logger:       discard(),
		onLine:       func(l string) { published = append(published, l) },
	})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(answersFile)
	var answers []string
	if s := strings.TrimSuffix(string(b), "\n"); s != "" {
		answers = strings.Split(s, "\n")
	}
	return res, answers, published
}

func TestPromptsAreAnsweredOnceAfterTheirLastByte(t *testing.T) {
	t.Parallel()
	pw := NewSecret([]byte("Sx7-kQ9v"))
	pp := NewSecret([]byte("key-pass-123"))
	cases := []struct {
		scenario string
		target   Target
		answers  []string
		class    Class  // "" for success
		quote    string // the error message must quote this
	}{
		{"password", Target{Password: pw}, []string{"Sx7-kQ9v"}, "", ""},
		{"password-wrong", Target{Password: pw}, []string{"Sx7-kQ9v"}, ClassAuth, "password again"},
		{"password", Target{Name: "nopw"}, nil, ClassAuth, "no password_file"},
		{"kbdint", Target{Password: pw}, []string{"Sx7-kQ9v"}, "", ""},
		{"kbdint-custom", Target{Password: pw}, nil, ClassPrompt, "Verification code:"},
		{"passphrase", Target{Passphrase: pp}, []string{"key-pass-123"}, "", ""},
		{"passphrase-wrong", Target{Passphrase: pp}, []string{"key-pass-123"}, ClassAuth, "passphrase was refused"},
		{"hostkey", Target{HostKey: fakeFP}, []string{fakeFP}, "", ""},
		{"hostkey", Target{HostKey: "SHA256:" + strings.Repeat("A", 43)}, []string{"no"}, ClassHostKeyMismatch, fakeFP},
		{"hostkey", Target{HostKey: HostKeyStrict}, []string{"no"}, ClassHostKeyUnknown, fakeFP},
		{"hostkey", Target{HostKey: HostKeyAcceptNew}, []string{"no"}, ClassHostKeyUnknown, fakeFP},
		{"hostkey-retype", Target{HostKey: fakeFP}, []string{fakeFP, "no"}, ClassHostKeyMismatch, "Please type"},
		{"password-change", Target{Password: pw}, nil, ClassPrompt, "old password"},
	}
	for _, c := range cases {
		t.Run(c.scenario+"/"+string(c.class), func(t *testing.T) {
			t.Parallel()
			res, answers, published := runFake(t, c.scenario, c.target)
			if strings.Join(answers, "|") != strings.Join(c.answers, "|") {
				t.Errorf("answers = %q, want %q", answers, c.answers)
			}
			for _, a := range answers {
				if strings.HasPrefix(a, "EARLY") {
					t.Errorf("answered before the prompt was complete: %s", a)
				}
			}
			switch {
			case c.class == "" && (res.err != nil || res.exitCode != 0):
				t.Errorf("failed: %v, exit %d, lines %q", res.err, res.exitCode, res.lines)
			case c.class != "" && (res.err == nil || res.err.Class != c.class):
				t.Errorf("err = %v, want class %s", res.err, c.class)
			case c.class != "" && !strings.Contains(res.err.Message, c.quote):
				t.Errorf("message %q does not quote %q", res.err.Message, c.quote)
			}
			for _, l := range append(published, res.lines...) {
				if strings.Contains(l, "Sx7-kQ9v") || strings.Contains(l, "key-pass-123") {
					t.Errorf("secret in published line %q", l)
				}
			}
			if res.err != nil && (strings.Contains(res.err.Error(), "Sx7-kQ9v") || strings.Contains(res.err.Error(), "key-pass")) {
				t.Errorf("secret in error %q", res.err)
			}
		})
	}
}
