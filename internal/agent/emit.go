package agent

import (
	"encoding/json"
	"errors"
	"os"
	"sync"
	"time"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/journal"
	"github.com/dropship/dropship/transfer"
)

// Lifecycle states, as the events package names them.
const (
	stateQueued    = events.TransferQueued
	stateStarted   = events.TransferStarted
	stateRetrying  = events.TransferRetrying
	stateCompleted = events.TransferCompleted
	stateFailed    = events.TransferFailed
	// statePostFailed: delivered, but not archived, deleted or moved.
	statePostFailed = events.TransferPostFailed
)

// progressInterval is the most often a transfer publishes progress: a little
// less than transfer's own report interval (200 ms), so that every report
// is published and a progress bar follows the bytes within half a second.
const progressInterval = 150 * time.Millisecond

// transferEvent builds the lifecycle event of rec for the outbox. start and
// end bound the attempt (zero when not applicable); cause is the failure of a
// retrying or failed event; next is when a retry is due.
func (a *Agent) transferEvent(t *target, rec *journal.Record, state events.TransferState, start, end time.Time, cause error, next *time.Time) journal.Event {
	d := events.Transfer{
		TransferID: rec.ID,
		Attempt:    rec.Attempts,
		Agent:      a.subj.Agent,
		Watch:      rec.Watch,
		Target:     events.TargetRef{Name: t.name, Host: t.cfg.Host, Port: t.cfg.Port},
		LocalPath:  rec.Path,
		RemotePath: transfer.RemotePath(t.cfg.RemoteDir, remoteRel(rec)),
		SizeBytes:  rec.Size,
		SHA256:     rec.SHA256,
		Reason:     rec.Reason,
		Warning:    rec.Warning,
	}
	if !start.IsZero() {
		d.StartedAt = &start
	}
	if !end.IsZero() {
		d.FinishedAt = &end
		if !start.IsZero() && end.After(start) {
			d.DurationSeconds = end.Sub(start).Seconds()
			d.BytesPerSecond = float64(rec.Size) / d.DurationSeconds
		}
	}
	if state == stateCompleted || state == stateFailed || state == stateRetrying {
		code := rec.ExitCode
		if !end.IsZero() {
			d.ExitCode = &code
		}
	}
	if cause != nil {
		class := transfer.ClassOf(cause)
		msg := cause.Error()
		var te *transfer.Error
		if errors.As(cause, &te) {
			msg = te.Message
		}
		d.Error = &events.ErrorInfo{Class: string(class), Message: msg, Retryable: state == stateRetrying || state == statePostFailed}
		d.NextAttemptAt = next
	}
	ev, err := events.NewTransfer(a.subj, state, d)
	if err != nil {
		a.logger.Error("cannot build a transfer event; this is a bug", "state", state, "err", err)
	}
	return outboxEvent(ev)
}

// outboxEvent is ev as the journal stores it.
func outboxEvent(ev events.Event) journal.Event {
	b, _ := json.Marshal(ev)
	return journal.Event{ID: ev.ID, Subject: ev.NATSSubject, Data: b}
}

// emitAgent writes an agent event to the outbox.
func (a *Agent) emitAgent(state events.AgentState, msg string, cause error) {
	host, _ := os.Hostname()
	d := events.Agent{Agent: a.subj.Agent, Version: a.opts.Version, Hostname: host, PID: os.Getpid(), Message: msg}
	if cause != nil {
		d.Error = cause.Error()
	}
	a.mu.Lock()
	subj := a.subj
	a.mu.Unlock()
	ev, err := events.NewAgent(subj, state, d)
	if err != nil {
		a.logger.Error("cannot build an agent event; this is a bug", "err", err)
		return
	}
	a.commit(journal.Op{Events: []journal.Event{outboxEvent(ev)}})
}

// logStream publishes the lines and progress of one batch: best effort, on
// core NATS, never blocking the transfer. Progress is rate-limited per file.
type logStream struct {
	a       *Agent
	t       *target
	logs    bool
	seq     map[string]int
	lastPub map[string]time.Time
}

