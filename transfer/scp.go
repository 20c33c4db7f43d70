package transfer

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The legacy scp protocol, for servers without an SFTP subsystem (dropbear on
// embedded boxes, appliances, chrooted scp-only accounts).
//
// dropship speaks the sending side of the protocol itself, over an exec
// session of the target's shared connection (`ssh … -- host 'scp -t -- …'`,
// with the same never-prompting options as the SFTP sessions), several
// sessions at once: a file of its own per session, or small files in batches
// (see scp_batch.go). It does not run the scp program
// locally: the file's bytes are read once, from the checked descriptor (with
// pread), hashed and written in the same pass, exactly as over SFTP; progress
// counts the bytes handed to ssh and the stall watchdog watches them. (Driving
// `scp -O` instead would need the checked descriptor passed as /dev/fd/3,
// and a second read of the file for its sha256.) A file that changed while it
// was sent is refused at the end with a fatal answer of our own ("\x02…"): the
// remote scp exits, and the command line removes what it wrote.
//
// What a session says, per file (every line ends in "\n"; each answer from
// the remote scp is one byte, 0 for ok, or 1 (error) or 2 (fatal) followed by
// a message line):
//
//	remote: 0                          ready
//	local:  T<mtime> 0 <atime> 0       with preserve only; answer
//	local:  C0644 <size> <name>        answer (an open error: 1 "scp: …")
//	local:  <size bytes> 0             answer (a write error: 1 "scp: …: No space left on device")
//	local:  EOF                        the remote scp exits (status 0 when all went well)
//
// (The T and C lines go out before the "ready" answer is read, saving a round
// trip; the file's bytes only once the C line was accepted.)
//
// The remote command line is run by the remote user's shell, so every path in
// it is quoted for a POSIX shell ('…' with ' written as '\''): any byte but
// NUL, a newline included, arrives as it is, and nothing in a name is ever
// expanded or executed. Where the account has a POSIX shell, the same command
// line creates subfolders (mkdir -p) and, with atomic = true, writes the file
// under its temporary name and renames it into place with mv -f (overwrite =
// true) or ln, which never replaces a file (overwrite = false). Where it has
// none (rssh, scponly: only scp commands are allowed) or a shell that is not
// POSIX (csh, fish), only the scp command is sent, the name travels in the
// protocol instead (so it may not hold a newline), and delivery cannot be
// atomic: that needs atomic = false, and the client says so.

// The values of Options.Protocol.
const (
	ProtocolAuto = "auto" // SFTP, or scp on a connection whose server has no SFTP subsystem
	ProtocolSFTP = "sftp" // SFTP only
	ProtocolSCP  = "scp"  // the legacy scp protocol only
)

const (
	// scpMaxSessions bounds the exec sessions a client runs at once over
	// its shared connection: below OpenSSH's default MaxSessions (10), with
	// room for a check or a clean-up.
	scpMaxSessions = 8
	// scpWriteSize is how much is handed to ssh at a time: the unit of
	// progress and of the stall watchdog's activity.
	scpWriteSize = 32 << 10
	// scpRefusedRetries is how often a file whose session the server
	// refused (its MaxSessions) is tried again, once another session ended
	// (see refusedWait): sessions that just ended may still count at the
	// server for a moment.
	scpRefusedRetries = 10
	// shellProbe is the command that tells a POSIX shell: only one expands
	// $((…)) arithmetic (csh and fish refuse it, rssh and scponly refuse
	// any command but scp).
	shellProbe   = "echo dropship-sh-$((6*7))"
	shellProbeOK = "dropship-sh-42"
)

// Exit statuses of the remote command line, one per step, so that a failure
// says which step failed.
const (
	exitCD       = 91 // remote_dir cannot be entered
	exitMkdir    = 92 // a subfolder cannot be created
	exitSCP      = 93 // the remote scp failed
	exitRename   = 94 // mv failed
	exitExists   = 95 // the final name exists and overwrite = false
	exitIsDir    = 96 // the final name is a folder
	exitLink     = 97 // ln failed, and not because the final name exists
	exitNotFound = 127
)

// scpState is what a client knows of its connections' protocols.
type scpState struct {
	once     sync.Once
	sessions chan struct{} // one token per exec session at once
	kept     int           // tokens kept for good: sessions the server refused
	mu       sync.Mutex
	conns    map[*master]*connProto
}

// connProto is what one shared connection speaks.
type connProto struct {
	proto string // ProtocolSFTP or ProtocolSCP; "" until known

	probeMu   sync.Mutex // held while auto learns whether scp answers
	scpProbed bool
	scpOK     bool

	shellMu  sync.Mutex // held while the shell is probed
	probed   bool
	shell    shellKind
	shellWhy string // why there is no POSIX shell, for messages
	shellErr *Error // the probe failed (lost connection, noisy shell)
}

type shellKind int

const (
	shellPOSIX shellKind = iota + 1
	shellNone            // no shell, or one that is not POSIX
)

func (c *Client) scpInit() *scpState {
	st := &c.scp
	st.once.Do(func() {
		st.sessions = make(chan struct{}, min(c.t.Connections*UploadsPerSession, scpMaxSessions))
		st.conns = map[*master]*connProto{}
	})
	return st
}

// proto returns the record of connection m, forgetting those of connections
// that ended.
func (c *Client) proto(m *master) *connProto {
	st := c.scpInit()
	st.mu.Lock()
	defer st.mu.Unlock()
	p := st.conns[m]
	if p == nil {
		for old := range st.conns {
			if !old.alive() {
				delete(st.conns, old)
			}
		}
		p = &connProto{}
		st.conns[m] = p
	}
	return p
}

// setProto records that m speaks proto, and reports whether that is news.
func (c *Client) setProto(m *master, proto string) bool {
	p := c.proto(m)
	st := &c.scp
	st.mu.Lock()
	defer st.mu.Unlock()
	if p.proto == proto {
		return false
	}
	p.proto = proto
	return true
}

// speakSCP says whether the client is to use scp without trying SFTP first:
// protocol = "scp", or "auto" and the live shared connection is known to
// have no SFTP subsystem.
func (c *Client) speakSCP() bool {
	switch c.opts.Protocol {
	case ProtocolSCP:
		return true
	case ProtocolSFTP:
		return false
	}
	c.mu.Lock()
	m := c.master
	c.mu.Unlock()
	if m == nil || !m.alive() {
		return false
	}
	p := c.proto(m)
	c.scp.mu.Lock()
	defer c.scp.mu.Unlock()
	return p.proto == ProtocolSCP
}

// fallBack says whether err, the failure to open an SFTP session through m,
// means the client is to use scp on m: protocol = "auto" and the server has
// no SFTP subsystem. It records the choice and logs it once per connection.
//
// A server without the subsystem refuses the request and closes the channel.
// Through the shared connection ssh then exits (status 255) without a word:
// OpenSSH's "subsystem request failed on channel 0" is printed only by an ssh
// with a connection of its own. So a session that ended that way, while the
// shared connection still serves, is told apart from a connection problem by
// the remote scp: when an exec session of the same connection runs `scp -t`,
// SFTP is what the server lacks.
//
// With protocol = "sftp" it never falls back, but the error then says that
// the server speaks scp and how to use it.
func (c *Client) fallBack(m *master, err error) bool {
	var te *Error
	if m == nil || !errors.As(err, &te) || te.Class != ClassRemoteConfig || te.refusedSession {
		return false
	}
	p := c.proto(m)
	p.probeMu.Lock()
	if !p.scpProbed {
		p.scpProbed = true
		p.scpOK = noSubsystem(err) || strings.Contains(te.Message, "could not open an SFTP session") && m.serves() && c.scpAnswers(m)
	}
	ok := p.scpOK
	p.probeMu.Unlock()
	if !ok {
		return false
	}
	if c.opts.Protocol != ProtocolAuto && c.opts.Protocol != "" {
		te.Message = fmt.Sprintf("the server has no SFTP subsystem but runs scp (%s); set protocol = \"auto\" or \"scp\" for target %q to use the legacy scp protocol", te.Message, c.t.Name)
		return false
	}
	if c.setProto(m, ProtocolSCP) {
		c.logger.Info("the server has no SFTP subsystem; using the legacy scp protocol")
	}
	return true
}

// scpAnswers says whether the remote scp answers an exec session through m
// (`scp -t -d -- .`, which receives nothing).
func (c *Client) scpAnswers(m *master) bool {
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	release := c.scpSession(ctx)
	if release == nil {
		return false
	}
	defer release()
	proc, err := c.scpExec(ctx, m, "scp -t -d -- .", nil)
	if err != nil {
		return false
	}
	defer proc.stop()
	defer proc.watch(ctx, 0, time.Now().Add(openTimeout))()
	msg, err := proc.ack()
	proc.closeStdin()
	proc.wait()
	return err == nil && msg == ""
}

// choseSFTP records that an SFTP session opened through m.
func (c *Client) choseSFTP(m *master) {
	if m != nil && c.setProto(m, ProtocolSFTP) && (c.opts.Protocol == ProtocolAuto || c.opts.Protocol == "") {
		c.logger.Info("the server offers SFTP; using it")
	}
}

// noSubsystem says whether err is the server refusing the SFTP subsystem.
func noSubsystem(err error) bool {
	var te *Error
	return errors.As(err, &te) && te.Class == ClassRemoteConfig && strings.Contains(te.Message, "subsystem request failed")
}

// Protocol is the protocol the client speaks on its current shared
// connection, with what it means for delivery: "sftp", "scp (…)", or "" when
// it has not connected (or not learned it yet).
func (c *Client) Protocol() string {
	c.mu.Lock()
	m := c.master
	c.mu.Unlock()
	if m == nil {
		return ""
	}
	p := c.proto(m)
	c.scp.mu.Lock()
	proto := p.proto
	c.scp.mu.Unlock()
	if proto != ProtocolSCP {
		return proto
	}
	p.shellMu.Lock()
	defer p.shellMu.Unlock()
	why := "chosen by protocol = \"scp\""
	if c.opts.Protocol != ProtocolSCP {
		why = "the server has no SFTP subsystem"
	}
	switch {
	case p.shell == shellPOSIX && c.opts.Atomic:
		return "scp (" + why + "; atomic: written under a temporary name and renamed with mv on the server)"
	case p.shell == shellPOSIX:
		return "scp (" + why + "; atomic = false: written directly under the final name)"
	case p.shell == shellNone:
		return "scp (" + why + "; " + p.shellWhy + ", so delivery cannot be atomic: written directly under the final name)"
	}
	return "scp (" + why + ")"
}

// scpConnection returns the live shared connection for scp, and its record
// with the shell probed.
func (c *Client) scpConnection(ctx context.Context) (*master, *connProto, error) {
	_, m, err := c.connection(ctx)
	if err != nil {
		return nil, nil, err
	}
	// With auto, the connection this replaces was found without SFTP
	// (the server is the same one): it is not asked again.
	c.setProto(m, ProtocolSCP)
	p := c.proto(m)
	p.shellMu.Lock()
	defer p.shellMu.Unlock()
	if !p.probed {
		c.probeShell(ctx, m, p)
		p.probed = true
	}
	if err := p.shellErr; err != nil {
		if !loginClass(err.Class) && err.Class != ClassRemoteConfig {
			// Probed again on the next call.
			p.probed, p.shellErr = false, nil
		}
		return nil, nil, err
	}
	return m, p, nil
}

// probeShell learns whether the account runs a POSIX shell.
func (c *Client) probeShell(ctx context.Context, m *master, p *connProto) {
	release := c.scpSession(ctx)
	if release == nil {
		p.shellErr = &Error{Class: ClassCanceled, Message: "stopped while waiting for a free session", ExitCode: -1}
		return
	}
	defer release()
	proc, err := c.scpExec(ctx, m, shellProbe, nil)
	if err != nil {
		p.shellErr = asError(err)
		return
	}
	proc.closeStdin()
	out, _ := io.ReadAll(io.LimitReader(proc.out, 4096))
	_, _ = io.Copy(io.Discard, proc.out)
	proc.wait()
	lines := strings.Split(strings.TrimRight(string(out), "\r\n"), "\n")
	last := strings.TrimRight(lines[len(lines)-1], "\r")
	switch {
	case proc.exit == 255:
		p.shellErr = proc.failureOr(ClassLostConnection, "the session ended before the server answered")
	case last == shellProbeOK && len(lines) == 1:
		p.shell = shellPOSIX
	case last == shellProbeOK:
		p.shellErr = &Error{Class: ClassRemoteConfig, Message: fmt.Sprintf("the remote user's shell prints %q for non-interactive sessions, which breaks the scp protocol (ensure the remote shell produces no output for non-interactive sessions)", c.scrub.scrub(strings.Join(lines[:len(lines)-1], "\n"))), ExitCode: -1}
	default:
		p.shell = shellNone
		said := lastLines(proc.recent(), 1)
		if strings.Contains(string(out), "dropship-sh-") {
			p.shellWhy = "the remote user's shell is not a POSIX shell (csh, fish?)"
		} else {
			p.shellWhy = fmt.Sprintf("the server runs no shell for this account, only scp (it answered %q)", said)
		}
		c.logger.Info("legacy scp without a shell on the server: no folders can be made by mkdir and no file renamed", "why", p.shellWhy)
	}
}

// scpShrink runs one session fewer from now on, keeping the caller's
// session token, after the server refused a session (its MaxSessions); false
// when one is all that is left.
func (c *Client) scpShrink() bool {
	st := c.scpInit()
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.kept+1 >= cap(st.sessions) {
		return false
	}
	st.kept++
	c.logger.Info("the server refused another session; the legacy scp protocol runs fewer at once", "sessions", cap(st.sessions)-st.kept)
	return true
}

// scpSession takes one of the client's exec sessions; nil when ctx ended
// first.
func (c *Client) scpSession(ctx context.Context) func() {
	st := c.scpInit()
	select {
	case st.sessions <- struct{}{}:
		return func() { <-st.sessions }
	case <-ctx.Done():
		return nil
	}
}

// checkViaSCP, discardViaSCP and uploadViaSCP are Check, Discard and Upload
// over scp, each in an upload slot of its own.
func (c *Client) checkViaSCP(ctx context.Context, remoteDir string) error {
	release, _, err := c.acquire(ctx)
	if err != nil {
		return err
	}
	defer release()
	return c.checkSCP(ctx, remoteDir)
}

func (c *Client) discardViaSCP(ctx context.Context, items []Item) error {
	release, _, err := c.acquire(ctx)
	if err != nil {
		return err
	}
	defer release()
	return c.discardSCP(ctx, items)
}

func (c *Client) uploadViaSCP(ctx context.Context, items []Item, results []Result, todo []int, obs Observer) []Result {
	release, _, err := c.acquire(ctx)
	if err != nil {
		return failAll(results, err)
	}
	defer release()
	return c.uploadSCP(ctx, items, results, todo, obs)
}

// checkSCP is Check over scp: the shell is probed, remote_dir must be a
// folder (the remote `scp -t -d` refuses anything else), and delivery must be
// possible as configured.
func (c *Client) checkSCP(ctx context.Context, remoteDir string) error {
	m, p, err := c.scpConnection(ctx)
	if err != nil {
		return err
	}
	if p.shell != shellPOSIX && c.opts.Atomic {
		return c.notAtomic(p)
	}
	rel := c.scpSession(ctx)
	if rel == nil {
		return &Error{Class: ClassCanceled, Message: "stopped while waiting for a free session", ExitCode: -1}
	}
	defer rel()
	proc, err := c.scpExec(ctx, m, "scp -t -d -- "+shQuote(remoteDir), nil)
	if err != nil {
		return err
	}
	defer proc.stop()
	defer proc.watch(ctx, c.t.StallTimeout, time.Now().Add(c.t.ConnectTimeout+loginSlack))()
	msg, err := proc.ack()
	if msg != "" {
		proc.closeStdin()
		proc.wait()
		return scpRefusal(msg, remoteDir, "remote_dir")
	}
	if err != nil {
		return proc.stepErr(nil, 0, err)
	}
	// EOF: the remote scp, which received nothing, exits.
	proc.closeStdin()
	proc.wait()
	return nil
}

// notAtomic is the failure of atomic delivery where there is no shell.
func (c *Client) notAtomic(p *connProto) *Error {
	return &Error{Class: ClassRemoteConfig, Message: fmt.Sprintf("target %q uses the legacy scp protocol and %s: a file cannot be renamed into place there, so atomic delivery is impossible; set atomic = false for this target (files are then written directly under their final names), or give the account a POSIX shell", c.t.Name, p.shellWhy), ExitCode: -1}
}

// discardSCP removes temporary files over scp's connection: rm needs a
// shell, and without one nothing was written under a temporary name.
func (c *Client) discardSCP(ctx context.Context, items []Item) error {
	if len(items) == 0 || !c.opts.Atomic {
		return nil
	}
	m, p, err := c.scpConnection(ctx)
	if err != nil {
		return err
	}
	if p.shell != shellPOSIX {
		return nil
	}
	rel := c.scpSession(ctx)
	if rel == nil {
		return &Error{Class: ClassCanceled, Message: "stopped while waiting for a free session", ExitCode: -1}
	}
	defer rel()
	for len(items) > 0 {
		var b strings.Builder
		b.WriteString("rm -f --")
		n := 0
		for ; n < len(items) && b.Len() < 32<<10; n++ {
			b.WriteString(" " + shQuote(shPath(items[n].TempPath())))
		}
		items = items[n:]
		proc, err := c.scpExec(ctx, m, b.String(), nil)
		if err != nil {
			return err
		}
		proc.closeStdin()
		_, _ = io.Copy(io.Discard, proc.out)
		proc.wait()
		if proc.exit != 0 {
			return proc.failureOr(ClassUnknown, fmt.Sprintf("rm exited with status %d", proc.exit))
		}
	}
	return nil
}

// uploadSCP is Upload over scp: each file in a session of its own, several at
// once.
func (c *Client) uploadSCP(ctx context.Context, items []Item, results []Result, todo []int, obs Observer) []Result {
	m, p, err := c.scpConnection(ctx)
	if err != nil {
		return failAll(results, err)
	}
	if p.shell != shellPOSIX && c.opts.Atomic {
		return failAll(results, c.notAtomic(p))
	}
	run := &scpRun{c: c, m: m, p: p, ctx: ctx, items: items, res: results, obs: obs}
	for _, i := range todo {
		run.meter = run.meter || items[i].Size >= meterThreshold
	}
	units := run.scpUnits(todo)
	next := make(chan []int)
	var wg sync.WaitGroup
	for range min(len(units), cap(c.scpInit().sessions)) {
		wg.Go(func() {
			for unit := range next {
				run.batch(unit)
			}
		})
	}
	for _, unit := range units {
		next <- unit
	}
	close(next)
	wg.Wait()
	for _, i := range todo {
		if r := &results[i]; r.Err == nil && r.SHA256 == "" {
			// Never reported delivered without its rename's answer.
			r.Err = &Error{Class: ClassUnknown, Message: "no outcome was recorded for this file", ExitCode: -1}
		}
	}
	return results
}

// scpRun is one Upload over scp at work.
type scpRun struct {
	c     *Client
	m     *master
	p     *connProto
	ctx   context.Context
	items []Item
	res   []Result
	meter bool

	obsMu   sync.Mutex
	obs     Observer
	stopped atomic.Pointer[Error] // set once no new file may begin
}

// one sends item i and records its result.
func (u *scpRun) one(i int) {
	r := &u.res[i]
	if e := u.stopped.Load(); e != nil {
		r.Err = e
		return
	}
	var sum string
	var err error
	for try := 0; ; try++ {
		release := u.c.scpSession(u.ctx)
		if release == nil {
			err = &Error{Class: ClassCanceled, Message: "stopped while waiting for a free session", ExitCode: -1}
			break
		}
		if r.Start.IsZero() {
			r.Start = time.Now()
		}
		sum, err = u.send(i, r)
		if !sessionRefused(err) || !u.c.scpShrink() {
			release()
		}
		if !sessionRefused(err) || try == scpRefusedRetries || u.ctx.Err() != nil {
			break
		}
		// The server allows fewer sessions than were running: one fewer
		// from now on (the token is kept), and this file waits for one
		// to end.
		time.Sleep(refusedWait(try))
	}
	r.End = time.Now()
	if err == nil {
		r.SHA256 = sum
		r.ExitCode = 0
		return
	}
	te := asError(err)
	r.Err = te
	if te.ExitCode >= 0 && r.ExitCode < 0 {
		r.ExitCode = te.ExitCode
	}
	if te.Class.TargetWide() || !u.m.alive() {
		// Every file would fail the same way: start no more.
		u.stopped.CompareAndSwap(nil, te)
	}
}

// send delivers item i in one exec session and returns the sha256 of the
// bytes sent.
func (u *scpRun) send(i int, r *Result) (string, error) {
	it := u.items[i]
	c := u.c
	before, err := statFile(it.File)
	if err != nil {
		return "", &Error{Class: ClassLocalFile, Message: fmt.Sprintf("stat %s: %v", it.Local, err), ExitCode: -1}
	}
	if !before.regular || before.size != it.Size {
		return "", localChanged(it, "it is no longer the file that was checked (size or type changed)")
	}
	plan := scpPlan{
		atomic:    c.opts.Atomic,
		overwrite: c.opts.Overwrite,
		preserve:  c.opts.Preserve,
		shell:     u.p.shell == shellPOSIX,
	}
	// In the same command line, so it costs nothing: a folder removed
	// on the server meanwhile is made again.
	plan.mkdir = plan.shell
	cmdline, records, err := scpCommand(it, plan)
	if err != nil {
		return "", err
	}
	var mode os.FileMode = 0o644
	var fi os.FileInfo
	if plan.preserve {
		if fi, err = it.File.Stat(); err == nil {
			mode = fi.Mode().Perm()
		}
	}
	proc, err := c.scpExec(u.ctx, u.m, cmdline, func(line string) { u.line(it.ID, line) })
	if err != nil {
		return "", err
	}
	defer proc.stop()
	stopWatch := proc.watch(u.ctx, c.t.StallTimeout, time.Now().Add(deadlineBase+time.Duration(it.Size/deadlineRate)*time.Second))
	defer stopWatch()

	// The file's times and header. Where there are no folder records
	// they go out at once, before the remote scp said it is ready, and
	// the answers are read after: a round trip less per file. Nothing
	// but these lines of dropship's own is ever sent before the remote
	// scp accepted the header: were the file's bytes sent ahead, a
	// refused header would leave the remote scp reading them as
	// records.
	var header []byte
	acks := 1
	if plan.preserve && fi != nil {
		t := fi.ModTime().Unix()
		header = fmt.Appendf(header, "T%d 0 %d 0\n", t, t)
		acks++
	}
	header = fmt.Appendf(header, "C%04o %d %s\n", mode, it.Size, scpName(it, plan))
	if len(records) == 0 {
		if e := proc.sendOr(&it, header); e != nil {
			return "", e
		}
	}
	if e := proc.expectOK(&it); e != nil {
		return "", e
	}
	if !r.Began {
		u.begin(i, r)
	}
	if len(records) > 0 {
		// Each folder only once the one before it was entered: a
		// refused one must not leave the rest to land elsewhere.
		for _, rec := range records {
			if e := proc.sendOr(&it, []byte(rec)); e != nil {
				return "", e
			}
			if e := proc.expectOK(&it); e != nil {
				return "", e
			}
		}
		if e := proc.sendOr(&it, header); e != nil {
			return "", e
		}
	}
	for range acks {
		if e := proc.expectOK(&it); e != nil {
			return "", e
		}
	}
	sum, werr := u.write(it, proc)
	if werr == nil {
		// Unchanged since it was checked, or it is not delivered.
		after, err := statFile(it.File)
		switch {
		case err != nil:
			werr = &Error{Class: ClassLocalFile, Message: fmt.Sprintf("stat %s: %v", it.Local, err), ExitCode: -1}
		case after != before:
			werr = localChanged(it, "it changed while it was being sent (size, mtime or ctime)")
		}
	}
	if werr != nil {
		// Refuse the file: the remote scp exits at once (status 1),
		// and the command line removes what it wrote.
		_ = proc.send([]byte("\x02dropship: the upload was abandoned\n"))
		proc.closeStdin()
		proc.wait()
		var te *Error
		if errors.As(werr, &te) && (te.Class == ClassLocalChanged || te.Class == ClassLocalFile) {
			return "", te
		}
		return "", proc.stepErr(&it, 0, nil)
	}
	if e := proc.sendOr(&it, []byte{0}); e != nil {
		return "", e
	}
	if e := proc.expectOK(&it); e != nil {
		return "", e
	}
	for range records {
		// Leave the folders the records entered.
		if e := proc.sendOr(&it, []byte("E\n")); e != nil {
			return "", e
		}
		if e := proc.expectOK(&it); e != nil {
			return "", e
		}
	}
	// EOF ends the remote scp; the rest of the command line renames.
	proc.closeStdin()
	_, _ = io.Copy(io.Discard, proc.out)
	proc.wait()
	if proc.exit != 0 {
		return "", proc.stepErr(&it, proc.exit, nil)
	}
	return sum, nil
}

// write sends the item's bytes, read from its descriptor in order and hashed
// in the same pass.
func (u *scpRun) write(it Item, proc *scpProc) (string, error) {
	h := sha256.New()
	start := time.Now()
	prog := u.progress(it, start)
	buf := getChunk(chunkSize)
	defer putChunk(buf)
	var sent int64
	for off := int64(0); off < it.Size; {
		n := min(int64(len(buf)), it.Size-off)
		b := buf[:n]
		if _, err := it.File.ReadAt(b, off); err != nil {
			if errors.Is(err, io.EOF) {
				return "", localChanged(it, "it became shorter while it was being sent")
			}
			return "", &Error{Class: ClassLocalFile, Message: fmt.Sprintf("read %s: %v", it.Local, err), ExitCode: -1}
		}
		h.Write(b)
		for len(b) > 0 {
			k := min(len(b), scpWriteSize)
			if err := u.c.throttle(u.ctx, k); err != nil {
				return "", &Error{Class: ClassCanceled, Message: "the upload was stopped", ExitCode: -1}
			}
			proc.touch() // waiting for the bandwidth limit is not a stall
			if err := proc.send(b[:k]); err != nil {
				return "", err
			}
			b = b[k:]
			sent += int64(k)
			prog(sent, false)
		}
		off += n
	}
	prog(sent, true)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// begin reports that item i's upload starts.
func (u *scpRun) begin(i int, r *Result) {
	r.Began = true
	if u.obs.Begin != nil {
		u.obsMu.Lock()
		u.obs.Begin(u.items[i].ID)
		u.obsMu.Unlock()
	}
}

func (u *scpRun) line(id, line string) {
	if u.obs.Line != nil {
		u.obsMu.Lock()
		u.obs.Line(id, line)
		u.obsMu.Unlock()
	}
}

// progress returns the function that reports the bytes of it handed to ssh
// (see progressReporter).
func (u *scpRun) progress(it Item, start time.Time) func(sent int64, final bool) {
	return progressReporter(it, start, u.obs.Progress, u.meter, &u.obsMu)
}

// scpPlan is how a file is delivered over scp.
type scpPlan struct {
	atomic, overwrite, preserve bool
	shell                       bool // the account has a POSIX shell
	mkdir                       bool // create the file's folder (with a shell)
}

// scpCommand is the remote command line that receives it, and the folder
// records ("D…" lines) to send before the file's own. With a shell the
// command line enters remote_dir, creates the folder, refuses an existing
// final name (overwrite = false) or a folder of that name, receives the file
// (under its temporary name when atomic) and renames it; each step that fails
// exits with its own status and removes the temporary file. Without one it is
// the remote scp alone, receiving into remote_dir, the folders below it made
// by records; a name then travels in a protocol line and may not hold a
// newline.
func scpCommand(it Item, p scpPlan) (string, []string, error) {
	scp := "scp -t"
	if p.preserve {
		scp += " -p"
	}
	if !p.shell {
		if p.atomic {
			return "", nil, errors.New("atomic delivery over scp needs a shell")
		}
		if !p.overwrite {
			return "", nil, &Error{Class: ClassRemoteConfig, Message: "overwrite = false cannot be honoured over the legacy scp protocol without a shell on the server (nothing can check for an existing file); set overwrite = true or give the account a POSIX shell", ExitCode: -1}
		}
		if strings.ContainsAny(it.Rel, "\n") {
			return "", nil, &Error{Class: ClassBadName, Message: fmt.Sprintf("%q holds a newline, which the legacy scp protocol cannot carry without a shell on the server", it.Rel), ExitCode: -1}
		}
		parts := strings.Split(it.Rel, "/")
		var records []string
		for _, d := range parts[:len(parts)-1] {
			records = append(records, "D0755 0 "+d+"\n")
		}
		if len(records) > 0 {
			scp += " -r"
		}
		return scp + " -- " + shQuote(it.RemoteDir), records, nil
	}
	dir := path.Dir(it.Rel)
	final := "./" + it.Rel
	tmp := "./" + path.Join(dir, path.Base(it.TempPath()))
	var b strings.Builder
	if rd := path.Clean(it.RemoteDir); rd != "." {
		fmt.Fprintf(&b, "cd -- %s || exit %d; ", shQuote(shPath(rd)), exitCD)
	}
	if p.mkdir && dir != "." {
		fmt.Fprintf(&b, "mkdir -p -- %s || exit %d; ", shQuote("./"+dir), exitMkdir)
	}
	f := shQuote(final)
	if !p.overwrite {
		fmt.Fprintf(&b, "if test -e %s || test -L %s; then exit %d; fi; ", f, f, exitExists)
	}
	fmt.Fprintf(&b, "if test -d %s; then exit %d; fi; ", f, exitIsDir)
	if !p.atomic {
		fmt.Fprintf(&b, "%s -- %s || exit %d", scp, f, exitSCP)
		return b.String(), nil, nil
	}
	t := shQuote(tmp)
	fmt.Fprintf(&b, "%s -- %s || { rm -f -- %s; exit %d; }; ", scp, t, t, exitSCP)
	if p.overwrite {
		fmt.Fprintf(&b, "mv -f -- %s %s || { rm -f -- %s; exit %d; }", t, f, t, exitRename)
		return b.String(), nil, nil
	}
	// link(2) never replaces a file: a final name that appeared
	// meanwhile is kept.
	fmt.Fprintf(&b, "ln -- %s %s || { rm -f -- %s; if test -e %s || test -L %s; then exit %d; fi; exit %d; }; rm -f -- %s; exit 0", t, f, t, f, f, exitExists, exitLink, t)
	return b.String(), nil, nil
}

// scpName is the name in the file's header: the final name's where the
// remote scp receives into a folder (no shell), a placeholder where it
// receives into the path on its command line.
func scpName(it Item, p scpPlan) string {
	if !p.shell {
		return path.Base(it.Rel)
	}
	return "dropship.part"
}

// shQuote quotes s for a POSIX shell: between single quotes every byte but
// NUL stands for itself, a newline included; a single quote ends the
// quoting, is written escaped with a backslash, and the quoting starts again.
func shQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// shPath is a remote path as a shell command takes it: a relative one starts
// with "./", so that it is never an option, and cd never looks it up in
// CDPATH.
func shPath(p string) string {
	if strings.HasPrefix(p, "/") || strings.HasPrefix(p, "./") {
		return p
	}
	return "./" + p
}

// scpProc is one exec session through the shared connection: ssh with the
// SFTP sessions' options and a remote command. Its stdin, stdout and stderr
// are pipes of its own (ssh hands them to the master, which holds them as
// long as the channel lasts).
type scpProc struct {
	cmd    *exec.Cmd
	stdin  *os.File
	stdout *os.File
	out    *bufio.Reader
	done   chan struct{} // ssh exited and its stderr was read

	activity atomic.Int64 // UnixNano of the last bytes moved

	mu      sync.Mutex
	lines   []string
	failure *Error
	exit    int
	closed  bool
}

// scpExec starts the remote command cmdline through the shared connection m.
// onLine receives ssh's stderr lines (scrubbed); nil sends them to the
// client's OnConnectionLine.
func (c *Client) scpExec(ctx context.Context, m *master, cmdline string, onLine func(string)) (*scpProc, error) {
	if onLine == nil {
		onLine = c.opts.OnConnectionLine
	}
	args := append(muxArgs(&c.t, m.sock), "--", sshHost(c.t.Host), cmdline)
	cmd := exec.Command(c.opts.SSH, args...)
	cmd.Env = childEnv()
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("scp session: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, fmt.Errorf("scp session: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("scp session: %w", err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	err = start(cmd)
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("start %s: %w", c.opts.SSH, err)
	}
	p := &scpProc{cmd: cmd, stdin: inW, stdout: outR, out: bufio.NewReader(outR), done: make(chan struct{})}
	p.touch()
	go p.supervise(errR, c.scrub, onLine)
	return p, nil
}

// supervise reads ssh's stderr and reaps ssh (see reapSSH).
func (p *scpProc) supervise(stderr *os.File, scrub *scrubber, onLine func(string)) {
	defer close(p.done)
	code := reapSSH(p.cmd, stderr, scrub, func(l string) {
		p.touch()
		p.mu.Lock()
		p.lines = appendRecent(p.lines, l)
		p.mu.Unlock()
		if onLine != nil {
			onLine(l)
		}
	})
	p.mu.Lock()
	p.exit = code
	p.mu.Unlock()
	// The master may hold the other end of stdout for a while yet.
	_ = p.stdout.SetReadDeadline(time.Now().Add(stderrDrain))
}

func (p *scpProc) touch() { p.activity.Store(time.Now().UnixNano()) }

// send writes b to the remote command's stdin.
func (p *scpProc) send(b []byte) error {
	_, err := p.stdin.Write(b)
	if err == nil {
		p.touch()
	}
	return err
}

// ack reads one answer of the remote scp: "" for ok, or its message. err is
// set when the session ended before an answer (or the answer was not one).
func (p *scpProc) ack() (string, error) {
	b, err := p.out.ReadByte()
	if err != nil {
		return "", err
	}
	p.touch()
	if b == 0 {
		return "", nil
	}
	line, err := readLine(p.out, maxAnswer)
	line = strings.TrimRight(line, "\r\n")
	if b != 1 && b != 2 {
		// Not the remote scp: text a shell printed first.
		return "", &Error{Class: ClassRemoteConfig, Message: fmt.Sprintf("the server answered %q instead of the scp protocol (ensure the remote shell produces no output for non-interactive sessions)", string(b)+line), ExitCode: -1}
	}
	if err != nil && line == "" {
		return "", err
	}
	if line == "" {
		line = "scp: error"
	}
	return line, nil
}

// maxAnswer bounds the message line of an answer of the remote scp (its own
// are a path and an error text).
const maxAnswer = 4096

// readLine reads up to and including "\n", at most max bytes.
func readLine(r *bufio.Reader, max int) (string, error) {
	var b []byte
	for len(b) < max {
		c, err := r.ReadByte()
		if err != nil {
			return string(b), err
		}
		b = append(b, c)
		if c == '\n' {
			break
		}
	}
	return string(b), nil
}

// closeStdin sends EOF to the remote command.
func (p *scpProc) closeStdin() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		_ = p.stdin.Close()
	}
}

// wait waits for ssh to exit and its output to be read.
func (p *scpProc) wait() { <-p.done }

// kill ends the session, recording why (unless a reason was recorded).
func (p *scpProc) kill(class Class, msg string) {
	p.mu.Lock()
	if p.failure == nil && msg != "" {
		p.failure = &Error{Class: class, Message: msg, ExitCode: -1}
	}
	p.mu.Unlock()
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	p.closeStdin()
	_ = p.stdout.SetReadDeadline(time.Now())
}

// stop ends the session if it still runs and releases its pipes.
func (p *scpProc) stop() {
	select {
	case <-p.done:
	default:
		p.kill(ClassCanceled, "")
		<-p.done
	}
	p.closeStdin()
	_ = p.stdout.Close()
}

// watch kills the session when ctx ends, the deadline passes, or nothing
// moved for stall (0: no limit). The returned function stops it.
func (p *scpProc) watch(ctx context.Context, stall time.Duration, deadline time.Time) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	tick := time.Second
	if stall > 0 && stall/4 < tick {
		tick = max(stall/4, 10*time.Millisecond)
	}
	go func() {
		defer close(done)
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-p.done:
				return
			case <-ctx.Done():
				p.kill(ClassCanceled, "the transfer was stopped: "+context.Cause(ctx).Error())
				return
			case now := <-t.C:
				if now.After(deadline) {
					p.kill(ClassStalled, "the overall deadline passed")
					return
				}
				if stall > 0 && now.Sub(time.Unix(0, p.activity.Load())) > stall {
					p.kill(ClassStalled, fmt.Sprintf("no answer from the server for %s", stall))
					return
				}
			}
		}
	}()
	return func() {
		close(stop)
		<-done
	}
}

