package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	expect "github.com/Netflix/go-expect"
	"github.com/creack/pty"
)

// Window size of every client's pty. The progress meter is exactly cols-1
// bytes wide and needs more than 35 columns to show the name and the "\r"
// between frames (OPENSSH.md §5). 80 is OpenSSH's own default: wide enough to
// parse, and every frame is output the agent has to read.
const (
	ptyRows = 24
	ptyCols = 80
	// meterWidth is the width of one progress frame.
	meterWidth = ptyCols - 1
)

const (
	// idleCheck is how long the output may rest on something that looks like
	// a question before it counts as a prompt nobody expected.
	idleCheck = 1500 * time.Millisecond
	// readTick bounds each wait for output, so that the read loop notices
	// in time that the client exited while something else still holds the
	// pty.
	readTick = 250 * time.Millisecond
	// killGrace is how long a client has to exit after SIGTERM before its
	// whole process group gets SIGKILL.
	killGrace = 3 * time.Second
	// recentLines is how many output lines are kept for classification.
	recentLines = 64
)

// sessionSpec is one run of an OpenSSH client under a pty.
type sessionSpec struct {
	prog  string
	args  []string
	stdin io.Reader // nil: the pty is stdin
	// loginTimeout bounds the time until the session is established
	// (established is called); stallTimeout bounds silence afterwards.
	loginTimeout time.Duration
	stallTimeout time.Duration
	deadline     time.Time // overall; zero for none

	target    *Target
	scrub     *scrubber
	logger    *slog.Logger
	onLine    func(line string)            // every scrubbed output line
	onLogin   func()                       // ssh said "Authenticated to …" (once)
	onFrame   func(p Progress, raw string) // every progress frame
	onStarted func(pid int)
}

// sessionResult is how a client run ended.
type sessionResult struct {
	exitCode int      // -1 when killed by a signal
	lines    []string // last scrubbed lines, oldest first
	err      *Error   // set when the engine ended the run (prompt, watchdog, cancel), or nil
	hostKey  hostKeySeen
	answered map[promptKind]int // prompts answered, by kind
}

// failure is why a run that did not succeed failed: the engine's reason, or
// the client's messages classified. A refused login after a secret was typed
// says which secret to check, since ssh does not (a wrong passphrase only
// shows as "Permission denied (publickey)").
func (r sessionResult) failure() *Error {
	if r.err != nil {
		return r.err
	}
	e := classify(r.lines, r.exitCode)
	if e.Class == ClassAuth {
		switch {
		case r.answered[promptPassphrase] > 0:
			e.Message += "; the passphrase from passphrase_file was typed: check it, and that identity_file is the key the server knows"
		case r.answered[promptPassword] > 0:
			e.Message += "; the password from password_file was typed: check it"
		}
	}
	return e
}

// hostKeySeen is the key a host-key prompt showed.
type hostKeySeen struct {
	keyType     string
	fingerprint string
}

// session runs one client. Its methods are called from the goroutine that
// reads the pty; the watchdog only kills the process group.
type session struct {
	spec      sessionSpec
	console   *expect.Console
	cmd       *exec.Cmd
	tok       tokenizer
	recent    []string
	answered  map[promptKind]int
	answering bool // the prompt in the tail has been answered
	hostKey   hostKeySeen
	lastFrame Progress
	activity  chan struct{} // a non-blocking signal to the watchdog: progress was made
	establish chan struct{} // closed once the session is established
	estDone   bool

	mu        sync.Mutex // guards failure and killTimer
	failure   *Error
	killTimer *time.Timer
}

