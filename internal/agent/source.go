package agent

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/config"
	"github.com/dropship/dropship/internal/journal"
	"github.com/dropship/dropship/transfer"
	"github.com/dropship/dropship/watcher"
)

// A remote source ([[source]]) is polled: every interval its folder is
// listed, and a file that two listings in a row show with the same size and
// mtime (and old enough, and with its ready marker, if one is configured) is
// fetched into the source's spool under state_dir. The spool is watched like
// a drop folder (config.SpoolWatch), so its files go to the source's
// targets with their transfers, events, retries and fan-out; once every
// target has a file, the source's `after` is applied on the server (see
// sourceDone) and only then the spool copy deleted. The journal remembers
// each fetched version, so that it is never fetched again while the server
// lists it unchanged, across restarts too.

// sourceDoneTimeout bounds one delete or move on a source.
const sourceDoneTimeout = 15 * time.Second

// source is a running [[source]].
type source struct {
	cfg    config.Source
	client *transfer.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	lastPoll time.Time
	lastErr  string // of the last listing; "" when it worked
	held     bool   // a failure no retry can help: not listed again until a reload or a retry
}

// applySources starts the sources of cfg that are new or changed and stops
// those that are gone or changed. Called with a.mu.
func (a *Agent) applySources(cfg *config.Config) error {
	fresh := map[string]*source{}
	for _, sc := range cfg.Sources {
		tt, err := a.transferTarget(cfg, &sc.Conn)
		if err != nil {
			return fmt.Errorf("source %s: %w", sc.Name(), err)
		}
		if old := a.sources[sc.Name()]; old != nil && reflect.DeepEqual(old.cfg, sc) && reflect.DeepEqual(old.client.Target(), tt) {
			// A reload (or `dropship retry`) is the operator saying
			// the cause was fixed, perhaps on the server: a held
			// source lists again.
			old.mu.Lock()
			old.held = false
			old.mu.Unlock()
			continue
		}
		client, err := transfer.NewClient(tt, a.clientOptions(cfg, &sc.Conn))
		if err != nil {
			return fmt.Errorf("source %s: %w", sc.Name(), err)
		}
		spool := config.SpoolDir(cfg.Agent.StateDir, sc.Name())
		if err := os.MkdirAll(spool, 0o700); err != nil {
			client.Close()
			return fmt.Errorf("source %s: create its spool: %w", sc.Name(), err)
		}
		if a.sources[sc.Name()] == nil {
			removeFetchTemps(spool, a.logger)
		}
		fresh[sc.Name()] = &source{cfg: sc, client: client, done: make(chan struct{})}
	}
	for name, old := range a.sources {
		keep := false
		for _, sc := range cfg.Sources {
			keep = keep || sc.Name() == name
		}
		if keep && fresh[name] == nil {
			continue
		}
		delete(a.sources, name)
		old.cancel()
		a.retiring.Go(func() {
			<-old.done
			old.client.Close()
		})
	}
	for name, s := range fresh {
		a.sources[name] = s
		ctx, cancel := context.WithCancel(a.workCtx)
		s.cancel = cancel
		go a.poll(ctx, s)
	}
	return nil
}