func (p *scpProc) recent() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// failureOr is why the session failed: the engine's reason, ssh's messages
// classified, or class and msg.
func (p *scpProc) failureOr(class Class, msg string) *Error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failure != nil {
		return p.failure
	}
	for _, l := range p.lines {
		if strings.Contains(l, "Session open refused by peer") || strings.Contains(l, "session request failed") {
			return &Error{Class: ClassLostConnection, Message: l + " (the server allows fewer sessions than dropship opened; lower connections)", ExitCode: p.exit, refusedSession: true}
		}
	}
	if len(p.lines) > 0 {
		if e := classify(p.lines, p.exit); e.Class != ClassUnknown {
			return e
		}
	}
	return &Error{Class: class, Message: msg, ExitCode: p.exit}
}

// expectOK reads one answer of the remote scp; nil when it is ok. it is the
// file being sent (nil for none).
func (p *scpProc) expectOK(it *Item) *Error {
	msg, err := p.ack()
	if msg != "" {
		// The remote scp goes on reading records: EOF ends it.
		p.closeStdin()
		p.wait()
		where := ""
		if it != nil {
			where = it.RemotePath()
		}
		return scpRefusal(msg, where, "")
	}
	if err != nil {
		return p.stepErr(it, 0, err)
	}
	return nil
}