// runSession starts the client described by spec, drives its prompts, and
// returns when it has exited and its output is drained. Every process it
// started is gone when it returns.
func runSession(ctx context.Context, spec sessionSpec) (res sessionResult, err error) {
	s := &session{
		spec:      spec,
		answered:  map[promptKind]int{},
		activity:  make(chan struct{}, 1),
		establish: make(chan struct{}),
	}
	s.tok.onLine = s.line
	s.tok.onFrame = s.frame

	console, err := expect.NewConsole()
	if err != nil {
		return res, fmt.Errorf("open a pseudo-terminal: %w", err)
	}
	s.console = console
	defer console.Close()
	if err := pty.Setsize(console.Tty(), &pty.Winsize{Rows: ptyRows, Cols: ptyCols}); err != nil {
		return res, fmt.Errorf("size the pseudo-terminal: %w", err)
	}

	cmd := exec.Command(spec.prog, spec.args...)
	cmd.Env = childEnv()
	cmd.Dir = "/"
	tty := console.Tty()
	cmd.Stdout, cmd.Stderr = tty, tty
	ctty := 0
	var stdinW *os.File
	if spec.stdin != nil {
		r, w, err := os.Pipe()
		if err != nil {
			return res, fmt.Errorf("create stdin pipe: %w", err)
		}
		defer r.Close()
		cmd.Stdin, stdinW, ctty = r, w, 1
	} else {
		cmd.Stdin = tty
	}
	// Its own session with the pty as controlling terminal: without it ssh
	// cannot prompt (it would send empty passwords) and scp shows no meter.
	// Pdeathsig: if the agent dies (kill -9), its clients die with it
	// instead of finishing an upload the restarted agent sends again.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: ctty, Pdeathsig: syscall.SIGKILL}
	if err := start(cmd); err != nil {
		if stdinW != nil {
			stdinW.Close()
		}
		return res, fmt.Errorf("start %s: %w", spec.prog, err)
	}
	s.cmd = cmd
	// The parent's copy of the slave must go, or the master never reports
	// EOF after the child exits.
	tty.Close()
	if spec.onStarted != nil {
		spec.onStarted(cmd.Process.Pid)
	}
	if stdinW != nil {
		if rc, ok := cmd.Stdin.(*os.File); ok {
			rc.Close()
		}
		go func() {
			_, _ = io.Copy(stdinW, spec.stdin)
			stdinW.Close()
		}()
	}

	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	watchdogDone := make(chan struct{})
	stopWatchdog := make(chan struct{})
	go func() {
		defer close(watchdogDone)
		s.watchdog(ctx, exited, stopWatchdog)
	}()

	s.readLoop(exited)
	<-exited
	close(stopWatchdog)
	<-watchdogDone
	s.mu.Lock()
	if s.killTimer != nil {
		s.killTimer.Stop()
		s.killTimer = nil
	}
	res.err = s.failure
	s.mu.Unlock()

	res.exitCode = exitCode(waitErr)
	res.lines = s.recent
	res.hostKey = s.hostKey
	res.answered = s.answered
	return res, nil
}

// readLoop reads the pty until EOF, feeding the tokenizer and answering
// prompts. go-expect is used with a matcher that fires at every line or frame
// boundary and wherever a prompt may end, so each Expect call covers a short
// stretch of output: matching stays linear in the output size (the library's
// string matchers re-scan the whole buffer for every rune).
//
// It also returns once the client has exited and the pty has then been
// quiet for a whole tick, every moment of it after the exit: everything the
// client wrote has been read by then. (A tick that began before the exit
// does not count: the client's last words, say "Host key verification
// failed.", may still be on their way through the pty.) Something else
// may still hold the pty open: a ControlMaster keeps the stderr a mux client
// passed it until the server has closed that session, which a slow or frozen
// server can put off for as long as ssh's keepalives allow. That is not
// waited for.
func (s *session) readLoop(exited <-chan struct{}) {
	lastOutput := time.Now()
	for {
		exitedBefore := isClosed(exited)
		out, err := s.console.Expect(expect.WithTimeout(readTick), withMatcher(boundary{}))
		if out != "" {
			lastOutput = time.Now()
			_, _ = s.tok.Write([]byte(out))
			s.checkPrompt(false)
		}
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if exitedBefore && out == "" {
				// Quiet for a tick since the exit: done. Whatever
				// is left of the client's group goes with it.
				_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
				s.tok.Flush()
				return
			}
			if time.Since(lastOutput) >= idleCheck {
				s.checkPrompt(true)
			}
			continue
		}
		// EOF, EIO (the last slave closed) or a closed console.
		s.tok.Flush()
		return
	}
}

