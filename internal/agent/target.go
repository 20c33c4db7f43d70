package agent

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path"
	"slices"
	"time"

	"github.com/dropship/dropship/internal/config"
	"github.com/dropship/dropship/internal/journal"
	"github.com/dropship/dropship/transfer"
)

const (
	// maxBatchFiles and maxBatchBytes bound one sftp session: big enough
	// that many small files share a login, small enough that one failure
	// does not hold back too much.
	maxBatchFiles = 500
	maxBatchBytes = 1 << 30
)

// target is a configured target at run time: its transfer client, its queue
// and its health. Its fields are guarded by Agent.mu.
type target struct {
	name    string
	cfg     config.Target
	client  *transfer.Client
	wake    chan struct{} // buffered: a worker should look at the queue
	queue   []string      // keys of queued files, oldest first
	queued  map[string]bool
	running int  // workers inside send
	removed bool // dropped by a reload: finish, take nothing new

	// Health. failClass is "" while the target works. When a failure
	// concerns the whole target, the queue is held and one file at a time
	// probes it, at retryAt.
	failClass transfer.Class
	failMsg   string
	failSince time.Time
	retryAt   time.Time
	failures  int // consecutive target-wide failures
	probing   bool

	// outsideSaid: the log said that files wait for its window (config
	// window) to open.
	outsideSaid bool
}

func newTarget(name string, cfg config.Target, client *transfer.Client) *target {
	return &target{name: name, cfg: cfg, client: client, wake: make(chan struct{}, 1), queued: map[string]bool{}}
}

// workers is how many workers send t's files: several per connection, so
// that a connection's SFTP session keeps working while one worker's batch
// waits for its last files.
func (t *target) workers() int { return t.cfg.Connections * transfer.UploadsPerSession }

func (t *target) poke() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// close stops the target's shared connection.
func (t *target) close() { _ = t.client.Close() }

// enqueue puts key at the end of the target's queue (once). Called with a.mu.
func (t *target) enqueue(key string) {
	if !t.queued[key] {
		t.queued[key] = true
		t.queue = append(t.queue, key)
	}
	t.poke()
}

// worker takes batches from the target's queue and sends them until the
// agent stops taking work or the target is removed.
func (a *Agent) worker(t *target) {
	defer a.workers.Done()
	for {
		batch, wait, stop := a.pick(t)
		if stop {
			return
		}
		if len(batch) == 0 {
			if !a.idle(t, wait) {
				return
			}
			continue
		}
		a.send(t, batch)
		a.mu.Lock()
		t.running--
		t.probing = false
		a.mu.Unlock()
		t.poke() // another worker may find work freed by this batch
	}
}

// idle waits until t is poked, wait passes (0: no limit) or the agent stops
// taking work; it returns false for the latter.
func (a *Agent) idle(t *target, wait time.Duration) bool {
	var timer <-chan time.Time
	if wait > 0 {
		tm := time.NewTimer(wait)
		defer tm.Stop()
		timer = tm.C
	}
	select {
	case <-a.workCtx.Done():
		return false
	case <-t.wake:
	case <-timer:
	}
	return true
}

