package agent

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/dropship/dropship/internal/config"
	"github.com/dropship/dropship/internal/journal"
	"github.com/dropship/dropship/transfer"
	"github.com/dropship/dropship/watcher"
)

// watch is a configured watch at run time.
type watch struct {
	cfg  config.Watch
	w    *watcher.Watcher
	risk string // why readiness rests on settle alone for some files, and what to do; "" when it does not
	wg   sync.WaitGroup
	once sync.Once
}

// startWatch starts watching cfg.Path and forwards its ready files to the
// intake.
func (a *Agent) startWatch(cfg config.Watch) (*watch, error) {
	var skip []string
	if cfg.After == config.AfterArchive && cfg.ArchiveDir != "" {
		skip = append(skip, cfg.ArchiveDir)
	}
	if cfg.FailedDir != "" {
		skip = append(skip, cfg.FailedDir)
	}
	w, err := watcher.New(watcher.Options{
		Root:           cfg.Path,
		Recursive:      cfg.Recursive,
		Include:        cfg.Include,
		Exclude:        cfg.Exclude,
		Settle:         cfg.Settle,
		ReadyMarker:    cfg.ReadyMarker,
		FollowSymlinks: cfg.FollowSymlinks,
		Skip:           skip,
		Logger:         a.opts.Logger.With(keyComponent, "watcher", "watch", cfg.Path),
	})
	if err != nil {
		return nil, err
	}
	ws := &watch{cfg: cfg, w: w, risk: watcher.ReadinessRisk(cfg.Path, cfg.Settle, cfg.ReadyMarker, watcher.SelfAbilities())}
	if ws.risk != "" {
		// Said before any file is judged, not only once the first one is.
		a.logger.Warn("this watch cannot always tell a complete file from one still being written", "watch", cfg.Path, "risk", ws.risk)
	}
	ws.wg.Add(2)
	go func() {
		defer ws.wg.Done()
		for f := range w.Ready() {
			a.intake <- intakeFile{watch: cfg.Path, file: f}
		}
	}()
	go func() {
		defer ws.wg.Done()
		for err := range w.Errors() {
			a.logger.Warn("watch problem", "watch", cfg.Path, keyErr, err)
			var we *watcher.Error
			if errors.As(err, &we) {
				a.watchProblem(cfg.Path, we)
			}
		}
	}()
	return ws, nil
}

// close stops the watcher and waits until nothing more is forwarded.
func (ws *watch) close() {
	ws.once.Do(func() {
		_ = ws.w.Close()
		ws.wg.Wait()
	})
}

// intakeFile is a ready file and the watch it came from.
type intakeFile struct {
	watch string
	file  watcher.File
}

// intakeLoop journals ready files in groups: whatever arrived together is
// written in one transaction.
func (a *Agent) intakeLoop() {
	for first := range a.intake {
		group := []intakeFile{first}
	more:
		for len(group) < 2000 {
			select {
			case f, ok := <-a.intake:
				if !ok {
					break more
				}
				group = append(group, f)
			default:
				break more
			}
		}
		var ops []journal.Op
		a.mu.Lock()
		for _, in := range group {
			ops = append(ops, a.accept(in.file, in.watch)...)
		}
		// Added while a.mu is held: a worker may take a file as soon
		// as the lock is released, and its started event must come
		// after the queued one.
		if len(ops) > 0 {
			a.writer.add(ops...)
		}
		a.mu.Unlock()
		a.writer.flush()
	}
}

// accept decides what a ready file means for each target of its watch (see
// acceptFor), and returns the journal changes. Called with a.mu.
func (a *Agent) accept(f watcher.File, watchPath string) []journal.Op {
	wcfg := a.watchFor(watchPath)
	if wcfg == nil {
		return nil
	}
	var ops []journal.Op
	for _, target := range wcfg.TargetsFor(f.Rel) {
		if op := a.acceptFor(f, watchPath, wcfg, target); op != nil {
			ops = append(ops, *op)
		}
	}
	return ops
}