// sendOr writes b to the remote command, or returns why the session ended.
func (p *scpProc) sendOr(it *Item, b []byte) *Error {
	if err := p.send(b); err != nil {
		return p.stepErr(it, 0, err)
	}
	return nil
}

// stepErr is the failure of a session: cause when it is an *Error (the
// server answered something that is not the scp protocol), the step of the
// command line that failed (exit, or ssh's own exit status when 0), or why
// the session ended.
func (p *scpProc) stepErr(it *Item, exit int, cause error) *Error {
	p.closeStdin()
	p.wait()
	var te *Error
	if errors.As(cause, &te) {
		return te
	}
	p.mu.Lock()
	own := p.failure
	if exit == 0 {
		exit = p.exit
	}
	lines := append([]string(nil), p.lines...)
	p.mu.Unlock()
	if own != nil {
		return own
	}
	said := lastLines(lines, 2)
	if e := stepClass(exit, it, said); e != nil {
		return e
	}
	if exit == 255 || exit < 0 {
		return p.failureOr(ClassLostConnection, "the session ended: "+said)
	}
	if e := p.failureOr(ClassUnknown, ""); e.Class != ClassUnknown {
		return e
	}
	return &Error{Class: ClassUnknown, Message: fmt.Sprintf("the remote scp command exited with status %d (the server said: %s)", exit, said), ExitCode: exit}
}