// pick chooses the next batch for a worker of t: files whose turn has come,
// oldest first, split fairly between the target's idle connections; a single
// probe when the target is failing. wait is how long until something may be
// ready; stop ends the worker.
func (a *Agent) pick(t *target) (batch []*journal.Record, wait time.Duration, stop bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if t.removed || a.workCtx.Err() != nil {
		return nil, 0, true
	}
	now := time.Now()
	if w := t.cfg.Window; !w.Open(now) {
		// Outside the target's window nothing starts, probes included;
		// uploads already running finish.
		opens := w.NextOpen(now)
		if !t.outsideSaid && len(t.queue) > 0 {
			a.logger.Info("outside the target's window: its files wait", keyTarget, t.name, "window", w.String(), "opens", opens.Format(time.RFC3339), "queued", len(t.queue))
			t.outsideSaid = true
		}
		return nil, max(opens.Sub(now), time.Second), false
	}
	if t.outsideSaid {
		t.outsideSaid = false
		a.logger.Info("the target's window is open: sending", keyTarget, t.name, "window", t.cfg.Window.String(), "queued", len(t.queue))
	}
	probe := t.failClass != ""
	if probe {
		if t.probing {
			return nil, 0, false
		}
		if now.Before(t.retryAt) {
			return nil, t.retryAt.Sub(now), false
		}
	}
	var ready []*journal.Record
	kept := t.queue[:0]
	for _, key := range t.queue {
		rec := a.recs[key]
		if rec == nil || rec.State != journal.Queued || rec.Target != t.name {
			delete(t.queued, key)
			continue
		}
		kept = append(kept, key)
		if a.sending[key] {
			continue
		}
		if rec.NextTry.After(now) {
			if d := rec.NextTry.Sub(now); wait == 0 || d < wait {
				wait = d
			}
			continue
		}
		ready = append(ready, rec)
	}
	t.queue = kept
	if probe && len(ready) == 0 {
		// Nothing queued: probe with a file that failed because of the
		// target, so that it recovers by itself once the target works.
		if rec := a.oldestHeld(t.name); rec != nil {
			ready = append(ready, rec)
		}
	}
	if len(ready) == 0 {
		return nil, wait, false
	}
	limit := 1
	if !probe {
		idle := t.workers() - t.running
		if idle < 1 {
			idle = 1
		}
		limit = min(maxBatchFiles, (len(ready)+idle-1)/idle)
	}
	var bytes int64
	for _, rec := range ready {
		if len(batch) >= limit || (len(batch) > 0 && bytes+rec.Size > maxBatchBytes) {
			break
		}
		batch = append(batch, rec)
		bytes += rec.Size
	}
	taken := make(map[string]bool, len(batch))
	for _, rec := range batch {
		a.sending[rec.Key] = true
		delete(t.queued, rec.Key)
		taken[rec.Key] = true
	}
	// Only what this batch took leaves the queue: a key queued again
	// while its earlier version is still being sent stays, to be taken
	// once that upload is over.
	t.queue = slices.DeleteFunc(t.queue, func(k string) bool { return taken[k] })
	t.running++
	t.probing = probe
	return batch, 0, false
}

// oldestHeld is the oldest failed file of a target whose failure was the
// target's, not the file's. Called with a.mu.
func (a *Agent) oldestHeld(name string) *journal.Record {
	var best *journal.Record
	for _, rec := range a.recs {
		if rec.Target != name || rec.State != journal.Failed || a.sending[rec.Key] || !transfer.Class(rec.LastClass).TargetWide() {
			continue
		}
		if best == nil || rec.QueuedAt.Before(best.QueuedAt) {
			best = rec
		}
	}
	return best
}

// job is one file of a batch being sent.
type job struct {
	rec   *journal.Record
	file  *os.File
	item  transfer.Item
	sum   string // sha256, once hashed
	began bool
	// held: the file had failed for good because of its target and is sent
	// as the probe of that target. Its transfer already ended failed, so a
	// probe that fails the same way publishes nothing: failed means once.
	held bool
}

// send uploads a batch and records the outcome of every file.
func (a *Agent) send(t *target, batch []*journal.Record) {
	a.mu.Lock()
	w := a.watchFor(batch[0].Watch)
	a.mu.Unlock()
	var jobs []*job
	var ops []journal.Op
	for _, rec := range batch {
		j, op := a.prepare(t, w, rec)
		if j != nil {
			jobs = append(jobs, j)
		}
		if op != nil {
			ops = append(ops, *op)
		}
	}
	a.commit(ops...)
	if len(jobs) == 0 {
		a.release(batch)
		return
	}

	items := make([]transfer.Item, len(jobs))
	byID := map[string]*job{}
	for i, j := range jobs {
		items[i] = j.item
		byID[j.rec.ID] = j
	}
	logs := a.newLogStream(t)
	batchStart := time.Now()
	results := t.client.Upload(a.sendCtx, items, transfer.Observer{
		Begin: func(id string) {
			if j := byID[id]; j != nil && !j.began {
				j.began = true
				a.began(t, j)
			}
		},
		Line:     func(id string, line string) { logs.line(byID[id], line) },
		Progress: func(id string, p transfer.Progress) { logs.progress(byID[id], p) },
	})
	// The sha256 of each file comes from the engine: it hashed the bytes
	// it read from the checked descriptor to send them, so it is the
	// sha256 of what was delivered.
	for i, j := range jobs {
		j.sum = results[i].SHA256
		j.file.Close()
	}
	a.writer.flush()
	batchEnd := time.Now()
	for i := range results {
		// A session that never came up times its files too.
		if results[i].Start.IsZero() {
			results[i].Start = batchStart
		}
		if results[i].End.IsZero() {
			results[i].End = batchEnd
		}
	}

	// When the session failed before any file began (a refused login, a
	// refused connection), the first file carries the attempt and its
	// events, so the failure is heard of; the others wait untouched.
	carrier := -1
	if !slices.ContainsFunc(results, func(r transfer.Result) bool { return r.Began }) {
		carrier = slices.IndexFunc(results, func(r transfer.Result) bool {
			return r.Err != nil && transfer.ClassOf(r.Err) != transfer.ClassBadName
		})
	}
	var done []*job
	var targetErr error
	ops = ops[:0]
	for i, r := range results {
		j := jobs[i]
		if r.Err == nil {
			if op := a.delivered(t, j, r); op != nil {
				ops = append(ops, *op)
				if j.rec.State == journal.Sent {
					done = append(done, j)
				}
			}
			continue
		}
		class := transfer.ClassOf(r.Err)
		counts := r.Began || i == carrier || class == transfer.ClassBadName
		if counts && class.TargetWide() && targetErr == nil {
			targetErr = r.Err
		}
		ops = append(ops, a.failed(t, w, j, r, counts)...)
	}
	if targetErr != nil {
		a.mu.Lock()
		a.targetFailed(t, transfer.ClassOf(targetErr), targetErr)
		a.mu.Unlock()
	}
	a.commit(ops...)
	a.discardLeftovers(t, jobs, results)
	a.postProcess(done)
	a.sweep() // failed_dir moves of files that just failed for good
	a.release(batch)
}