// recordKey is the journal key of the file rel of a watch for target: the
// file's key for the watch's first target (as before fan-out existed, so
// that journals keep their keys), the key and the target's name for the
// others.
func recordKey(watchPath, rel, target string, w *config.Watch) string {
	key := journal.Key(watchPath, rel)
	if names := w.TargetNames(); len(names) > 0 && target != names[0] {
		key += "\x00" + target
	}
	return key
}

// siblings are the records of the other targets of a fan-out watch for the
// file of rec (nil entries for those without one). Called with a.mu.
func (a *Agent) siblings(rec *journal.Record, w *config.Watch) []*journal.Record {
	var out []*journal.Record
	for _, target := range w.TargetsFor(rec.Rel) {
		if target == rec.Target {
			continue
		}
		out = append(out, a.recs[recordKey(rec.Watch, rec.Rel, target, w)])
	}
	return out
}

// acceptFor decides what a ready file means for one target of its watch: a
// new transfer, a newer version of a queued one, or a repeat of something
// already known. Called with a.mu.
func (a *Agent) acceptFor(f watcher.File, watchPath string, wcfg *config.Watch, target string) *journal.Op {
	key := recordKey(watchPath, f.Rel, target, wcfg)
	rec := a.recs[key]
	same := rec != nil && rec.SameFile(f.Size, f.ModTime, f.Dev, f.Inode)
	if a.sending[key] {
		if !same {
			// Sent again once the running upload is over.
			a.newer[key] = f
		}
		return nil
	}
	if same {
		// Already known in this very version (a rescan, or the first
		// scan after a restart, reports files again): a queued one
		// keeps its transfer id and its place.
		if rec.State == journal.Queued {
			if t := a.targets[rec.Target]; t != nil {
				t.enqueue(key)
			}
		}
		return nil
	}
	now := time.Now()
	if rec != nil && rec.State == journal.Queued && rec.Attempts == 0 {
		// Not tried yet: the queued transfer takes the new version.
		r := *rec
		r.Size, r.ModTime, r.Dev, r.Inode, r.Reason, r.Marker = f.Size, f.ModTime, f.Dev, f.Inode, f.Reason, f.Marker
		r.NextTry, r.UpdatedAt = time.Time{}, now
		a.recs[key] = &r
		if t := a.targets[r.Target]; t != nil {
			t.enqueue(key)
		}
		return &journal.Op{Put: &r}
	}
	var ended []journal.Event
	if rec != nil && rec.State == journal.Queued {
		// Tried before and waiting for its next attempt: that transfer
		// ends here, and the new version gets its own.
		if t := a.targets[rec.Target]; t != nil {
			old := *rec
			cause := &transfer.Error{Class: transfer.ClassLocalChanged, Message: fmt.Sprintf("%s: a new version replaced it before it was delivered; the new version is sent as a transfer of its own", rec.Path), ExitCode: -1}
			ev := a.transferEvent(t, &old, stateFailed, now, now, cause, nil)
			ended = append(ended, ev)
		}
	}
	remoteRel := ""
	if route := wcfg.RouteFor(target); route != nil && route.Rename != "" {
		rr, err := route.RemoteRel(f.Rel, now)
		if err != nil {
			// Checked on examples at load; a name that still makes it
			// leave remote_dir is not sent.
			a.logger.Error("a route's rename cannot be applied to this file; it is not sent to this target", keyFile, f.Path, keyTarget, target, keyErr, err)
			return nil
		}
		if rr != f.Rel {
			remoteRel = rr
		}
	}
	warning := a.piecesWarning(key, f, wcfg, now)
	r := &journal.Record{
		Key:       key,
		ID:        newID(),
		Watch:     watchPath,
		Target:    target,
		Path:      f.Path,
		Rel:       f.Rel,
		RemoteRel: remoteRel,
		Marker:    f.Marker,
		Size:      f.Size,
		ModTime:   f.ModTime,
		Dev:       f.Dev,
		Inode:     f.Inode,
		Reason:    f.Reason,
		State:     journal.Queued,
		QueuedAt:  now,
		UpdatedAt: now,
	}
	a.recs[key] = r
	t := a.targets[r.Target]
	if t == nil {
		a.logger.Warn("file queued for a target that is not configured; it waits", keyTransferID, r.ID, keyFile, f.Path, keyTarget, r.Target)
		return &journal.Op{Put: r}
	}
	r.Warning = warning
	if f.SettleOnly {
		r.Warning = strings.TrimPrefix(r.Warning+"; ", "; ") + fmt.Sprintf("judged complete on settle (%s) alone: dropship could not see whether a writer still had it open (no CAP_LEASE, or a network file system), so it may have been sent while still being written; grant CAP_LEASE, use ready_marker or raise settle", wcfg.Settle)
	}
	if w := t.cfg.Window; !w.Open(now) {
		r.Reason += fmt.Sprintf("; waits for the target's window %s, which opens at %s", w.String(), w.NextOpen(now).Format(time.RFC3339))
	}
	ev := a.transferEvent(t, r, stateQueued, time.Time{}, time.Time{}, nil, nil)
	r.EventIDs = append(r.EventIDs, ev.ID)
	t.enqueue(key)
	a.logger.Info("queued", keyTransferID, r.ID, keyFile, f.Path, keyTarget, t.name, "reason", f.Reason)
	return &journal.Op{Put: r, Events: append(ended, ev)}
}