// poll lists s's folder every interval (with jitter) until ctx ends.
func (a *Agent) poll(ctx context.Context, s *source) {
	defer close(s.done)
	var prev map[string]transfer.Listed
	for {
		s.mu.Lock()
		held := s.held
		s.mu.Unlock()
		if !held {
			prev = a.pollOnce(ctx, s, prev)
		}
		wait := s.cfg.Interval + rand.N(s.cfg.Interval/10+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// pollOnce lists s once and fetches what is ready. prev is the previous
// listing (nil at first); it returns this one.
func (a *Agent) pollOnce(ctx context.Context, s *source, prev map[string]transfer.Listed) map[string]transfer.Listed {
	sc := &s.cfg
	log := a.logger.With("source", sc.Name())
	ls, err := s.client.List(ctx, sc.Conn.RemoteDir, sc.Recursive)
	s.mu.Lock()
	s.lastPoll = time.Now()
	changed := errString(err) != s.lastErr
	s.lastErr = errString(err)
	s.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return prev
		}
		if c := transfer.ClassOf(err); !c.Retryable() {
			// A refused login or host key, a missing folder: asking
			// again at every interval could lock the account.
			s.mu.Lock()
			s.held = true
			s.mu.Unlock()
			log.Error("listing the source failed, and trying again cannot help: the source is held until its cause is fixed and the agent reloaded (systemctl reload dropship) or told to retry (dropship retry -failed)", keyErr, err)
			a.emitFetch(s, events.FetchFailed, events.FetchData{RemotePath: sc.Conn.RemoteDir, Error: errorInfo(err)})
			return prev
		}
		// Said once per distinct failure, not at every listing.
		if changed {
			log.Error("listing the source failed; trying again at the next interval", keyErr, err, "interval", sc.Interval)
			a.emitFetch(s, events.FetchFailed, events.FetchData{RemotePath: sc.Conn.RemoteDir, Error: errorInfo(err)})
		}
		return prev
	}
	if changed {
		log.Info("listing the source works again")
	}
	known, err := a.journal.FetchedOf(sc.Name())
	if err != nil {
		log.Error("cannot read the journal's fetched versions; fetching nothing this time", keyErr, err)
		return prev
	}

	now := time.Now()
	ready, listed := readyToFetch(sc, ls, prev, known, now)
	a.forgetFetched(sc, known, listed, now)
	if len(ready) == 0 {
		return listed
	}
	a.emitFetch(s, events.FetchListed, events.FetchData{RemotePath: sc.Conn.RemoteDir, Files: len(ready), Targets: sc.Targets})

	spool := config.SpoolDir(a.config().Agent.StateDir, sc.Name())
	items := make([]transfer.Fetch, 0, len(ready))
	for _, l := range ready {
		local := filepath.Join(spool, filepath.FromSlash(l.Rel))
		if err := os.MkdirAll(filepath.Dir(local), 0o700); err != nil {
			log.Error("cannot create a folder in the spool", keyErr, err)
			continue
		}
		items = append(items, transfer.Fetch{RemoteDir: sc.Conn.RemoteDir, Listed: l, Local: local})
	}
	for i, r := range s.client.Download(ctx, items) {
		it := items[i]
		if r.Err != nil {
			if ctx.Err() != nil {
				return listed
			}
			if transfer.ClassOf(r.Err) == transfer.ClassSourceChanged {
				log.Info("a file changed on the source while it was fetched; fetching it once it is stable", keyFile, it.RemotePath(), keyErr, r.Err)
				delete(listed, it.Rel) // stable again only from the next listing on
				continue
			}
			log.Warn("fetching a file failed; trying again at the next interval", keyFile, it.RemotePath(), keyErr, r.Err)
			a.emitFetch(s, events.FetchFailed, fetchData(it, "", r.Err))
			continue
		}
		mt := it.ModTime
		ev, err := a.fetchEvent(s, events.FetchFetched, events.FetchData{
			RemotePath: it.RemotePath(), LocalPath: it.Local, SizeBytes: r.Bytes, ModTime: &mt, SHA256: r.SHA256, Targets: sc.Targets,
		})
		op := journal.Op{Fetched: &journal.Fetched{Source: sc.Name(), Rel: it.Rel, Size: it.Size, ModTime: it.ModTime, SHA256: r.SHA256, FetchedAt: time.Now()}}
		if err == nil {
			op.Events = []journal.Event{ev}
		}
		a.commit(op)
		log.Info("fetched", keyFile, it.RemotePath(), "bytes", r.Bytes, "spool", it.Local)
	}
	return listed
}

// readyToFetch is the policy of a listing: the files of ls that are to be
// fetched now, and the listing by path (the next call's prev). A file is
// ready when it is wanted (see wanted), not older than max_age, not the
// version known to have been fetched, shown unchanged (size and mtime) by
// prev too, and its mtime at least min_age old.
func readyToFetch(sc *config.Source, ls []transfer.Listed, prev map[string]transfer.Listed, known map[string]journal.Fetched, now time.Time) ([]transfer.Listed, map[string]transfer.Listed) {
	listed := make(map[string]transfer.Listed, len(ls))
	for _, l := range ls {
		listed[l.Rel] = l
	}
	var ready []transfer.Listed
	for _, l := range ls {
		if !wanted(sc, l.Rel, listed) {
			continue
		}
		if sc.MaxAge > 0 && now.Sub(l.ModTime) > sc.MaxAge {
			continue
		}
		if f, ok := known[l.Rel]; ok && f.Size == l.Size && f.ModTime.Equal(l.ModTime) {
			continue // fetched already, this very version
		}
		if p, ok := prev[l.Rel]; !ok || p.Size != l.Size || !p.ModTime.Equal(l.ModTime) {
			continue // not yet seen unchanged by two listings
		}
		if now.Sub(l.ModTime) < sc.MinAge {
			continue
		}
		ready = append(ready, l)
	}
	return ready, listed
}

// wanted says whether rel of a listing of sc is one to fetch: not ignored,
// included, not excluded, not a ready marker, and with its marker listed
// when sc has one.
func wanted(sc *config.Source, rel string, listed map[string]transfer.Listed) bool {
	if watcher.Ignored(rel) {
		return false
	}
	in := false
	for _, p := range sc.Include {
		in = in || watcher.MatchPattern(p, rel)
	}
	for _, p := range sc.Exclude {
		in = in && !watcher.MatchPattern(p, rel)
	}
	if !in {
		return false
	}
	if m := sc.ReadyMarker; m != "" {
		if strings.HasSuffix(path.Base(rel), m) && len(path.Base(rel)) > len(m) {
			return false
		}
		if _, ok := listed[rel+m]; !ok {
			return false
		}
	}
	return true
}

// forgetFetched drops the fetched versions that the source has not listed
// for sc.Remember: one still listed is remembered, so that it is never
// fetched again.
func (a *Agent) forgetFetched(sc *config.Source, known map[string]journal.Fetched, listed map[string]transfer.Listed, now time.Time) {
	var old []string
	for rel, f := range known {
		if _, ok := listed[rel]; !ok && now.Sub(f.FetchedAt) > sc.Remember {
			old = append(old, rel)
		}
	}
	if err := a.journal.Forget(sc.Name(), old); err != nil {
		a.logger.Warn("cannot prune the journal's fetched versions", "source", sc.Name(), keyErr, err)
	}
}

// sourceDone applies the source's `after` to the file rec of its spool,
// which every target has: delete or move it on the server, if it is still
// the version fetched. It returns the source-deleted event to journal (nil
// for after = "keep"), or the error that leaves the spool copy in place to
// be tried again.
func (a *Agent) sourceDone(rec *journal.Record, w *config.Watch) (*journal.Event, error) {
	a.mu.Lock()
	s := a.sources[w.Source]
	a.mu.Unlock()
	if s == nil {
		return nil, fmt.Errorf("source %s is no longer configured; its file stays in the spool", w.Source)
	}
	sc := &s.cfg
	if sc.After == config.AfterKeep {
		return nil, nil
	}
	rel, err := filepath.Rel(w.Path, rec.Path)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return nil, fmt.Errorf("%s is not in the spool %s", rec.Path, w.Path)
	}
	rel = filepath.ToSlash(rel)
	known, err := a.journal.FetchedOf(sc.Name())
	if err != nil {
		return nil, err
	}
	f, ok := known[rel]
	if !ok {
		return nil, fmt.Errorf("the journal has no fetched version of %s; the source file is left in place", rel)
	}
	l := transfer.Listed{Rel: rel, Size: f.Size, ModTime: f.ModTime}
	// Post-processing may run on the agent's main loop (the sweep): a
	// server known to be down is not waited for, and a try is bounded well
	// inside the watchdog's minute.
	s.mu.Lock()
	down := s.lastErr
	s.mu.Unlock()
	if down != "" {
		return nil, fmt.Errorf("the source cannot be listed (%s); its file stays in the spool until it can", down)
	}
	ctx, cancel := context.WithTimeout(a.workCtx, min(sc.Conn.ConnectTimeout+sc.Conn.StallTimeout, sourceDoneTimeout))
	defer cancel()
	d := events.FetchData{RemotePath: transfer.RemotePath(sc.Conn.RemoteDir, rel), LocalPath: rec.Path, SizeBytes: f.Size, ModTime: &f.ModTime, SHA256: f.SHA256, Targets: sc.Targets}
	switch sc.After {
	case config.AfterDelete:
		err = s.client.RemoveSource(ctx, sc.Conn.RemoteDir, l)
	case config.AfterMove:
		err = s.client.MoveSource(ctx, sc.Conn.RemoteDir, l, sc.MoveDir)
		d.MovedTo = transfer.RemotePath(sc.MoveDir, rel)
	}
	if transfer.ClassOf(err) == transfer.ClassSourceChanged {
		// A new version is on the server: it is fetched and delivered
		// on its own; this one is done.
		a.logger.Info("the source file changed after it was fetched; leaving the new version on the source", "source", sc.Name(), keyFile, d.RemotePath)
		return nil, nil
	}
	if err != nil {
		a.emitFetch(s, events.FetchFailed, events.FetchData{RemotePath: d.RemotePath, LocalPath: rec.Path, Error: errorInfo(err)})
		return nil, fmt.Errorf("%s the source file %s: %w", sc.After, d.RemotePath, err)
	}
	// Gone from the folder: a file uploaded under its name later is a new
	// one, whatever its size and mtime.
	if err := a.journal.Forget(sc.Name(), []string{rel}); err != nil {
		a.logger.Warn("cannot drop a fetched version from the journal", "source", sc.Name(), keyFile, rel, keyErr, err)
	}
	if sc.ReadyMarker != "" {
		// Its marker goes with it; one left would only be noise.
		if err := s.client.RemoveMarker(ctx, sc.Conn.RemoteDir, rel+sc.ReadyMarker); err != nil {
			a.logger.Warn("cannot delete the ready marker on the source", "source", sc.Name(), keyFile, rel+sc.ReadyMarker, keyErr, err)
		}
	}
	ev, err := a.fetchEvent(s, events.FetchSourceDeleted, d)
	if err != nil {
		return nil, nil
	}
	a.logger.Info("source file "+map[string]string{config.AfterDelete: "deleted", config.AfterMove: "moved"}[sc.After], "source", sc.Name(), keyFile, d.RemotePath, "moved_to", d.MovedTo)
	return &ev, nil
}