// prepare opens a queued file beneath its watch folder and checks it is
// still the version that was judged ready (see openChecked). It returns the
// job to send, or the journal change that explains why not.
func (a *Agent) prepare(t *target, w *config.Watch, rec *journal.Record) (*job, *journal.Op) {
	root, follow := path.Dir(rec.Path), false
	if w != nil {
		root, follow = w.Path, w.FollowSymlinks
	}
	f, err := openChecked(root, follow, rec)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, a.vanished(t, rec)
		}
		var te *transfer.Error
		if errors.As(err, &te) && te.Class != transfer.ClassLocalFile {
			return nil, a.refused(t, rec, te)
		}
		return nil, a.localFailure(t, w, rec, err)
	}
	return &job{
		rec:  rec,
		held: rec.State == journal.Failed,
		file: f,
		item: transfer.Item{ID: rec.ID, File: f, Local: rec.Path, RemoteDir: t.cfg.RemoteDir, Rel: remoteRel(rec), Size: rec.Size},
	}, nil
}

// refused ends a transfer whose file was not opened because it is not the
// file that was checked: swapped for a symlink, a hard link, a folder or
// another file (unsafe-path, local-changed). Its id ends failed; a new
// version of the file that becomes ready gets a transfer of its own.
func (a *Agent) refused(t *target, rec *journal.Record, cause *transfer.Error) *journal.Op {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := *rec
	now := time.Now()
	r.Attempts++
	r.State = journal.Failed
	r.NextTry = time.Time{}
	r.LastClass, r.LastError, r.UpdatedAt = string(cause.Class), cause.Error(), now
	a.metrics.outcome(t.name, string(stateFailed), r.Size, 0)
	started := a.transferEvent(t, &r, stateStarted, now, time.Time{}, nil, nil)
	ev := a.transferEvent(t, &r, stateFailed, now, now, cause, nil)
	r.EventIDs = append(r.EventIDs, started.ID, ev.ID)
	a.recs[r.Key] = &r
	if cause.Class == transfer.ClassUnsafePath {
		a.logger.Error("refused to send a file: possible attack through the watch folder", keyTransferID, r.ID, keyFile, r.Path, keyTarget, t.name, keyClass, cause.Class, keyErr, cause.Message)
	} else {
		a.logger.Warn("file changed before it was sent; its new version is sent once it is ready", keyTransferID, r.ID, keyFile, r.Path, keyTarget, t.name, keyClass, cause.Class)
	}
	return &journal.Op{Put: &r, Events: []journal.Event{started, ev}}
}

// began records that a file's upload started: the started event, through the
// journal writer so the session is not slowed by an fsync per file.
func (a *Agent) began(t *target, j *job) {
	now := time.Now()
	a.mu.Lock()
	rec := *j.rec
	rec.State = journal.Sending
	rec.UpdatedAt = now
	rec.RemotePath = j.item.RemotePath()
	if j.held {
		// Its started event waits for the probe's outcome.
		a.recs[rec.Key] = &rec
		j.rec = &rec
		a.mu.Unlock()
		return
	}
	rec.Attempts++
	ev := a.transferEvent(t, &rec, stateStarted, now, time.Time{}, nil, nil)
	rec.EventIDs = append(rec.EventIDs, ev.ID)
	a.recs[rec.Key] = &rec
	j.rec = &rec
	a.mu.Unlock()
	a.writer.add(journal.Op{Put: &rec, Events: []journal.Event{ev}})
}