// isClosed reports whether ch is closed, without waiting.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// checkPrompt answers a complete prompt in the tail, or ends the run.
//
// Prompts are looked for only during the login: once ssh has said
// "Authenticated to …" nothing is ever typed again, whatever text looks like
// a question (no file name, listing or file data reaches this pty, but
// nothing may be answered that the login phase did not ask).
func (s *session) checkPrompt(idle bool) {
	if s.answering || s.estDone || s.failed() {
		return
	}
	tail := s.tok.Tail()
	kind := classifyPrompt(tail, idle)
	if kind == promptNone {
		return
	}
	quoted := s.spec.scrub.scrub(strings.TrimSpace(tail))
	t := s.spec.target
	switch kind {
	case promptPassword:
		s.answerSecret(kind, t.Password,
			fmt.Sprintf("the server asks for a password (%q) but target %q has no password_file", quoted, t.Name),
			fmt.Sprintf("the server asked for the password again (%q): it was refused; not retrying so the account is not locked", quoted))
	case promptPassphrase:
		s.answerSecret(kind, t.Passphrase,
			fmt.Sprintf("the identity file needs a passphrase (%q) but target %q has no passphrase_file", quoted, t.Name),
			fmt.Sprintf("the passphrase was refused (%q asked again)", quoted))
	case promptHostKey:
		keyType, fp := hostKeyFingerprint(append(s.recent, tail))
		s.hostKey = hostKeySeen{keyType: keyType, fingerprint: fp}
		switch {
		case s.answered[kind] > 0:
			s.refuseHostKey(ClassHostKeyMismatch, "ssh asked to confirm a host key twice")
		case !t.Pinned():
			// strict and accept-new never prompt; if ssh asks anyway,
			// the answer is no.
			s.refuseHostKey(ClassHostKeyUnknown, fmt.Sprintf("ssh asked to trust the unknown host key %s %s, which host_key = %q does not allow", keyType, fp, t.HostKey))
		case fp == "":
			s.refuseHostKey(ClassHostKeyMismatch, "ssh asked to confirm a host key but showed no SHA256 fingerprint")
		case fp != t.HostKey:
			s.refuseHostKey(ClassHostKeyMismatch, fmt.Sprintf("the server's %s host key is %s, not the pinned %s; refusing it (possible man-in-the-middle; if the key was rotated, pin the new one)", keyType, fp, t.HostKey))
		default:
			// ssh compares the answer with the key itself (strcmp).
			s.answer(kind, []byte(t.HostKey+"\n"))
		}
	case promptHostKeyRetype, promptYesNo:
		s.refuseHostKey(ClassHostKeyMismatch, fmt.Sprintf("ssh asked %q; refusing", quoted))
	case promptUnknown:
		s.fail(ClassPrompt, fmt.Sprintf("the client asked %q, which dropship does not know how to answer", quoted))
	}
}

// answerSecret types secret at a password or passphrase prompt, once. Without
// a secret, or when the prompt comes back (the secret was refused), the run
// ends as an authentication failure: answering again could lock the account.
func (s *session) answerSecret(kind promptKind, secret Secret, missing, refused string) {
	switch {
	case secret.IsZero():
		s.fail(ClassAuth, missing)
	case s.answered[kind] > 0:
		s.fail(ClassAuth, refused)
	default:
		s.answer(kind, secret.answer())
	}
}

// answer types a reply to the prompt in the tail. The reply goes out only now,
// after the prompt's last byte was read: ssh flushes typed-ahead input (and
// echoes it in clear text) when it turns echo off.
func (s *session) answer(kind promptKind, reply []byte) {
	s.answered[kind]++
	s.answering = true
	s.spec.logger.Debug("answering prompt", "prompt", kind.String())
	if _, err := s.console.Write(reply); err != nil {
		s.fail(ClassUnknown, fmt.Sprintf("answer the %s prompt: %v", kind, err))
	}
}

// refuseHostKey answers "no" and ends the run with a host-key failure.
func (s *session) refuseHostKey(class Class, msg string) {
	s.answered[promptHostKey]++
	s.answering = true
	_, _ = s.console.Write([]byte("no\n"))
	// ssh exits by itself on "no"; the group is stopped only if it does not.
	s.failWithin(class, msg, killGrace)
}

// fail records why the engine ends the run, if no reason was recorded yet,
// and stops the client's whole process group: SIGTERM, then SIGKILL after a
// grace period. It is safe from any goroutine.
func (s *session) fail(class Class, msg string) { s.failWithin(class, msg, 0) }

// failWithin is fail with the SIGTERM delayed by wait, for a client that was
// told to give up and should exit by itself.
func (s *session) failWithin(class Class, msg string, wait time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failure != nil {
		return
	}
	s.failure = &Error{Class: class, Message: msg, ExitCode: -1}
	pid := s.cmd.Process.Pid
	s.killTimer = time.AfterFunc(wait, func() {
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.killTimer != nil {
			s.killTimer = time.AfterFunc(killGrace, func() { _ = syscall.Kill(-pid, syscall.SIGKILL) })
		}
	})
}

func (s *session) failed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failure != nil
}

// line handles one complete output line.
func (s *session) line(l string) {
	s.answering = false
	// A client that fails mid-file prints its error right after the last
	// meter frame, which has no line end: "…  6%   64KB  51.8KB/s   00:18
	// ETAConnection closed". Each frame is exactly meterWidth bytes (names
	// are ASCII in the C locale), so the frame is split off and the rest
	// is a line of its own that classification can read.
	if len(l) > meterWidth {
		if p, ok := parseProgress(l[:meterWidth]); ok {
			s.progress(p, l[:meterWidth])
			s.line(l[meterWidth:])
			return
		}
	}
	if p, ok := parseProgress(l); ok {
		s.progress(p, l)
	} else {
		s.signalActivity()
	}
	// Recognised on the raw line: scrubbing may redact any text that
	// shares a few bytes with a secret.
	if strings.HasPrefix(l, "Authenticated to ") {
		s.established()
	}
	l = s.spec.scrub.scrub(l)
	s.recent = appendRecent(s.recent, l)
	if s.spec.onLine != nil {
		s.spec.onLine(l)
	}
}

