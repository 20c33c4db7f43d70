package transfer

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

const (
	// maxControlPath is the limit of a unix socket path (108 bytes with
	// the NUL), less a margin.
	maxControlPath = 100
	// masterIdle is how long an unused shared connection stays open.
	masterIdle = 5 * time.Minute
	// loginSlack is added to connect_timeout for the login phase: key
	// exchange, prompts and the server's answers.
	loginSlack = 20 * time.Second
	// deadlineBase and deadlineRate make the overall deadline of a batch:
	// a fixed part plus its bytes at a rate no real link falls below
	// without the stall watchdog noticing first.
	deadlineBase = 10 * time.Minute
	deadlineRate = 64 << 10 // bytes per second
)

// Options configures a Client.
type Options struct {
	Logger *slog.Logger
	// ControlDir is a private (0700) folder for the shared connection's
	// socket; "" makes the client create one of its own in the system's
	// temporary folder. Its path must be short: a socket path has at most
	// 107 bytes.
	ControlDir string
	// Atomic writes each file under a temporary name and renames it into
	// place when complete.
	Atomic bool
	// Overwrite lets a delivery replace a file of the same name on the
	// server. Without it an existing file is never replaced: the upload
	// fails with ClassRemoteExists.
	Overwrite bool
	// Preserve sets the remote file's mtime and mode from the local file
	// before the rename, where the server allows it.
	Preserve bool
	// ResumeDir is a private folder where the checkpoints of big uploads
	// are kept, so that an interrupted upload (a lost connection, a stop, a
	// crash) continues where the server's copy ends; "" sends every
	// interrupted file again from the start.
	ResumeDir string
	// Bandwidth caps the upload rate of all the client's sessions
	// together, in bytes per second; 0 is no limit.
	Bandwidth int64
	// Protocol is ProtocolAuto ("" too), ProtocolSFTP or ProtocolSCP:
	// SFTP, falling back to the legacy scp protocol on a connection whose
	// server has no SFTP subsystem; SFTP only; scp only.
	Protocol string
	// SSH is the OpenSSH client program; "" means "ssh" from PATH.
	SSH string
	// OnConnectionLine receives every line the shared connection's ssh
	// prints (scrubbed).
	OnConnectionLine func(line string)
}

// Observer receives what happens during an Upload, tied to item IDs. Any field
// may be nil. Calls come from one goroutine per Upload.
type Observer struct {
	Line     func(id, line string) // a line the client printed, scrubbed of secrets
	Progress func(id string, p Progress)
	Begin    func(id string) // the item's upload is starting
}

// Result is the outcome of one item.
type Result struct {
	ID string
	// Err is nil when the file is in place under its final name. Otherwise
	// it is a *Error with the failure's class.
	Err error
	// Began tells whether the item's upload started; false means it was
	// not attempted (the batch stopped earlier or never connected).
	Began    bool
	Start    time.Time
	End      time.Time
	ExitCode int
	// SHA256 is the hex sha256 of the bytes delivered, computed from the
	// same reads that sent them; "" unless Err is nil.
	SHA256 string
}

// Client sends files to one target. It keeps one authenticated connection
// (an OpenSSH ControlMaster supervised as a child on its own pty) that its
// transfers share, and runs at most Target.Connections transfers at a time.
type Client struct {
	t      Target
	opts   Options
	logger *slog.Logger
	scrub  *scrubber
	slots  chan int
	budget *budget
	// stripeRTT is the round trip from which big files are striped
	// (stripeMinRTT; tests on loopback lower it).
	stripeRTT time.Duration
	ownDir    string // a ControlDir of its own, removed by Close

	resumeWarn sync.Once // the warning that checkpoints cannot be written

	scp scpState // the protocol of each connection, and scp's sessions

	limiter *rate.Limiter // Options.Bandwidth; nil for none

	dirsMu sync.Mutex
	dirs   map[string]*dirState

	mu        sync.Mutex
	master    *master
	conns     []*sftpConn   // by slot
	dialMu    []sync.Mutex  // by slot: one dial at a time for a slot's session
	dialing   int           // SFTP sessions being opened
	dialEnded chan struct{} // closed (and replaced) whenever one is opened or fails
	idle      *time.Timer
	inflight  int
	closed    bool
}

