package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/config"
	"github.com/dropship/dropship/internal/journal"
	"github.com/dropship/dropship/transfer"
)

// newID is a fresh transfer id: a UUIDv7, sortable by creation time.
func newID() string {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return id.String()
}

// resume loads the journal: what was being sent when the agent stopped is
// queued again (its temporary remote file is overwritten by the next
// attempt, since the transfer id is kept); what was sent but not yet archived
// or deleted is finished.
func (a *Agent) resume() error {
	var finish []string
	var requeued, queued int
	err := a.journal.Records(func(rec *journal.Record) error {
		if rec.State == journal.Sending {
			rec.State = journal.Queued
			requeued++
		}
		switch rec.State {
		case journal.Queued:
			queued++
		case journal.Sent:
			finish = append(finish, rec.Key)
		}
		a.recs[rec.Key] = rec
		return nil
	})
	if err != nil {
		return fmt.Errorf("read journal: %w", err)
	}
	a.postq = append(a.postq, finish...)
	if queued+len(finish) > 0 {
		a.logger.Info("resuming from the journal", "queued", queued, "interrupted", requeued, "to_finish", len(finish), "outbox", a.journal.OutboxLen())
	}
	return nil
}

// applyConfig makes cfg the running configuration: targets and watches that
// are new or changed are (re)started, those that are gone are stopped, the
// rest keep running untouched. Queued and running work is kept: a changed
// target's queue moves to its replacement, and its running transfers finish
// on the old connection. Everything that can fail is prepared before anything
// changes, so an error leaves the old configuration running. Called with a.mu.
func (a *Agent) applyConfig(cfg *config.Config) error {
	// Prepare new and changed targets. Secret files are read again: a
	// fixed password changes the target even when the config text does not.
	fresh := map[string]*target{}
	for _, tc := range cfg.Targets {
		tt, err := a.transferTarget(cfg, &tc)
		if err != nil {
			return fmt.Errorf("target %s: %w", tc.Name, err)
		}
		if old := a.targets[tc.Name]; old != nil && reflect.DeepEqual(old.cfg, tc) && reflect.DeepEqual(old.client.Target(), tt) {
			continue
		}
		client, err := transfer.NewClient(tt, a.clientOptions(cfg, &tc))
		if err != nil {
			return fmt.Errorf("target %s: %w", tc.Name, err)
		}
		fresh[tc.Name] = newTarget(tc.Name, tc, client)
	}
	// Start new and changed watches.
	newWatches := map[string]*watch{}
	for _, wc := range cfg.AllWatches() {
		if old := a.watches[wc.Path]; old != nil && reflect.DeepEqual(old.cfg, wc) {
			continue
		}
		if wc.Source != "" {
			if err := os.MkdirAll(wc.Path, 0o700); err != nil {
				return fmt.Errorf("source %s: create its spool: %w", wc.Source, err)
			}
		}
		ws, err := a.startWatch(wc)
		if err != nil {
			for _, started := range newWatches {
				a.retireWatch(started)
			}
			for _, t := range fresh {
				a.retiring.Go(t.close)
			}
			return fmt.Errorf("watch %s: %w", wc.Path, err)
		}
		newWatches[wc.Path] = ws
	}

	// Swap targets.
	for name, old := range a.targets {
		if slices.ContainsFunc(cfg.Targets, func(t config.Target) bool { return t.Name == name }) && fresh[name] == nil {
			continue // unchanged
		}
		old.removed = true
		old.poke()
		delete(a.targets, name)
		a.retiring.Go(func() { a.retire(old) })
	}
	for name, t := range fresh {
		a.targets[name] = t
		a.workers.Add(t.workers())
		for range t.workers() {
			go a.worker(t)
		}
		// Files held because the old target failed get a chance with the
		// new settings.
		a.releaseHeld(t)
	}
	// Queue what waits for each new target, oldest first.
	var waiting []*journal.Record
	for _, rec := range a.recs {
		if rec.State == journal.Queued && fresh[rec.Target] != nil {
			waiting = append(waiting, rec)
		}
	}
	slices.SortFunc(waiting, func(x, y *journal.Record) int { return x.QueuedAt.Compare(y.QueuedAt) })
	for _, rec := range waiting {
		fresh[rec.Target].enqueue(rec.Key)
	}

	// Swap watches.
	for path, old := range a.watches {
		if slices.ContainsFunc(cfg.AllWatches(), func(w config.Watch) bool { return w.Path == path }) && newWatches[path] == nil {
			continue
		}
		delete(a.watches, path)
		a.retireWatch(old)
	}
	for path, ws := range newWatches {
		a.watches[path] = ws
	}
	a.cfg = cfg
	a.publishLogs.Store(cfg.NATS.PublishLogs)
	a.subj = events.Subjects{Prefix: cfg.NATS.SubjectPrefix, Agent: cfg.Agent.Name}
	return a.applySources(cfg)
}