// stepClass is the failure of the step of a command line that exited with
// exit (for file it, nil for none), or nil when exit names no step; said is
// what the server printed.
func stepClass(exit int, it *Item, said string) *Error {
	final, rd := "", ""
	if it != nil {
		final, rd = it.RemotePath(), it.RemoteDir
	}
	e := func(c Class, format string, args ...any) *Error {
		return &Error{Class: c, Message: fmt.Sprintf(format, args...) + " (the server said: " + said + ")", ExitCode: exit}
	}
	switch exit {
	case exitCD:
		if strings.Contains(said, "ermission denied") {
			return e(ClassRemotePermission, "remote_dir %q cannot be entered on the server (check its permissions for the target's user)", rd)
		}
		return e(ClassRemotePath, "remote_dir %q does not exist on the server (check remote_dir)", rd)
	case exitMkdir:
		if c := errnoClass(said); c == ClassRemotePermission {
			return e(c, "the folder of %q cannot be created on the server: Permission denied (check the permissions of remote_dir for the target's user)", final)
		}
		return e(ClassRemotePath, "the folder of %q cannot be created on the server", final)
	case exitExists:
		return &Error{Class: ClassRemoteExists, Message: fmt.Sprintf("%q already exists on the server and overwrite = false; it was not replaced", final), ExitCode: exit}
	case exitIsDir:
		// This file's problem, not the target's.
		return &Error{Class: ClassRemoteExists, Message: fmt.Sprintf("%q on the server is a folder; nothing was sent", final), ExitCode: exit}
	case exitRename:
		if c := errnoClass(said); c != ClassUnknown {
			return e(c, "mv to %q failed on the server", final)
		}
		return e(ClassUnknown, "mv to %q failed on the server", final)
	case exitLink:
		return e(ClassRemoteConfig, "ln to %q failed on the server: overwrite = false over the legacy scp protocol needs hard links in remote_dir", final)
	case exitSCP, exitNotFound:
		if strings.Contains(said, "not found") || exit == exitNotFound {
			return e(ClassRemoteConfig, "the server has no scp program for the legacy scp protocol (install scp there, or use a server with SFTP)")
		}
	}
	return nil
}