// delivered handles a file confirmed under its final name: completed event,
// state sent. The engine checked the descriptor unchanged (size, mtime,
// ctime) after the last byte and before the rename, so what arrived is the
// version that was checked, whole.
func (a *Agent) delivered(t *target, j *job, r transfer.Result) *journal.Op {
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	rec := *j.rec
	rec.SHA256 = j.sum
	rec.ExitCode = r.ExitCode
	rec.UpdatedAt = now
	var pre []journal.Event
	if j.held {
		// The probe worked: the transfer starts again from attempt 1,
		// as the files it held do.
		rec.Attempts = 1
		started := a.transferEvent(t, &rec, stateStarted, r.Start, time.Time{}, nil, nil)
		rec.EventIDs = append(rec.EventIDs, started.ID)
		pre = append(pre, started)
	}
	rec.State = journal.Sent
	rec.LastClass, rec.LastError = "", ""
	a.noteDelivered(&rec, now)
	a.metrics.outcome(t.name, string(stateCompleted), rec.Size, r.End.Sub(r.Start))
	a.logger.Info("delivered", keyTransferID, rec.ID, keyFile, rec.Path, keyTarget, t.name, "remote", j.item.RemotePath(), "bytes", rec.Size, "attempt", rec.Attempts)
	ev := a.transferEvent(t, &rec, stateCompleted, r.Start, r.End, nil, nil)
	rec.EventIDs = append(rec.EventIDs, ev.ID)
	a.recs[rec.Key] = &rec
	j.rec = &rec
	a.targetRecovered(t)
	return &journal.Op{Put: &rec, Events: append(pre, ev)}
}

// failed handles a file whose upload did not complete. counts says the
// failure is this file's to report: it began, it is the carrier of a session
// that failed before any file began, or its name cannot be sent. A file that
// does not count goes back to the queue as it was, without an event.
func (a *Agent) failed(t *target, w *config.Watch, j *job, r transfer.Result, counts bool) []journal.Op {
	class := transfer.ClassOf(r.Err)
	a.mu.Lock()
	defer a.mu.Unlock()
	rec := *j.rec
	if j.held && (class.TargetWide() || class == transfer.ClassCanceled || !counts) {
		// The target still fails: the file stays failed, as it was,
		// without another event.
		rec.State = journal.Failed
		rec.LastClass, rec.LastError, rec.UpdatedAt = string(class), errMessage(r.Err), time.Now()
		a.recs[rec.Key] = &rec
		return []journal.Op{{Put: &rec}}
	}
	if j.held {
		// It fails for a reason of its own now: a new attempt, with its
		// events.
		j.began = false
	}
	if class == transfer.ClassCanceled || !counts {
		// Stopped by a shutdown, or never attempted: it stays queued and
		// this attempt does not count.
		if j.began {
			rec.Attempts--
		}
		rec.State = journal.Queued
		a.recs[rec.Key] = &rec
		a.requeueLocked(t, &rec)
		if j.began {
			return []journal.Op{{Put: &rec}}
		}
		return nil
	}
	var ops []journal.Op
	if !j.began {
		// It gets its started event now, so that every failed event
		// follows a started one.
		rec.Attempts++
		ev := a.transferEvent(t, &rec, stateStarted, r.Start, time.Time{}, nil, nil)
		rec.EventIDs = append(rec.EventIDs, ev.ID)
		ops = append(ops, journal.Op{Events: []journal.Event{ev}})
	}
	now := time.Now()
	rec.UpdatedAt = now
	rec.ExitCode = r.ExitCode
	rec.LastClass = string(class)
	rec.LastError = errMessage(r.Err)
	rec.SHA256 = j.sum
	var state = stateFailed
	var next *time.Time
	if class.Retryable() && rec.Attempts < t.cfg.RetryMax {
		state = stateRetrying
		rec.State = journal.Queued
		rec.NextTry = now.Add(backoff(t.cfg.RetryBackoff, t.cfg.RetryBackoffMax, rec.Attempts))
		next = &rec.NextTry
		a.requeueLocked(t, &rec)
	} else {
		// Retrying cannot help (or retry_max is reached): the operator
		// must act. A file held by a target-wide failure is sent again
		// by itself once a probe finds the target working.
		rec.State = journal.Failed
		rec.NextTry = time.Time{}
	}
	a.metrics.outcome(t.name, string(state), rec.Size, 0)
	ev := a.transferEvent(t, &rec, state, r.Start, r.End, r.Err, next)
	rec.EventIDs = append(rec.EventIDs, ev.ID)
	a.recs[rec.Key] = &rec
	ops = append(ops, journal.Op{Put: &rec, Events: []journal.Event{ev}})
	a.logger.Warn("transfer failed", keyTransferID, rec.ID, keyFile, rec.Path, keyTarget, t.name, keyClass, class, "attempt", rec.Attempts, "outcome", state, keyErr, r.Err)
	if rec.State == journal.Failed && movesToFailedDir(class) && w != nil && w.FailedDir != "" {
		a.postq = append(a.postq, rec.Key)
	}
	return ops
}