func (a *Agent) newLogStream(t *target) *logStream {
	return &logStream{a: a, t: t, logs: a.publishLogs.Load(), seq: map[string]int{}, lastPub: map[string]time.Time{}}
}

func (l *logStream) line(j *job, line string) {
	if !l.logs || j == nil {
		return
	}
	l.seq[j.rec.ID]++
	ev, err := events.NewLog(l.a.subj, events.Log{
		TransferID: j.rec.ID,
		Attempt:    j.rec.Attempts,
		Target:     events.TargetRef{Name: l.t.name, Host: l.t.cfg.Host, Port: l.t.cfg.Port},
		Line:       line,
		Seq:        l.seq[j.rec.ID],
	})
	if err == nil {
		_ = l.a.bus.PublishBestEffort(ev)
	}
}

func (l *logStream) progress(j *job, p transfer.Progress) {
	if j == nil {
		return
	}
	now := time.Now()
	if !p.Final && now.Sub(l.lastPub[j.rec.ID]) < progressInterval {
		return
	}
	l.lastPub[j.rec.ID] = now
	ev, err := events.NewProgress(l.a.subj, events.Progress{
		TransferID:     j.rec.ID,
		Attempt:        j.rec.Attempts,
		Target:         events.TargetRef{Name: l.t.name, Host: l.t.cfg.Host, Port: l.t.cfg.Port},
		LocalPath:      j.rec.Path,
		RemotePath:     j.item.RemotePath(),
		Percent:        p.Percent,
		BytesSent:      min(p.Bytes, j.rec.Size),
		SizeBytes:      j.rec.Size,
		BytesPerSecond: p.BytesPerSecond,
		ETASeconds:     int(p.ETA / time.Second),
		Stalled:        p.Stalled,
	})
	if err == nil {
		_ = l.a.bus.PublishBestEffort(ev)
	}
}

// connectionLine publishes a line of a target's shared connection.
func (a *Agent) connectionLine(name, host string, port int, line string) {
	if !a.publishLogs.Load() || a.bus == nil {
		return
	}
	ev, err := events.NewLog(a.subj, events.Log{Target: events.TargetRef{Name: name, Host: host, Port: port}, Line: line})
	if err == nil {
		_ = a.bus.PublishBestEffort(ev)
	}
}

// journalWriter applies journal changes in groups: callers on hot paths (a
// file's upload began) add changes without waiting for an fsync; flush
// applies everything added so far before returning, so order is kept.
type journalWriter struct {
	a       *Agent
	mu      sync.Mutex // guards pending
	pending []journal.Op
	applyMu sync.Mutex // held while a group is written: keeps groups in order
	kick    chan struct{}
}

func newJournalWriter(a *Agent) *journalWriter {
	return &journalWriter{a: a, kick: make(chan struct{}, 1)}
}

// add queues changes; they are written within milliseconds.
func (w *journalWriter) add(ops ...journal.Op) {
	w.mu.Lock()
	w.pending = append(w.pending, ops...)
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// flush writes everything added so far.
func (w *journalWriter) flush() {
	w.applyMu.Lock()
	defer w.applyMu.Unlock()
	w.mu.Lock()
	ops := w.pending
	w.pending = nil
	w.mu.Unlock()
	if len(ops) == 0 {
		return
	}
	if err := w.a.journal.Apply(ops...); err != nil {
		w.a.logger.Error("cannot write the journal; stopping", "err", err)
		w.a.fail(err)
		return
	}
	w.a.pub.poke()
}

// groupDelay is how long added changes may wait to be written together: in a
// batch of small files a started event arrives every millisecond or so, and
// one fsync each would cost more than the uploads.
const groupDelay = 10 * time.Millisecond

// run writes what was added, in groups, until done is closed.
func (w *journalWriter) run(done <-chan struct{}) {
	for {
		select {
		case <-done:
			w.flush()
			return
		case <-w.kick:
		}
		t := time.NewTimer(groupDelay)
		select {
		case <-done:
		case <-t.C:
		}
		t.Stop()
		w.flush()
	}
}

// commit writes ops now, after everything added before.
func (a *Agent) commit(ops ...journal.Op) {
	if len(ops) == 0 {
		return
	}
	a.writer.add(ops...)
	a.writer.flush()
}