// scpRefusal classifies a message of the remote scp ("scp: <path>: <error>")
// about remote path p (key names the config key, when the path is one).
func scpRefusal(msg, p, key string) *Error {
	what := fmt.Sprintf("%q", p)
	if key != "" {
		what = key + " " + what
	}
	c := errnoClass(msg)
	hint := ""
	switch c {
	case ClassRemotePath:
		hint = " (check remote_dir)"
	case ClassRemotePermission:
		hint = " (the server refused the write; check the permissions of remote_dir for the target's user)"
	case ClassRemoteFull:
		hint = " (the server failed the write: full disk or quota)"
	}
	if strings.Contains(msg, "protocol error") || strings.Contains(msg, "ambiguous target") {
		c, hint = ClassRemoteConfig, " (the server's scp does not speak the protocol as expected)"
	}
	return &Error{Class: c, Message: fmt.Sprintf("%s: the server's scp said %q%s", what, msg, hint), ExitCode: -1}
}

// errnoClass maps an error text of the remote system (strerror) to a class.
func errnoClass(msg string) Class {
	switch {
	case strings.Contains(msg, "No space left on device") || strings.Contains(msg, "Disk quota exceeded") || strings.Contains(msg, "File too large"):
		return ClassRemoteFull
	case strings.Contains(msg, "Permission denied") || strings.Contains(msg, "Read-only file system") || strings.Contains(msg, "Operation not permitted"):
		return ClassRemotePermission
	case strings.Contains(msg, "Is a directory"):
		// A folder in the file's place: this file's problem.
		return ClassRemoteExists
	case strings.Contains(msg, "No such file or directory") || strings.Contains(msg, "Not a directory") || strings.Contains(msg, "File exists"):
		return ClassRemotePath
	}
	return ClassUnknown
}

// asError is err as an *Error.
func asError(err error) *Error {
	var te *Error
	if errors.As(err, &te) {
		return te
	}
	return &Error{Class: ClassUnknown, Message: err.Error(), ExitCode: -1}
}

// refusedWait is the pause before try+1 of a session the server refused:
// 20 ms doubling, at most half a second (about 3.5 s over every retry).
func refusedWait(try int) time.Duration {
	return min(time.Duration(20<<min(try, 8))*time.Millisecond, 500*time.Millisecond)
}