// discardLeftovers removes from the server the temporary files of transfers
// of this batch that began and then failed for good, so that none is left
// behind. Not after a failure of the whole target: reaching the server again
// would be one more refused login.
func (a *Agent) discardLeftovers(t *target, jobs []*job, results []transfer.Result) {
	var items []transfer.Item
	a.mu.Lock()
	for i, r := range results {
		if r.Err == nil || !r.Began || transfer.ClassOf(r.Err).TargetWide() {
			continue
		}
		if rec := a.recs[jobs[i].rec.Key]; rec != nil && rec.ID == jobs[i].rec.ID && rec.State == journal.Failed {
			items = append(items, jobs[i].item)
		}
	}
	a.mu.Unlock()
	if len(items) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(a.sendCtx, time.Minute)
	defer cancel()
	if err := t.client.Discard(ctx, items); err != nil {
		a.logger.Warn("could not remove the temporary files of failed transfers from the server", keyTarget, t.name, "files", len(items), keyErr, err)
	}
}

// errMessage is err's message without its class: the class is shown beside
// it (status, events), never twice.
func errMessage(err error) string {
	var te *transfer.Error
	if errors.As(err, &te) {
		return te.Message
	}
	return err.Error()
}

// movesToFailedDir says whether a file that failed for good with class goes to
// failed_dir. Not when the target failed (the file is fine), nor when the file
// changed or was swapped (what is at its path now is not what failed, and may
// be a writer's file in use or an attacker's link).
func movesToFailedDir(class transfer.Class) bool {
	switch class {
	case transfer.ClassLocalChanged, transfer.ClassUnsafePath:
		return false
	}
	return !class.TargetWide()
}

// localFailure records a file that could not be read: class local-file,
// retried with backoff (permissions may be fixed).
func (a *Agent) localFailure(t *target, w *config.Watch, rec *journal.Record, err error) *journal.Op {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := *rec
	r.Attempts++
	now := time.Now()
	cause := &transfer.Error{Class: transfer.ClassLocalFile, Message: err.Error(), ExitCode: -1}
	r.LastClass, r.LastError, r.UpdatedAt = string(cause.Class), cause.Message, now
	state := stateRetrying
	var next *time.Time
	if r.Attempts < t.cfg.RetryMax {
		r.State = journal.Queued
		r.NextTry = now.Add(backoff(t.cfg.RetryBackoff, t.cfg.RetryBackoffMax, r.Attempts))
		next = &r.NextTry
		a.requeueLocked(t, &r)
	} else {
		state = stateFailed
		r.State = journal.Failed
	}
	a.metrics.outcome(t.name, string(state), r.Size, 0)
	started := a.transferEvent(t, &r, stateStarted, now, time.Time{}, nil, nil)
	ev := a.transferEvent(t, &r, state, now, now, cause, next)
	r.EventIDs = append(r.EventIDs, started.ID, ev.ID)
	a.recs[r.Key] = &r
	a.logger.Warn("cannot read file", keyTransferID, r.ID, keyFile, r.Path, keyErr, err, "attempt", r.Attempts)
	return &journal.Op{Put: &r, Events: []journal.Event{started, ev}}
}

