package transfer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pkg/sftp"
)

const (
	// maxPacket is the data of one SFTP write request: OpenSSH's
	// sftp-server and most others take 32 KiB (the protocol's minimum to
	// support), and more buys nothing on the wire.
	maxPacket = 32 << 10
	// requestsPerFile bounds the write requests one chunk of a file has in
	// flight (pkg/sftp splits a chunk into maxPacket requests).
	requestsPerFile = 64
	// openTimeout bounds starting an SFTP session through the shared
	// connection: the mux request, the subsystem and the version exchange.
	openTimeout = 30 * time.Second
	// stderrDrain is how long ssh's stderr is still read after ssh exited.
	stderrDrain = 250 * time.Millisecond
)

// sftpConn is one SFTP session of a target: `ssh -s … sftp` through the
// target's shared connection (the ControlMaster, which did the login under a
// pty), with github.com/pkg/sftp's client speaking the protocol on the
// process's stdin and stdout. No file name, listing or file data ever passes
// through a pty: the only pty is the master's, and it is read only for the
// login's prompts and ssh's own messages.
//
// The session's ssh runs with BatchMode=yes and ProxyCommand=/bin/false: it
// can never prompt, and should the master be gone (or refuse a session) it
// fails at once instead of opening a connection of its own.
type sftpConn struct {
	cmd    *exec.Cmd
	master *master // the shared connection it goes through
	client *sftp.Client
	done   chan struct{} // closed once ssh has exited and its stderr is drained

	posixRename, fsync, statvfs bool

	// activity is the time (UnixNano) of the last answer from the server,
	// and pending the requests without one yet: the stall watchdog's input.
	activity atomic.Int64
	pending  atomic.Int64
	// rtt is the shortest time a request took (nanoseconds; 0 before the
	// first): the session's round trip, near enough.
	rtt atomic.Int64

	// sink receives ssh's lines while an upload uses the session; without
	// one they go to the client's OnConnectionLine.
	sink atomic.Pointer[func(string)]

	mu      sync.Mutex
	lines   []string // ssh's last stderr lines, scrubbed
	failure *Error   // why the engine ended the session, if it did
	exit    int      // ssh's exit status, once done
}

// dialSFTP starts an SFTP session through the shared connection at sock.
// onLine receives every line ssh prints (scrubbed).
func dialSFTP(ctx context.Context, c *Client, sock string, onLine func(string)) (*sftpConn, error) {
	cmd := exec.Command(c.opts.SSH, sessionArgs(&c.t, sock)...)
	cmd.Env = childEnv()
	cmd.Dir = "/"
	// Its own process group (so it is stopped whole), and it dies with the
	// agent.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("sftp session: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("sftp session: %w", err)
	}
	// Not StderrPipe: ssh hands its stdin, stdout and stderr to the
	// master, which keeps them until the channel closes, so EOF on stderr
	// may come long after ssh exited (or was killed). The pipe is read
	// until then, or briefly once ssh is gone (see supervise).
	stderr, stderrW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("sftp session: %w", err)
	}
	cmd.Stderr = stderrW
	err = start(cmd)
	stderrW.Close()
	if err != nil {
		stderr.Close()
		return nil, fmt.Errorf("start %s: %w", c.opts.SSH, err)
	}
	s := &sftpConn{cmd: cmd, done: make(chan struct{})}
	s.touch()
	go s.supervise(stderr, c.scrub, onLine)

	type dialed struct {
		client *sftp.Client
		err    error
	}
	ch := make(chan dialed, 1)
	go func() {
		cl, err := sftp.NewClientPipe(stdout, stdin,
			sftp.MaxPacketUnchecked(maxPacket),
			sftp.UseConcurrentWrites(true),
			sftp.MaxConcurrentRequestsPerFile(requestsPerFile),
			// Fstat on an open handle is refused by some servers;
			// nothing here needs it.
			sftp.UseFstat(false),
		)
		ch <- dialed{cl, err}
	}()
	timer := time.NewTimer(openTimeout)
	defer timer.Stop()
	var d dialed
	select {
	case d = <-ch:
	case <-ctx.Done():
		s.kill(ClassCanceled, "stopped while opening the SFTP session")
		d = <-ch
	case <-timer.C:
		s.kill(ClassConnectBanner, fmt.Sprintf("the server did not open an SFTP session within %s", openTimeout))
		d = <-ch
	case <-s.done:
		d = <-ch
	}
	if d.err != nil {
		s.kill(ClassUnknown, "")
		<-s.done
		e := *s.failureOr(ClassRemoteConfig, "could not open an SFTP session: "+d.err.Error())
		s.mu.Lock()
		for _, l := range s.lines {
			if strings.Contains(l, "Session open refused by peer") || strings.Contains(l, "session request failed") {
				e.refusedSession = true
				e.Class = ClassLostConnection
				e.Message = l + " (the server allows fewer sessions than connections; lower connections)"
			}
		}
		s.mu.Unlock()
		return nil, &e
	}
	s.mu.Lock()
	s.client = d.client
	s.mu.Unlock()
	_, s.posixRename = d.client.HasExtension("posix-rename@openssh.com")
	_, s.statvfs = d.client.HasExtension("statvfs@openssh.com")
	if v, ok := d.client.HasExtension("fsync@openssh.com"); ok && v == "1" {
		s.fsync = true
	}
	return s, nil
}

