package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/config"
	"github.com/dropship/dropship/internal/journal"
	"github.com/dropship/dropship/transfer"
	"github.com/dropship/dropship/watcher"
)

// Options are the parts of the agent that do not come from the config file.
type Options struct {
	Logger  *slog.Logger
	Version string
	// LogLevel, when set, is the level of Logger's handler: a reload sets
	// it from agent.log_level (without it, a changed log_level needs a
	// restart).
	LogLevel *slog.LevelVar
	// SSH and SFTP are the OpenSSH client programs; "" finds them in PATH.
	SSH, SFTP string
	// Notify receives the agent's service states for systemd: "READY=1",
	// "RELOADING=1", "STOPPING=1", "WATCHDOG=1", "STATUS=…". May be nil.
	Notify func(state string)
}

// Agent is the running daemon: watchers feed ready files into the journal,
// per-target workers send them, and lifecycle events leave through the
// journal's outbox.
type Agent struct {
	opts   Options
	logger *slog.Logger

	journal *journal.Journal
	emb     *events.Embedded
	bus     *events.Bus
	pub     *publisher
	ctl     *control
	metrics *metrics

	// stopWork ends the taking of new work; sendCtx, canceled after the
	// shutdown grace, stops transfers still running.
	workCtx    context.Context
	stopWork   context.CancelFunc
	sendCtx    context.Context
	cancelSend context.CancelFunc

	mu          sync.Mutex
	cfg         *config.Config
	subj        events.Subjects
	targets     map[string]*target
	watches     map[string]*watch
	sources     map[string]*source
	recs        map[string]*journal.Record // every journaled file, by key
	sending     map[string]bool            // keys with an upload running
	newer       map[string]watcher.File    // a newer version seen while sending
	recent      map[string]recentDelivery  // keys delivered lately, for the pieces warning
	postq       []string                   // keys waiting for post-processing (archive, delete, failed_dir)
	postFails   map[string]*postFailure    // keys whose post-processing failed, until it succeeds
	watchErrs   map[string]*watcher.Error  // last operational problem per watch
	writer      *journalWriter
	ctlDir      string
	publishLogs atomic.Bool // nats.publish_logs of the running configuration
	stream      streamHealth
	needCheck   atomic.Bool // (re)connected or reconfigured: check the stream before publishing
	writerDone  chan struct{}
	startedAt   time.Time
	workers     sync.WaitGroup
	retiring    sync.WaitGroup // replaced targets and watches being stopped
	services    sync.WaitGroup
	intake      chan intakeFile
	fatal       chan error
}

// New validates what it can without side effects; Run does the rest.
func New(cfg *config.Config, opts Options) (*Agent, error) {
	if cfg == nil {
		return nil, errors.New("no configuration")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	return &Agent{
		opts:      opts,
		logger:    opts.Logger.With(keyComponent, "agent"),
		cfg:       cfg,
		subj:      events.Subjects{Prefix: cfg.NATS.SubjectPrefix, Agent: cfg.Agent.Name},
		targets:   map[string]*target{},
		watches:   map[string]*watch{},
		sources:   map[string]*source{},
		recs:      map[string]*journal.Record{},
		sending:   map[string]bool{},
		newer:     map[string]watcher.File{},
		recent:    map[string]recentDelivery{},
		watchErrs: map[string]*watcher.Error{},
		postFails: map[string]*postFailure{},
		intake:    make(chan intakeFile, 1024),
		fatal:     make(chan error, 1),
	}, nil
}

// Run starts the agent and blocks until ctx ends (a graceful stop: running
// transfers get shutdown_grace to finish, then are stopped and stay queued)
// or a fatal error happens. A value on reload (SIGHUP) makes it read its
// config file again and apply it; an invalid file is refused and the running
// configuration kept.
func (a *Agent) Run(ctx context.Context, reload <-chan struct{}) (err error) {
	cfg := a.cfg
	if os.Geteuid() == 0 {
		a.logger.Warn("running as root: a packaged install runs as the dropship user; root is needed only to read files other users own")
	}
	if err := os.MkdirAll(cfg.Agent.StateDir, 0o700); err != nil {
		return fmt.Errorf("create state_dir: %w", err)
	}
	a.journal, err = journal.Open(filepath.Join(cfg.Agent.StateDir, "journal.db"))
	if err != nil {
		return err
	}
	defer a.journal.Close()
	transfer.PruneResume(filepath.Join(cfg.Agent.StateDir, "resume"))

	a.pub = newPublisher(a) // before the bus, whose reconnects poke it
	if err := a.startEvents(ctx); err != nil {
		return err
	}
	defer a.closeEvents()
	if err := nameTaken(a); err != nil {
		// Before a watch or a worker starts: nothing was taken.
		a.logger.Error("not starting: this agent's name is taken", keyErr, err)
		return err
	}

	a.metrics = newMetrics(a)
	if err := a.metrics.listen(cfg.Agent.MetricsListen); err != nil {
		return err
	}
	defer a.metrics.close()

	if err := a.resume(); err != nil {
		return err
	}

	a.workCtx, a.stopWork = context.WithCancel(context.Background())
	a.sendCtx, a.cancelSend = context.WithCancel(context.Background())
	defer a.cancelSend()
	defer a.stopWork()

	a.startedAt = time.Now()
	a.writer = newJournalWriter(a)
	writerDone := make(chan struct{})
	a.writerDone = writerDone
	a.services.Add(2)
	go func() { defer a.services.Done(); a.pub.run() }()
	go func() { defer a.services.Done(); a.writer.run(writerDone) }()

	a.mu.Lock()
	err = a.applyConfig(cfg)
	a.mu.Unlock()
	if err != nil {
		a.shutdownNow()
		return err
	}
	a.services.Add(1)
	go func() { defer a.services.Done(); a.intakeLoop() }()

	a.ctl, err = startControl(a)
	if err != nil {
		a.logger.Warn("control service not available", "err", err)
	}

	a.emitAgent(events.AgentStarted, "started", nil)
	a.notify("READY=1")
	a.logger.Info("agent started", "targets", len(cfg.Targets), "watches", len(cfg.Watches), "state_dir", cfg.Agent.StateDir)

	a.sweep() // post-processing left over from the last run
	watchdog := time.NewTicker(10 * time.Second)
	defer watchdog.Stop()
	// Post-processing that failed is due by its own backoff; the sweep
	// only looks.
	sweep := time.NewTicker(time.Second)
	defer sweep.Stop()
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-a.fatal:
			runErr = err
			break loop
		case <-reload:
			a.reloadFile()
		case <-watchdog.C:
			a.notify("WATCHDOG=1")
		case <-sweep.C:
			a.sweep()
		}
	}
	a.shutdown()
	return runErr
}