// vanished forgets a queued file that is gone from its folder: someone
// removed or moved it before it could be sent.
//
// Its transfer ends failed (every queued transfer ends completed or failed),
// with class local-changed; a file of the same name that appears later is a
// transfer of its own.
func (a *Agent) vanished(t *target, rec *journal.Record) *journal.Op {
	a.logger.Warn("file disappeared before it was sent", keyTransferID, rec.ID, keyFile, rec.Path, keyTarget, t.name)
	a.mu.Lock()
	r := *rec
	r.Attempts++
	now := time.Now()
	cause := &transfer.Error{Class: transfer.ClassLocalChanged, Message: rec.Path + ": it disappeared (removed or renamed away) before it was sent; nothing was delivered", ExitCode: -1}
	started := a.transferEvent(t, &r, stateStarted, now, time.Time{}, nil, nil)
	ev := a.transferEvent(t, &r, stateFailed, now, now, cause, nil)
	a.metrics.outcome(t.name, string(stateFailed), r.Size, 0)
	a.mu.Unlock()
	op := a.forget(rec)
	op.Events = []journal.Event{started, ev}
	return op
}

// release marks a batch's files as no longer sending, and accepts the newer
// versions that became ready meanwhile: their records and queued events are
// journaled before a worker can take them (as in intakeLoop).
func (a *Agent) release(batch []*journal.Record) {
	a.mu.Lock()
	var ops []journal.Op
	for _, rec := range batch {
		delete(a.sending, rec.Key)
		if f, ok := a.newer[rec.Key]; ok {
			delete(a.newer, rec.Key)
			ops = append(ops, a.accept(f, rec.Watch)...)
		}
	}
	if len(ops) > 0 {
		a.writer.add(ops...)
	}
	a.mu.Unlock()
	if len(ops) > 0 {
		a.writer.flush()
	}
}

// requeueLocked puts rec back into its target's queue.
func (a *Agent) requeueLocked(t *target, rec *journal.Record) {
	if rec.State == journal.Queued {
		t.enqueue(rec.Key)
	}
}

// targetFailed marks t as failing after a failure that concerns the whole
// target: its queue is held and one file at a time probes it. Credentials
// and host keys do not fix themselves, so those probes wait the longest
// backoff: repeated refused logins can lock an account. Called with a.mu.
func (a *Agent) targetFailed(t *target, class transfer.Class, err error) {
	if class == transfer.ClassCanceled || class == "" {
		return
	}
	if t.failClass == "" {
		t.failSince = time.Now()
		a.logger.Error("target failing: holding its queue", keyTarget, t.name, keyClass, class, keyErr, err)
	}
	t.failClass = class
	t.failMsg = errMessage(err)
	t.failures++
	wait := backoff(t.cfg.RetryBackoff, t.cfg.RetryBackoffMax, t.failures)
	if !class.Retryable() && loginRefused(class) {
		wait = t.cfg.RetryBackoffMax
	}
	t.retryAt = time.Now().Add(wait)
}

// targetRecovered clears a target's failing state and releases the files
// held because of it. Called with a.mu.
func (a *Agent) targetRecovered(t *target) {
	if t.failClass == "" {
		return
	}
	a.logger.Info("target works again", keyTarget, t.name, "was", t.failClass, "for", time.Since(t.failSince).Round(time.Second))
	t.failClass, t.failMsg, t.failures = "", "", 0
	t.retryAt = time.Time{}
	a.releaseHeld(t)
}

// releaseHeld requeues the files of t that failed because of the target.
// Called with a.mu.
func (a *Agent) releaseHeld(t *target) {
	var ops []journal.Op
	for _, rec := range a.recs {
		if rec.Target == t.name && rec.State == journal.Failed && transfer.Class(rec.LastClass).TargetWide() && !a.sending[rec.Key] {
			r := *rec
			r.State, r.Attempts, r.NextTry = journal.Queued, 0, time.Time{}
			a.recs[r.Key] = &r
			t.enqueue(r.Key)
			ops = append(ops, journal.Op{Put: &r})
		}
	}
	if len(ops) > 0 {
		a.writer.add(ops...)
	}
}

// backoff is the delay before attempt n+1: base doubling per attempt, capped,
// with ±20% jitter so many files do not retry in lockstep.
func backoff(base, ceiling time.Duration, n int) time.Duration {
	if base <= 0 {
		base = time.Second
	}
	d := base
	for i := 1; i < n && d < ceiling; i++ {
		d *= 2
	}
	if ceiling > 0 && d > ceiling {
		d = ceiling
	}
	jitter := time.Duration((rand.Float64()*0.4 - 0.2) * float64(d))
	return d + jitter
}

// wakeAll pokes every worker (shutdown, reload).
func (a *Agent) wakeAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, t := range a.targets {
		t.poke()
	}
}