// supervise reads ssh's stderr until it ends and reaps ssh (see reapSSH).
func (s *sftpConn) supervise(stderr *os.File, scrub *scrubber, onLine func(string)) {
	defer close(s.done)
	code := reapSSH(s.cmd, stderr, scrub, func(l string) {
		s.mu.Lock()
		s.lines = appendRecent(s.lines, l)
		s.mu.Unlock()
		if f := s.sink.Load(); f != nil && *f != nil {
			(*f)(l)
		} else if onLine != nil {
			onLine(l)
		}
	})
	s.mu.Lock()
	s.exit = code
	cl := s.client
	s.mu.Unlock()
	if cl != nil {
		_ = cl.Close()
	}
}

// reapSSH waits for the ssh of a session through the shared connection to
// exit, handing each line it prints on stderr, scrubbed, to line. Once ssh
// has exited, what it wrote is read for at most stderrDrain more: the master
// may hold the other end of the pipe open for as long as the channel lasts.
// Whatever is left of its process group goes with it. It returns ssh's exit
// code.
func reapSSH(cmd *exec.Cmd, stderr *os.File, scrub *scrubber, line func(string)) int {
	defer stderr.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 4096), 64<<10)
		for sc.Scan() {
			if l := scrub.scrub(strings.TrimRight(sc.Text(), "\r")); l != "" {
				line(l)
			}
		}
	}()
	var err error
	select {
	case err = <-exited:
		_ = stderr.SetReadDeadline(time.Now().Add(stderrDrain))
		<-read
	case <-read:
		err = <-exited
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	return exitCode(err)
}

// appendRecent appends l to the last recentLines lines.
func appendRecent(lines []string, l string) []string {
	if len(lines) == recentLines {
		copy(lines, lines[1:])
		lines = lines[:recentLines-1]
	}
	return append(lines, l)
}

// alive reports whether ssh is still running.
func (s *sftpConn) alive() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// kill ends the session (its whole process group) and records why, unless a
// reason was recorded already. msg "" records nothing.
func (s *sftpConn) kill(class Class, msg string) {
	s.mu.Lock()
	if s.failure == nil && msg != "" {
		s.failure = &Error{Class: class, Message: msg, ExitCode: -1}
	}
	s.mu.Unlock()
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
}

// close ends the session politely (stdin closed: ssh ends the channel) and
// waits for it, killing it when it takes too long.
func (s *sftpConn) close() {
	s.mu.Lock()
	cl := s.client
	s.mu.Unlock()
	if cl != nil {
		_ = cl.Close()
	}
	select {
	case <-s.done:
		return
	case <-time.After(killGrace):
	}
	s.kill(ClassCanceled, "")
	<-s.done
}

// failureOr is why the session ended: the engine's reason, ssh's messages
// classified, or class and msg when neither says anything.
func (s *sftpConn) failureOr(class Class, msg string) *Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failure != nil {
		return s.failure
	}
	if len(s.lines) > 0 {
		if e := classify(s.lines, s.exit); e.Class != ClassUnknown {
			return e
		}
	}
	return &Error{Class: class, Message: msg, ExitCode: s.exit}
}

// touch records an answer from the server.
func (s *sftpConn) touch() { s.activity.Store(time.Now().UnixNano()) }

// idleFor is how long requests have waited without any answer; 0 when
// nothing is pending.
func (s *sftpConn) idleFor(now time.Time) time.Duration {
	if s.pending.Load() == 0 {
		return 0
	}
	return now.Sub(time.Unix(0, s.activity.Load()))
}

// do runs one request, counted for the stall watchdog and timed for the
// session's round trip.
func (s *sftpConn) do(f func() error) error {
	s.pending.Add(1)
	start := time.Now()
	err := f()
	took := int64(max(time.Since(start), 1))
	s.pending.Add(-1)
	s.touch()
	for {
		old := s.rtt.Load()
		if old != 0 && old <= took || s.rtt.CompareAndSwap(old, took) {
			break
		}
	}
	return err
}

// minRTT is the shortest time a request of the session took: its round
// trip, or more. 0 before its first request.
func (s *sftpConn) minRTT() time.Duration { return time.Duration(s.rtt.Load()) }

// sessionArgs is the argv of an SFTP session's ssh through the shared
// connection at controlPath: it never prompts (BatchMode=yes comes before the
// operator's options, and the first value wins) and never connects by itself
// (ProxyCommand=/bin/false is used only when the master cannot serve it).
func sessionArgs(t *Target, controlPath string) []string {
	return append(muxArgs(t, controlPath), "-s", "--", sshHost(t.Host), "sftp")
}

// muxArgs are the options of every session through the shared connection at
// controlPath (see sessionArgs), without what the session runs.
func muxArgs(t *Target, controlPath string) []string {
	args := []string{"-p", strconv.Itoa(t.Port), "-o", "ProxyCommand=/bin/false"}
	opts := commonOptions(t, controlPath)
	for i := 0; i+1 < len(opts); i += 2 {
		if opts[i+1] == "BatchMode=no" {
			opts[i+1] = "BatchMode=yes"
		}
	}
	return append(args, opts...)
}

// isConnErr reports whether err says the session itself is gone, rather than
// the server refusing one request.
func isConnErr(err error) bool {
	var se *sftp.StatusError
	if errors.As(err, &se) {
		return se.Code == 6 || se.Code == 7 // SSH_FX_NO_CONNECTION, SSH_FX_CONNECTION_LOST
	}
	// os.ErrClosed: ssh exited and its pipes were closed as it was reaped.
	return errors.Is(err, sftp.ErrSSHFxConnectionLost) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrClosedPipe) ||
		errors.Is(err, os.ErrClosed)
}