// NewClient returns a Client for t. It starts nothing until the first call.
func NewClient(t Target, opts Options) (*Client, error) {
	if t.Host == "" || t.User == "" {
		return nil, errors.New("target needs a host and a user")
	}
	if t.Port == 0 {
		t.Port = 22
	}
	if t.Connections < 1 {
		t.Connections = 1
	}
	if opts.SSH == "" {
		opts.SSH = "ssh"
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ownDir := ""
	if opts.ControlDir == "" {
		// The SFTP sessions always go through a shared connection.
		dir, err := os.MkdirTemp("", "dropship-ctl-")
		if err != nil {
			return nil, fmt.Errorf("create a folder for the shared connection's socket: %w", err)
		}
		opts.ControlDir, ownDir = dir, dir
	}
	c := &Client{
		ownDir: ownDir,
		t:      t,
		opts:   opts,
		logger: logger.With("target", t.Name),
		scrub:  newScrubber(t.Password, t.Passphrase),
		slots:  make(chan int, t.Connections*UploadsPerSession),
		budget: newBudget(int64(t.Connections) * sessionBudget),

		stripeRTT: stripeMinRTT,
		dirs:      map[string]*dirState{},
		conns:     make([]*sftpConn, t.Connections),

		dialEnded: make(chan struct{}),
	}
	for range UploadsPerSession {
		for i := range t.Connections {
			c.slots <- i
		}
	}
	c.dialMu = make([]sync.Mutex, t.Connections)
	if opts.Bandwidth > 0 {
		// A burst of one chunk: the rate holds over any second.
		c.limiter = rate.NewLimiter(rate.Limit(opts.Bandwidth), chunkSize)
	}
	return c, nil
}

// throttle waits until n more bytes (at most chunkSize) may be sent under
// Options.Bandwidth.
func (c *Client) throttle(ctx context.Context, n int) error {
	if c.limiter == nil {
		return nil
	}
	return c.limiter.WaitN(ctx, n)
}

// Target returns the client's target (its secrets print as "[redacted]").
func (c *Client) Target() Target { return c.t }

// Check logs in, checks that remoteDir is a folder, and sends nothing.
func (c *Client) Check(ctx context.Context, remoteDir string) error {
	if c.speakSCP() {
		return c.checkViaSCP(ctx, remoteDir)
	}
	release, slot, err := c.acquire(ctx)
	if err != nil {
		return err
	}
	defer release()
	s, m, err := c.open(ctx, slot)
	if err != nil {
		if c.fallBack(m, err) {
			return c.checkSCP(ctx, remoteDir)
		}
		return err
	}
	c.choseSFTP(m)
	var fi os.FileInfo
	err = s.do(func() (err error) { fi, err = s.client.Stat(remoteDir); return })
	switch {
	case err != nil && (isConnErr(err) || !s.alive()):
		c.dropSession(slot, s)
		return s.failureOr(ClassLostConnection, "the SFTP session ended")
	case err != nil:
		return requestErr("stat remote_dir", remoteDir, err)
	case !fi.IsDir():
		return &Error{Class: ClassRemotePath, Message: fmt.Sprintf("remote_dir %q is not a folder", remoteDir), ExitCode: -1}
	}
	return nil
}

// Discard removes the temporary files that attempts of items may have left on
// the server: for a transfer that failed for good, or one whose file is gone.
// Best effort; it reports the first error.
func (c *Client) Discard(ctx context.Context, items []Item) error {
	if len(items) == 0 || !c.opts.Atomic {
		return nil
	}
	if c.speakSCP() {
		return c.discardViaSCP(ctx, items)
	}
	release, slot, err := c.acquire(ctx)
	if err != nil {
		return err
	}
	defer release()
	s, m, err := c.open(ctx, slot)
	if err != nil {
		if c.fallBack(m, err) {
			return c.discardSCP(ctx, items)
		}
		return err
	}
	var first error
	for _, it := range items {
		tmp := it.TempPath()
		err := s.do(func() error { return s.client.Remove(tmp) })
		if err == nil || errors.Is(err, os.ErrNotExist) {
			if ck := c.loadCheckpoint(it.RemotePath()); ck != nil && ck.ID == it.ID {
				c.dropCheckpoint(it.RemotePath())
			}
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) && first == nil {
			first = requestErr("remove", tmp, err)
		}
	}
	if !s.alive() {
		c.dropSession(slot, s)
	}
	return first
}

// renamed reports, for each item whose rename was sent without an answer,
// whether the server did it: its temporary file is gone and its final name
// is a regular file of its size. Unknown counts as not done.
func (c *Client) renamed(ctx context.Context, items []Item) ([]bool, error) {
	done := make([]bool, len(items))
	release, slot, err := c.acquire(ctx)
	if err != nil {
		return done, err
	}
	defer release()
	s, _, err := c.open(ctx, slot)
	if err != nil {
		return done, err
	}
	for k, it := range items {
		tmp, final := it.TempPath(), it.RemotePath()
		if err := s.do(func() error { _, err := s.client.Lstat(tmp); return err }); !errors.Is(err, os.ErrNotExist) {
			continue
		}
		var fi os.FileInfo
		err := s.do(func() (err error) { fi, err = s.client.Lstat(final); return })
		done[k] = err == nil && fi.Mode().IsRegular() && fi.Size() == it.Size
	}
	if !s.alive() {
		c.dropSession(slot, s)
	}
	return done, nil
}

// open returns a live SFTP session for slot and the shared connection it goes
// through, starting either when needed. A shared connection that died
// without the client noticing yet (its ssh was killed, say) cannot serve a
// new session: its socket no longer accepts, and the session's ssh, which
// never connects by itself, fails. That connection is then retired and a
// new one started, once: the failure is the dead connection's, not the
// server's.
func (c *Client) open(ctx context.Context, slot int) (*sftpConn, *master, error) {
	for retried := false; ; retried = true {
		_, m, err := c.connection(ctx)
		if err != nil {
			return nil, m, err
		}
		s, err := c.session(ctx, slot, m)
		if err == nil {
			return s, m, nil
		}
		if retried || ctx.Err() != nil || sessionRefused(err) || m.serves() {
			return nil, m, err
		}
		c.logger.Debug("the shared connection no longer accepts sessions; starting a new one", "err", err)
		m.retire()
	}
}

// session returns the live SFTP session of slot, opening one through the
// shared connection m when there is none. A session of an earlier shared
// connection is not used: it ends with its connection.
func (c *Client) session(ctx context.Context, slot int, m *master) (*sftpConn, error) {
	// Uploads sharing the slot wait for one dial instead of each making
	// their own.
	c.dialMu[slot].Lock()
	locked := true
	defer func() {
		if locked {
			c.dialMu[slot].Unlock()
		}
	}()
	c.mu.Lock()
	s := c.conns[slot]
	c.mu.Unlock()
	if s != nil && s.alive() && s.master == m {
		return s, nil
	}
	if s != nil {
		c.dropSession(slot, s)
	}
	c.mu.Lock()
	c.dialing++
	c.mu.Unlock()
	s, err := dialSFTP(ctx, c, m.sock, c.opts.OnConnectionLine)
	c.mu.Lock()
	c.dialing--
	ended := c.dialEnded
	c.dialEnded = make(chan struct{})
	switch {
	case err == nil && c.closed:
		go s.close()
		err = &Error{Class: ClassCanceled, Message: "the client is closed", ExitCode: -1}
		s = nil
	case err == nil:
		s.master = m
		c.conns[slot] = s
	}
	c.mu.Unlock()
	close(ended)
	c.dialMu[slot].Unlock()
	locked = false
	if err == nil || !sessionRefused(err) {
		return s, err
	}
	// A server that allows fewer sessions than connections (its
	// MaxSessions) refuses the extra one: share a live session, once the
	// sessions being opened meanwhile are open.
	for {
		c.mu.Lock()
		shared := c.liveSessionLocked(m)
		busy := c.dialing > 0
		ended := c.dialEnded
		c.mu.Unlock()
		if shared != nil {
			c.logger.Debug("the server refused another SFTP session; sharing one", "err", err)
			return shared, nil
		}
		if !busy {
			return nil, err
		}
		select {
		case <-ended:
		case <-ctx.Done():
			return nil, err
		}
	}
}

// liveSessionLocked is any live SFTP session of the client through m, or
// nil. Called with c.mu.
func (c *Client) liveSessionLocked(m *master) *sftpConn {
	for _, s := range c.conns {
		if s != nil && s.alive() && s.master == m {
			return s
		}
	}
	return nil
}

// sessionRefused says whether err is the server refusing one more session on
// the shared connection ("Session open refused by peer").
func sessionRefused(err error) bool {
	var te *Error
	return errors.As(err, &te) && te.refusedSession
}

// dropSession forgets slot's session s (it ended).
func (c *Client) dropSession(slot int, s *sftpConn) {
	c.mu.Lock()
	if c.conns[slot] == s {
		c.conns[slot] = nil
	}
	c.mu.Unlock()
	go s.close()
}

// remoteDirs checks once that remoteDir exists, and creates the folders
// between it and dir that are missing. Folders are created once per client,
// by whichever file needs them first; files that need the same folder wait
// for it.
func (c *Client) remoteDirs(s *sftpConn, remoteDir, dir string) error {
	if err := c.dir(s, remoteDir, false); err != nil {
		return err
	}
	if dir == path.Clean(remoteDir) {
		return nil
	}
	rel := strings.TrimPrefix(dir, path.Clean(remoteDir)+"/")
	if path.Clean(remoteDir) == "." {
		rel = dir
	}
	cur := path.Clean(remoteDir)
	for _, name := range strings.Split(rel, "/") {
		cur = path.Join(cur, name)
		if err := c.dir(s, cur, true); err != nil {
			return err
		}
	}
	return nil
}

// dir makes sure p is a folder on the server, creating it when create.
func (c *Client) dir(s *sftpConn, p string, create bool) error {
	c.dirsMu.Lock()
	d := c.dirs[p]
	if d == nil {
		d = &dirState{}
		c.dirs[p] = d
	}
	c.dirsMu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ok {
		return nil
	}
	var fi os.FileInfo
	err := s.do(func() (err error) { fi, err = s.client.Stat(p); return })
	if err == nil && !fi.IsDir() {
		return &Error{Class: ClassRemotePath, Message: fmt.Sprintf("%q on the server is not a folder", p), ExitCode: -1}
	}
	if err != nil && errors.Is(err, os.ErrNotExist) && create {
		err = s.do(func() error { return s.client.Mkdir(p) })
		if err != nil {
			// Made meanwhile by someone else?
			if s.do(func() (e error) { fi, e = s.client.Stat(p); return }) == nil && fi.IsDir() {
				err = nil
			}
		}
	}
	if err != nil {
		if isConnErr(err) || !s.alive() {
			return s.failureOr(ClassLostConnection, "the SFTP session ended")
		}
		if errors.Is(err, os.ErrNotExist) && !create {
			return &Error{Class: ClassRemotePath, Message: fmt.Sprintf("remote_dir %q does not exist on the server (check remote_dir)", p), ExitCode: -1}
		}
		return requestErr("mkdir", p, err)
	}
	d.ok = true
	return nil
}

// dirState is what the client knows of one remote folder.
type dirState struct {
	mu sync.Mutex
	ok bool
}

// UploadsPerSession is how many Upload calls share one SFTP session at a
// time: a caller that runs Connections × UploadsPerSession uploads keeps the
// sessions busy while one upload waits for the last files of its batch.
const UploadsPerSession = 4

// acquire takes one of the target's upload slots: the index of the SFTP
// session to use (UploadsPerSession uploads share each).
func (c *Client) acquire(ctx context.Context) (func(), int, error) {
	var slot int
	select {
	case slot = <-c.slots:
	case <-ctx.Done():
		return nil, 0, &Error{Class: ClassCanceled, Message: "stopped while waiting for a free connection", ExitCode: -1}
	}
	c.mu.Lock()
	c.inflight++
	if c.idle != nil {
		c.idle.Stop()
	}
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		c.inflight--
		if c.inflight == 0 && c.master != nil && !c.closed {
			m := c.master
			c.idle = time.AfterFunc(masterIdle, func() { c.stopIdle(m) })
		}
		c.mu.Unlock()
		c.slots <- slot
	}, slot, nil
}

