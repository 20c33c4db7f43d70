package transfer

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
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
	// socket; "" turns connection sharing off. Its path must be short: a
	// socket path has at most 107 bytes.
	ControlDir string
	// Atomic writes each file under a temporary name and renames it into
	// place when complete.
	Atomic bool
	// SSH and SFTP are the client programs; "" means "ssh" and "sftp" from
	// PATH.
	SSH, SFTP string
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
}

// Client sends files to one target. It keeps one authenticated connection
// (an OpenSSH ControlMaster supervised as a child on its own pty) that its
// transfers share, and runs at most Target.Connections transfers at a time.
type Client struct {
	t      Target
	opts   Options
	logger *slog.Logger
	scrub  *scrubber
	slots  chan struct{}

	mu       sync.Mutex
	master   *master
	idle     *time.Timer
	inflight int
	closed   bool
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
	if opts.SFTP == "" {
		opts.SFTP = "sftp"
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		t:      t,
		opts:   opts,
		logger: logger.With("target", t.Name),
		scrub:  newScrubber(t.Password, t.Passphrase),
		slots:  make(chan struct{}, t.Connections),
	}
	return c, nil
}

// Target returns the client's target (its secrets print as "[redacted]").
func (c *Client) Target() Target { return c.t }

// Upload sends items in one sftp session through the shared connection and
// returns one Result per item, in order. Items are independent: one that
// cannot be expressed safely fails alone with ClassBadName. After a failure
// the session stops; the failed item's temporary file is removed where
// possible, and later items come back with Began false.
func (c *Client) Upload(ctx context.Context, items []Item, obs Observer) []Result {
	results := make([]Result, len(items))
	for i, it := range items {
		results[i] = Result{ID: it.ID, ExitCode: -1}
	}
	p := buildPlan(items, c.opts.Atomic)
	for i, err := range p.rejected {
		results[i].Err = &Error{Class: ClassBadName, Message: err.Error(), ExitCode: -1}
	}
	if len(p.rejected) == len(items) {
		return results
	}

	release, err := c.acquire(ctx)
	if err != nil {
		return failAll(results, err)
	}
	defer release()
	sock, err := c.connection(ctx)
	if err != nil {
		return failAll(results, err)
	}

	tr := &tracker{plan: p}
	var total int64
	for _, it := range items {
		total += it.Size
	}
	cur := func() string {
		if i := tr.current(); i >= 0 {
			return items[i].ID
		}
		return items[0].ID
	}
	start := time.Now()
	res, err := runSession(ctx, sessionSpec{
		prog:         c.opts.SFTP,
		args:         sftpArgs(&c.t, sock),
		stdin:        strings.NewReader(p.script()),
		loginTimeout: c.t.ConnectTimeout + loginSlack,
		stallTimeout: c.t.StallTimeout,
		deadline:     start.Add(deadlineBase + time.Duration(total/deadlineRate)*time.Second),
		target:       &c.t,
		scrub:        c.scrub,
		logger:       c.logger,
		onLine: func(line string) {
			if cmd, ok := tr.echo(line); ok && cmd.item >= 0 && !results[cmd.item].Began {
				results[cmd.item].Began = true
				results[cmd.item].Start = time.Now()
				if obs.Begin != nil {
					obs.Begin(items[cmd.item].ID)
				}
			}
			if obs.Line != nil {
				obs.Line(cur(), line)
			}
		},
		onFrame: func(pr Progress, _ string) {
			if obs.Progress != nil && tr.current() >= 0 {
				obs.Progress(items[tr.current()].ID, pr)
			}
		},
	})
	end := time.Now()
	if err != nil {
		return failAll(results, &Error{Class: ClassUnknown, Message: err.Error(), ExitCode: -1})
	}
	done, failed := tr.outcome(res.exitCode)
	var sessionErr error
	if res.err != nil {
		sessionErr = res.err
	} else if res.exitCode != 0 {
		sessionErr = res.failure()
	}
	var leftovers []Item
	for i := range results {
		if results[i].Err != nil { // rejected
			continue
		}
		results[i].ExitCode = res.exitCode
		results[i].End = end
		if results[i].Start.IsZero() {
			results[i].Start = start
		}
		switch {
		case done[i]:
		case i == failed || (failed < 0 && !results[i].Began):
			results[i].Err = sessionErr
			if sessionErr == nil {
				results[i].Err = &Error{Class: ClassUnknown, Message: "sftp ended before this file was confirmed", ExitCode: res.exitCode}
			}
			if results[i].Began && c.opts.Atomic {
				leftovers = append(leftovers, items[i])
			}
		default:
			// Never began: it waits for the next batch, with the
			// reason the batch stopped.
			results[i].Err = sessionErr
			if results[i].Err == nil {
				results[i].Err = &Error{Class: ClassUnknown, Message: "sftp stopped before this file", ExitCode: res.exitCode}
			}
		}
	}
	// A canceled upload (the agent is stopping) returns at once: the
	// cleanup session could take up to its own login timeout, and the next
	// attempt overwrites the temporary file anyway.
	if len(leftovers) > 0 && ctx.Err() == nil {
		c.cleanup(sock, leftovers)
	}
	return results
}