// shutdown stops taking work, gives running transfers shutdown_grace, then
// stops them (they stay queued), and stops every service.
func (a *Agent) shutdown() {
	a.notify("STOPPING=1")
	a.mu.Lock()
	grace := a.cfg.Agent.ShutdownGrace
	a.mu.Unlock()
	a.logger.Info("stopping: no new transfers; waiting for running ones", "grace", grace)
	a.emitAgent(events.AgentStopping, "stopping", nil)
	if a.ctl != nil {
		a.ctl.close()
	}
	a.mu.Lock()
	for _, w := range a.watches {
		w.close()
	}
	a.watches = map[string]*watch{}
	a.mu.Unlock()
	a.stopWork()
	a.wakeAll()

	stopBy := time.Now().Add(grace)
	done := make(chan struct{})
	go func() { a.workers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		a.logger.Warn("shutdown grace over: stopping running transfers; they stay queued")
		a.cancelSend()
		<-done
	}
	a.shutdownBy(stopBy)
}

// shutdownNow stops what is left at once (after a failed start).
func (a *Agent) shutdownNow() { a.shutdownBy(time.Now().Add(finalPublishWait)) }

// finalPublishWait bounds the last attempt to publish the outbox on a stop.
const finalPublishWait = 5 * time.Second

// shutdownBy stops what is left: targets' shared connections, intake and
// the publisher, after a last attempt to publish the outbox that ends by
// stopBy (the end of shutdown_grace) and takes at most finalPublishWait. It
// is not made when events cannot be stored (no connection, a stream
// problem): they stay in the outbox for the next start.
func (a *Agent) shutdownBy(stopBy time.Time) {
	if a.stopWork != nil {
		a.stopWork()
	}
	a.mu.Lock()
	targets := make([]*target, 0, len(a.targets))
	for _, t := range a.targets {
		targets = append(targets, t)
	}
	sources := make([]*source, 0, len(a.sources))
	for _, s := range a.sources {
		sources = append(sources, s)
	}
	a.mu.Unlock()
	// Not under a.mu: a closing connection still reports its last lines.
	for _, t := range targets {
		t.close()
	}
	for _, s := range sources {
		s.cancel()
		<-s.done
		s.client.Close()
	}
	// Replaced watches must have stopped forwarding before the intake closes.
	a.retiring.Wait()
	close(a.intake)
	if a.writerDone != nil {
		close(a.writerDone)
	}
	if a.pub != nil {
		wait := min(finalPublishWait, time.Until(stopBy))
		if a.bus == nil || !a.bus.Connected() || !a.streamOK() {
			wait = 0
		}
		a.pub.stop(max(wait, 0))
	}
	a.services.Wait()
}