// frame handles one progress frame that was overwritten by the next.
func (s *session) frame(f string) {
	s.answering = false
	p, ok := parseProgress(f)
	if !ok {
		// Not the meter: text overwritten by a "\r" is still output.
		s.line(f)
		return
	}
	s.progress(p, f)
}

// progress handles a parsed meter frame. Only a frame that shows more bytes
// or a higher percentage than the last counts as progress for the stall
// watchdog: a stalled meter keeps printing the same numbers every second.
func (s *session) progress(p Progress, raw string) {
	s.established()
	if p.Bytes != s.lastFrame.Bytes || p.Percent != s.lastFrame.Percent || p.Final {
		s.signalActivity()
	}
	s.lastFrame = p
	if s.spec.onFrame != nil {
		s.spec.onFrame(p, raw)
	}
}

// established marks the end of the login phase: from now on silence is
// measured against the stall timeout.
func (s *session) established() {
	if !s.estDone {
		s.estDone = true
		close(s.establish)
		if s.spec.onLogin != nil {
			s.spec.onLogin()
		}
	}
}

func (s *session) signalActivity() {
	select {
	case s.activity <- struct{}{}:
	default:
	}
}

// watchdog kills the client's process group when the context ends, the
// overall deadline passes, the login is not done within loginTimeout, or,
// once established, no progress was made for stallTimeout (0: no limit).
func (s *session) watchdog(ctx context.Context, exited, stop <-chan struct{}) {
	var deadline <-chan time.Time
	if !s.spec.deadline.IsZero() {
		t := time.NewTimer(time.Until(s.spec.deadline))
		defer t.Stop()
		deadline = t.C
	}
	login := time.NewTimer(s.spec.loginTimeout)
	defer login.Stop()
	var quietC <-chan time.Time
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	defer quiet.Stop()
	establish := s.establish
	for {
		select {
		case <-exited:
			return
		case <-stop:
			return
		case <-ctx.Done():
			s.fail(ClassCanceled, "the transfer was stopped: "+context.Cause(ctx).Error())
			return
		case <-deadline:
			s.fail(ClassStalled, "the overall deadline passed")
			return
		case <-login.C:
			s.fail(ClassConnectTimeout, fmt.Sprintf("no session after %s: the server did not complete the login", s.spec.loginTimeout))
			return
		case <-establish:
			establish = nil
			login.Stop()
			if s.spec.stallTimeout > 0 {
				quiet.Reset(s.spec.stallTimeout)
				quietC = quiet.C
			}
		case <-s.activity:
			if quietC != nil {
				resetTimer(quiet, s.spec.stallTimeout)
			}
		case <-quietC:
			s.fail(ClassStalled, fmt.Sprintf("no progress for %s", s.spec.stallTimeout))
			return
		}
	}
}

func resetTimer(t *time.Timer, d time.Duration) {
	t.Stop()
	t.Reset(d)
}

// exitCode extracts a client's exit status; -1 when a signal ended it.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// childEnv is the whole environment of a client: nothing of the agent's own
// environment leaks into it but what ssh needs to find its files and the
// operator's agent. No secret is ever in it.
func childEnv() []string {
	env := []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"LC_ALL=C",
		"TERM=dumb",
	}
	for _, k := range []string{"HOME", "USER", "LOGNAME", "SSH_AUTH_SOCK"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// boundary is a go-expect Matcher that ends an Expect call at a line end, a
// frame boundary or where a prompt may be complete. It only looks at the last
// bytes of the buffer, so each call costs O(1) per rune.
type boundary struct{}

func (boundary) Match(v interface{}) bool {
	buf, ok := v.(*bytes.Buffer)
	if !ok {
		return false
	}
	b := buf.Bytes()
	n := len(b)
	if n == 0 {
		return false
	}
	switch b[n-1] {
	case '\n', '\r':
		return true
	}
	return n >= maxSegment || mayCompleteAPrompt(b)
}

func (boundary) Criteria() interface{} { return "line, frame or prompt boundary" }

// withMatcher adds a custom Matcher to an Expect call.
func withMatcher(m expect.Matcher) expect.ExpectOpt {
	return func(o *expect.ExpectOpts) error {
		o.Matchers = append(o.Matchers, m)
		return nil
	}
}