// failAll gives every item that has no result yet the error err.
func failAll(results []Result, err error) []Result {
	for i := range results {
		if results[i].Err == nil {
			results[i].Err = err
		}
	}
	return results
}

// cleanup removes temporary files a failed attempt may have left, in a short
// session of its own. Best effort: a retry overwrites them anyway.
func (c *Client) cleanup(sock string, items []Item) {
	ctx, cancel := context.WithTimeout(context.Background(), c.t.ConnectTimeout+loginSlack)
	defer cancel()
	res, err := runSession(ctx, sessionSpec{
		prog:         c.opts.SFTP,
		args:         sftpArgs(&c.t, sock),
		stdin:        strings.NewReader(cleanupScript(items)),
		loginTimeout: c.t.ConnectTimeout + loginSlack,
		stallTimeout: c.t.StallTimeout,
		target:       &c.t,
		scrub:        c.scrub,
		logger:       c.logger,
	})
	if err != nil || res.err != nil || res.exitCode != 0 {
		c.logger.Warn("could not remove temporary files of a failed upload; the next attempt overwrites them", "files", len(items))
	}
}

// Check logs in, checks that remoteDir is a folder, and sends nothing.
func (c *Client) Check(ctx context.Context, remoteDir string) error {
	release, err := c.acquire(ctx)
	if err != nil {
		return err
	}
	defer release()
	sock, err := c.connection(ctx)
	if err != nil {
		return err
	}
	dir, err := sftpQuote(remoteJoin(remoteDir))
	if err != nil {
		return &Error{Class: ClassRemotePath, Message: "remote_dir " + err.Error(), ExitCode: -1}
	}
	res, err := runSession(ctx, sessionSpec{
		prog:         c.opts.SFTP,
		args:         sftpArgs(&c.t, sock),
		stdin:        strings.NewReader("cd " + dir + "\npwd\n"),
		loginTimeout: c.t.ConnectTimeout + loginSlack,
		stallTimeout: c.t.StallTimeout,
		target:       &c.t,
		scrub:        c.scrub,
		logger:       c.logger,
		onLine:       c.opts.OnConnectionLine,
	})
	if err != nil {
		return err
	}
	if res.err != nil {
		return res.err
	}
	if res.exitCode != 0 {
		return res.failure()
	}
	return nil
}

// acquire takes one of the target's connection slots.
func (c *Client) acquire(ctx context.Context) (func(), error) {
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, &Error{Class: ClassCanceled, Message: "stopped while waiting for a free connection", ExitCode: -1}
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
		<-c.slots
	}, nil
}

func (c *Client) stopIdle(m *master) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.master == m && c.inflight == 0 {
		c.master = nil
		m.stop()
	}
}

// connection returns the socket of a live shared connection, starting one
// when there is none, or "" when sharing is off. A failure to log in is
// returned as is: transfers do not try their own connection, which would
// answer the same refused password again.
func (c *Client) connection(ctx context.Context) (string, error) {
	if c.opts.ControlDir == "" {
		return "", nil
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return "", &Error{Class: ClassCanceled, Message: "the client is closed", ExitCode: -1}
	}
	m := c.master
	if m != nil && !m.alive() {
		m = nil
	}
	if m == nil {
		sock, err := c.controlPath()
		if err != nil {
			c.mu.Unlock()
			return "", err
		}
		m = startMaster(c, sock)
		c.master = m
	}
	c.mu.Unlock()
	return m.sock, m.wait(ctx)
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
	c.mu.Unlock()
	if m != nil {
		m.stop()
	}
	return nil
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
			onLine: func(line string) {
				if strings.HasPrefix(line, "Authenticated to ") {
					once.Do(func() { close(authenticated) })
				}
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