// fail reports an error the agent cannot go on with.
func (a *Agent) fail(err error) {
	select {
	case a.fatal <- err:
	default:
	}
}

func (a *Agent) notify(state string) {
	if a.opts.Notify != nil {
		a.opts.Notify(state)
	}
}

// startEvents starts the embedded NATS server or connects to the configured
// one, and makes sure the lifecycle stream exists when the agent owns it.
func (a *Agent) startEvents(ctx context.Context) error {
	cfg := a.cfg
	url := cfg.NATS.URL
	if url == "" {
		emb, err := events.StartEmbedded(events.EmbeddedConfig{
			Listen:   cfg.NATS.EmbeddedListen,
			StoreDir: filepath.Join(cfg.Agent.StateDir, "nats"),
			Logger:   a.opts.Logger.With(keyComponent, "nats-server"),
		})
		if err != nil {
			return err
		}
		a.emb = emb
		url = emb.ClientURL()
		// With port 0 nobody else knows where it listens: say it for
		// `dropship status`, `events` and `send` (see EmbeddedURL).
		if err := os.WriteFile(embeddedURLFile(cfg), []byte(url+"\n"), 0o644); err != nil {
			a.logger.Warn("cannot record the embedded NATS address", keyErr, err)
		}
	}
	auth, err := NATSAuth(cfg)
	if err != nil {
		return err
	}
	bus, err := events.Connect(ctx, events.ConnectOptions{
		URL:     url,
		Auth:    auth,
		Waiting: a.journal.OutboxLen,
		Name:    "dropship " + cfg.Agent.Name,
		Logger:  a.opts.Logger.With(keyComponent, "nats"),
		OnStateChange: func(connected bool) {
			if connected {
				// Every (re)connect may reach another server, or
				// one whose stream changed: check it again.
				a.pub.recheck()
			}
		},
	})
	if err != nil {
		return err
	}
	bus.SetCloudEventsMode(cfg.NATS.CloudEventsMode)
	a.bus = bus
	if !bus.Connected() {
		// The publisher checks the stream once the server is there.
		return nil
	}
	a.needCheck.Store(false)
	if err := a.checkStream(ctx, 10*time.Second); err != nil && a.emb != nil {
		return fmt.Errorf("create stream %s on the embedded server: %w", cfg.NATS.Stream, err)
	}
	// An external server's problem is logged and shown (status, /readyz,
	// check -connect); files are delivered meanwhile and their events
	// wait in the outbox.
	return nil
}

// config is the running configuration.
func (a *Agent) config() *config.Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

func (a *Agent) closeEvents() {
	if a.bus != nil {
		a.bus.Close()
	}
	if a.emb != nil {
		a.emb.Close()
		_ = os.Remove(embeddedURLFile(a.cfg))
	}
}

// embeddedURLFile is where a running agent records its embedded server's URL.
func embeddedURLFile(cfg *config.Config) string {
	return filepath.Join(cfg.Agent.StateDir, "nats.url")
}

// NATSURL is where the agent of cfg publishes: nats.url, or its embedded
// server, whose address a running agent records under state_dir when
// embedded_listen picks a free port.
func NATSURL(cfg *config.Config) string {
	if cfg.NATS.URL != "" {
		return cfg.NATS.URL
	}
	if b, err := os.ReadFile(embeddedURLFile(cfg)); err == nil {
		if u := strings.TrimSpace(string(b)); u != "" {
			return u
		}
	}
	return "nats://" + cfg.NATS.EmbeddedListen
}

// clientOptions are the transfer options for a target.
func (a *Agent) clientOptions(cfg *config.Config, t *config.Target) transfer.Options {
	name, host, port := t.Name, t.Host, t.Port
	return transfer.Options{
		Logger:     a.opts.Logger.With(keyComponent, "transfer"),
		ControlDir: a.controlDir(),
		Atomic:     t.Atomic,
		Overwrite:  t.Overwrite,
		Preserve:   t.Preserve,
		ResumeDir:  resumeDir(cfg),
		Bandwidth:  t.Bandwidth,
		Protocol:   t.Protocol,
		SSH:        a.opts.SSH,
		OnConnectionLine: func(line string) {
			a.connectionLine(name, host, port, line)
		},
	}
}

// resumeDir is the private folder under state_dir where the engine keeps the
// checkpoints of big uploads, so that one interrupted by a lost connection, a
// stop or a crash continues where the server's copy ends; "" (each
// interrupted file is sent again whole) when it cannot be created.
func resumeDir(cfg *config.Config) string {
	dir := filepath.Join(cfg.Agent.StateDir, "resume")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return ""
	}
	followOwner(dir, cfg.Agent.StateDir)
	return dir
}