// fetchData is the data of a fetch event about it.
func fetchData(it transfer.Fetch, local string, err error) events.FetchData {
	mt := it.ModTime
	return events.FetchData{RemotePath: it.RemotePath(), LocalPath: local, SizeBytes: it.Size, ModTime: &mt, Error: errorInfo(err)}
}

// errorInfo is the error part of an event.
func errorInfo(err error) *events.ErrorInfo {
	if err == nil {
		return nil
	}
	c := transfer.ClassOf(err)
	return &events.ErrorInfo{Class: string(c), Message: errMessage(err), Retryable: c.Retryable()}
}

// fetchEvent builds a fetch event of s.
func (a *Agent) fetchEvent(s *source, state events.FetchState, d events.FetchData) (journal.Event, error) {
	d.Source = events.TargetRef{Name: s.cfg.Name(), Host: s.cfg.Conn.Host, Port: s.cfg.Conn.Port}
	a.mu.Lock()
	subj := a.subj
	a.mu.Unlock()
	ev, err := events.NewFetch(subj, state, d)
	if err != nil {
		a.logger.Error("cannot build a fetch event; this is a bug", keyErr, err)
		return journal.Event{}, err
	}
	return outboxEvent(ev), nil
}

// emitFetch journals a fetch event of s for publishing.
func (a *Agent) emitFetch(s *source, state events.FetchState, d events.FetchData) {
	if ev, err := a.fetchEvent(s, state, d); err == nil {
		a.commit(journal.Op{Events: []journal.Event{ev}})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// sourcesStatus is the status of every configured source. Called with a.mu.
func (a *Agent) sourcesStatus() []SourceStatus {
	var out []SourceStatus
	for i := range a.cfg.Sources {
		sc := &a.cfg.Sources[i]
		ss := SourceStatus{Name: sc.Name(), Host: sc.Conn.Host, RemoteDir: sc.Conn.RemoteDir, Targets: sc.Targets}
		spool := config.SpoolDir(a.cfg.Agent.StateDir, sc.Name())
		seen := map[string]bool{}
		for _, rec := range a.recs {
			if rec.Watch == spool && !seen[rec.Path] {
				seen[rec.Path] = true
				ss.Spooled++
			}
		}
		if s := a.sources[sc.Name()]; s != nil {
			s.mu.Lock()
			if !s.lastPoll.IsZero() {
				t := s.lastPoll
				ss.LastPoll = &t
			}
			ss.Error, ss.Held = s.lastErr, s.held
			s.mu.Unlock()
		}
		out = append(out, ss)
	}
	return out
}

// sourceDegradations are the sources' problems for /readyz: a source that
// cannot be listed.
func (a *Agent) sourceDegradations() []string {
	var out []string
	for _, ss := range a.sourcesStatus() {
		switch {
		case ss.Held:
			out = append(out, fmt.Sprintf("source %s: held, nothing is fetched until the cause is fixed and the agent reloaded or told to retry: %s", ss.Name, ss.Error))
		case ss.Error != "":
			out = append(out, fmt.Sprintf("source %s: its folder cannot be listed: %s", ss.Name, ss.Error))
		}
	}
	return out
}

// removeFetchTemps removes the temporary files of fetches that a crash (or a
// kill -9) interrupted: nothing else writes them.
func removeFetchTemps(spool string, log *slog.Logger) {
	_ = filepath.WalkDir(spool, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), ".dropship-fetch-") {
			if err := os.Remove(p); err == nil {
				log.Info("removed the temporary file of an interrupted fetch", keyFile, p)
			}
		}
		return nil
	})
}