// retireWatch stops a replaced watch without holding up the caller (its
// forwarder may be waiting for the intake, which needs a.mu).
func (a *Agent) retireWatch(w *watch) { a.retiring.Go(w.close) }

// retire closes a replaced target's connection once its running transfers
// are over.
func (a *Agent) retire(t *target) {
	for {
		a.mu.Lock()
		running := t.running
		a.mu.Unlock()
		if running == 0 {
			t.close()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// reloadFile reads the config file again and applies it (SIGHUP).
func (a *Agent) reloadFile() {
	a.mu.Lock()
	file := a.cfg.File
	a.mu.Unlock()
	if file == "" {
		a.logger.Warn("reload requested, but the configuration did not come from a file; nothing to do")
		return
	}
	a.notify("RELOADING=1")
	defer a.notify("READY=1")
	cfg, err := config.Load(file)
	if err != nil {
		a.logger.Error("reload refused: the new configuration is invalid; the previous one keeps running", "file", file, "problems", err.Error())
		a.emitAgent(events.AgentError, "reload refused: invalid configuration; the previous one keeps running", err)
		return
	}
	a.reload(cfg)
}

// reload applies a new, valid configuration: targets, watches, the log
// level, the metrics endpoint and the stream setup change at once; the keys
// that need a restart (restartKeys) keep their running values and are named
// in one warning. One that cannot be applied (an unreadable secret, a watch
// folder that cannot be watched, a metrics address in use) is refused, and
// the old configuration keeps running.
func (a *Agent) reload(next *config.Config) {
	running := a.config()
	cfg, restart, live := splitReload(running, next, a.opts.LogLevel != nil)
	metricsMoved := cfg.Agent.MetricsListen != running.Agent.MetricsListen && a.metrics != nil
	if metricsMoved {
		if err := a.metrics.relisten(cfg.Agent.MetricsListen, running.Agent.MetricsListen); err != nil {
			a.logger.Error("reload refused; the previous configuration keeps running", keyErr, err)
			a.emitAgent(events.AgentError, "reload refused; the previous configuration keeps running", err)
			return
		}
	}
	// A target whose settings or secrets changed is replaced and starts
	// afresh; one that did not change keeps its failing state and backoff,
	// so a reload does not spend another login on an unchanged password.
	a.mu.Lock()
	err := a.applyConfig(cfg)
	a.mu.Unlock()
	if err != nil {
		if metricsMoved {
			_ = a.metrics.relisten(running.Agent.MetricsListen, cfg.Agent.MetricsListen)
		}
		a.logger.Error("reload refused; the previous configuration keeps running", "err", err)
		a.emitAgent(events.AgentError, "reload refused; the previous configuration keeps running", err)
		return
	}
	if a.opts.LogLevel != nil {
		a.opts.LogLevel.Set(LevelOf(cfg.Agent.LogLevel))
	}
	if a.bus != nil {
		a.bus.SetCloudEventsMode(cfg.NATS.CloudEventsMode)
	}
	if !reflect.DeepEqual(StreamSetupOf(cfg, cfg.NATS.AutoCreateStream, false), StreamSetupOf(running, running.NATS.AutoCreateStream, false)) {
		a.pub.recheck()
	}
	if len(restart) > 0 {
		a.logger.Warn("these keys need a restart: "+strings.Join(restart, ", ")+"; they keep their running values until then (systemctl restart dropship)", "keys", restart)
	}
	if len(live) == 0 {
		live = []string{"nothing"}
	}
	a.logger.Info("configuration reloaded", "changed", strings.Join(live, ", "), "targets", len(cfg.Targets), "watches", len(cfg.Watches))
	a.emitAgent(events.AgentReloaded, "configuration reloaded", nil)
}

// transferTarget turns a configured target into what the transfer package
// needs, reading its secrets.
func (a *Agent) transferTarget(cfg *config.Config, tc *config.Target) (transfer.Target, error) {
	tt := transfer.Target{
		Name:           tc.Name,
		Host:           tc.Host,
		Port:           tc.Port,
		User:           tc.User,
		HostKey:        tc.HostKey,
		ConnectTimeout: tc.ConnectTimeout,
		StallTimeout:   tc.StallTimeout,
		SSHOptions:     tc.SSHOptions,
		Connections:    tc.Connections,
	}
	if tc.PasswordFile != "" {
		b, err := config.ReadSecret(tc.PasswordFile)
		if err != nil {
			return tt, fmt.Errorf("password_file: %w", err)
		}
		tt.Password = transfer.NewSecret(b)
	}
	if tc.PassphraseFile != "" {
		b, err := config.ReadSecret(tc.PassphraseFile)
		if err != nil {
			return tt, fmt.Errorf("passphrase_file: %w", err)
		}
		tt.Passphrase = transfer.NewSecret(b)
	}
	if tc.IdentityFile != "" {
		p, err := config.SecretPath(tc.IdentityFile)
		if err != nil {
			return tt, fmt.Errorf("identity_file: %w", err)
		}
		tt.Identity = p
	}
	kh, err := knownHosts(cfg, tc)
	if err != nil {
		return tt, err
	}
	tt.KnownHosts = kh
	return tt, nil
}

// knownHosts is the list of known_hosts files for a target: with the default
// setting, a file of its own under state_dir (where accept-new records keys)
// and then the shared <state_dir>/known_hosts; otherwise the configured file.
func knownHosts(cfg *config.Config, tc *config.Target) ([]string, error) {
	shared := filepath.Join(cfg.Agent.StateDir, "known_hosts")
	if tc.KnownHostsFile != "" && tc.KnownHostsFile != shared {
		return []string{tc.KnownHostsFile}, nil
	}
	dir := filepath.Join(cfg.Agent.StateDir, "known_hosts.d")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	followOwner(dir, cfg.Agent.StateDir)
	return []string{filepath.Join(dir, tc.Name), shared}, nil
}

// followOwner gives p the owner of ref (state_dir) when root creates it: an
// operator running `dropship check -connect` or `hostkey` as root must not
// leave files the service (the dropship user) cannot read or update.
func followOwner(p, ref string) {
	if os.Geteuid() != 0 {
		return
	}
	fi, err := os.Stat(ref)
	if err != nil {
		return
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return
	}
	_ = os.Lchown(p, int(st.Uid), int(st.Gid))
}

// controlDir is the private folder for shared connections' sockets: under
// state_dir when its path is short enough for a socket, else a temporary one.
func (a *Agent) controlDir() string {
	if a.ctlDir != "" {
		return a.ctlDir
	}
	dir := filepath.Join(a.cfg.Agent.StateDir, "ctl")
	if len(dir) > 80 {
		tmp, err := os.MkdirTemp("", "dropship-ctl-")
		if err == nil {
			dir = tmp
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		a.logger.Warn("no folder for shared connections; each transfer logs in by itself", "err", err)
		return ""
	}
	_ = os.Chmod(dir, 0o700)
	a.ctlDir = dir
	return dir
}