// recentDelivery is a file delivered lately: a new version of it soon after
// suggests a writer that closes and reopens it between pieces.
type recentDelivery struct {
	at   time.Time
	id   string
	size int64
}

// piecesWindow is how long after a delivery a new version of the same file
// raises the pieces warning: a few settle periods.
func piecesWindow(w *config.Watch) time.Duration { return max(5*w.Settle, 10*time.Second) }

// noteDelivered remembers that rec was delivered at now. Called with a.mu.
func (a *Agent) noteDelivered(rec *journal.Record, now time.Time) {
	if len(a.recent) > 10000 {
		for k, d := range a.recent {
			if now.Sub(d.at) > 10*time.Minute {
				delete(a.recent, k)
			}
		}
	}
	a.recent[rec.Key] = recentDelivery{at: now, id: rec.ID, size: rec.Size}
}

// piecesWarning is the warning for a file that grows or reappears right after
// it was delivered, "" otherwise. Each piece of a file written in pieces (a
// writer that closes it and opens it again later, `>>` per chunk) would be
// delivered as the file, each replacing the last on the server. Called with
// a.mu.
func (a *Agent) piecesWarning(key string, f watcher.File, w *config.Watch, now time.Time) string {
	d, ok := a.recent[key]
	if !ok || now.Sub(d.at) > piecesWindow(w) {
		return ""
	}
	how := "reappeared"
	if f.Size > d.size {
		how = "grew"
	}
	msg := fmt.Sprintf("%s %s %s after it was delivered (transfer %s, %d bytes; now %d bytes): its writer may close and reopen it between pieces, so each piece is delivered as the file; raise settle (now %s) above the writer's pauses, or have it write a ready_marker when done", f.Path, how, now.Sub(d.at).Round(time.Millisecond), d.id, d.size, f.Size, w.Settle)
	a.logger.Warn("file changed right after its delivery: written in pieces?", keyFile, f.Path, "previous_transfer", d.id, "since_delivery", now.Sub(d.at).Round(time.Millisecond), "hint", "raise settle or use ready_marker")
	return msg
}

// watchFor is the configuration of the watch at path (nil when it is no
// longer configured). Called with a.mu.
func (a *Agent) watchFor(path string) *config.Watch {
	if ws := a.watches[path]; ws != nil {
		return &ws.cfg
	}
	for i := range a.cfg.Watches {
		if a.cfg.Watches[i].Path == path {
			return &a.cfg.Watches[i]
		}
	}
	for _, w := range a.cfg.AllWatches()[len(a.cfg.Watches):] {
		if w.Path == path {
			return &w
		}
	}
	return nil
}

// watchProblem records a watcher's operational problem for status and
// metrics.
func (a *Agent) watchProblem(path string, e *watcher.Error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.metrics.watchProblem(path, e.Kind)
	if e.Kind == watcher.KindRootBack {
		delete(a.watchErrs, path)
		return
	}
	a.watchErrs[path] = e
}

// remoteRel is the path of rec's file below its target's remote_dir.
func remoteRel(rec *journal.Record) string {
	if rec.RemoteRel != "" {
		return rec.RemoteRel
	}
	return rec.Rel
}