func (c *Client) stopIdle(m *master) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.master == m && c.inflight == 0 {
		c.master = nil
		c.closeSessions()
		m.stop()
	}
}

// connection returns the socket of a live shared connection, starting one
// when there is none. A failure to log in is
// returned as is: transfers do not try their own connection, which would
// answer the same refused password again.
func (c *Client) connection(ctx context.Context) (string, *master, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return "", nil, &Error{Class: ClassCanceled, Message: "the client is closed", ExitCode: -1}
	}
	m := c.master
	if m != nil && !m.alive() {
		m = nil
	}
	if m == nil {
		sock, err := c.controlPath()
		if err != nil {
			c.mu.Unlock()
			return "", nil, err
		}
		m = startMaster(c, sock)
		c.master = m
	}
	c.mu.Unlock()
	return m.sock, m, m.wait(ctx)
}

// controlPath is the socket path of this target's shared connection.
func (c *Client) controlPath() (string, error) {
	h := fnv.New32a()
	_, _ = io.WriteString(h, c.t.Name)
	sock := filepath.Join(c.opts.ControlDir, fmt.Sprintf("m%08x", h.Sum32()))
	if len(sock) > maxControlPath {
		return "", &Error{Class: ClassUnknown, Message: fmt.Sprintf("control socket path %q is longer than %d bytes; use a shorter state_dir", sock, maxControlPath), ExitCode: -1}
	}
	return sock, nil
}

// Close stops the shared connection and waits for it. It is idempotent.
// Uploads still running are not interrupted: cancel their contexts.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	m := c.master
	c.master = nil
	if c.idle != nil {
		c.idle.Stop()
	}
	c.closeSessions()
	c.mu.Unlock()
	if m != nil {
		m.stop()
	}
	if c.ownDir != "" {
		_ = os.RemoveAll(c.ownDir)
	}
	return nil
}

// closeSessions ends every SFTP session. Called with c.mu.
func (c *Client) closeSessions() {
	for i, s := range c.conns {
		if s != nil {
			c.conns[i] = nil
			go s.close()
		}
	}
}

// master is one run of the shared connection's ssh.
type master struct {
	sock   string
	ready  chan struct{} // closed when the socket accepts clients
	done   chan struct{} // closed when ssh exited
	cancel context.CancelFunc
	err    error // why it ended; set before done is closed
}

// startMaster starts `ssh -N` with ControlMaster=yes in the background.
func startMaster(c *Client, sock string) *master {
	ctx, cancel := context.WithCancel(context.Background())
	m := &master{sock: sock, ready: make(chan struct{}), done: make(chan struct{}), cancel: cancel}
	// A socket left by a killed master would make ssh disable
	// multiplexing, and look ready to us.
	_ = os.Remove(sock)
	authenticated := make(chan struct{})
	var once sync.Once
	go func() {
		defer close(m.done)
		res, err := runSession(ctx, sessionSpec{
			prog:         c.opts.SSH,
			args:         masterArgs(&c.t, sock),
			loginTimeout: c.t.ConnectTimeout + loginSlack,
			target:       &c.t,
			scrub:        c.scrub,
			logger:       c.logger,
			onLogin:      func() { once.Do(func() { close(authenticated) }) },
			onLine: func(line string) {
				if c.opts.OnConnectionLine != nil {
					c.opts.OnConnectionLine(line)
				}
			},
		})
		switch {
		case err != nil:
			m.err = &Error{Class: ClassUnknown, Message: "shared connection: " + err.Error(), ExitCode: -1}
		case res.err != nil:
			m.err = res.err
		default:
			m.err = res.failure()
		}
		if ClassOf(m.err) == ClassCanceled {
			c.logger.Debug("shared connection closed")
		} else {
			c.logger.Info("shared connection ended", "reason", m.err)
		}
	}()
	go func() {
		select {
		case <-authenticated:
		case <-m.done:
			return
		}
		// ssh opens the socket right after authentication.
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			if fi, err := os.Stat(sock); err == nil && fi.Mode()&os.ModeSocket != 0 {
				close(m.ready)
				return
			}
			select {
			case <-m.done:
				return
			case <-tick.C:
			}
		}
	}()
	return m
}

// wait blocks until the master is ready, has failed, or ctx ends.
func (m *master) wait(ctx context.Context) error {
	select {
	case <-m.ready:
		return nil
	case <-m.done:
		return m.err
	case <-ctx.Done():
		return &Error{Class: ClassCanceled, Message: "stopped while connecting", ExitCode: -1}
	}
}

// serves reports whether the master still accepts clients on its socket.
func (m *master) serves() bool {
	if !m.alive() {
		return false
	}
	conn, err := net.DialTimeout("unix", m.sock, time.Second)
	if err != nil {
		return false
	}
	_ = conn.Close()
	return true
}

// retire ends a master that no longer serves and waits for it, leaving its
// socket path to the next master (which removes what is left there).
func (m *master) retire() {
	m.cancel()
	<-m.done
}

func (m *master) alive() bool {
	select {
	case <-m.done:
		return false
	default:
		return true
	}
}

// stop ends the master and waits for it.
func (m *master) stop() {
	m.cancel()
	<-m.done
	_ = os.Remove(m.sock)
}
