package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/dropship/dropship/events"
)

// Queue sizes between NATS and the screen. Lifecycle and agent events get
// their own, larger queue so that a flood of log lines cannot push them out.
const (
	durableQueue    = 8192
	bestEffortQueue = 1024
	seenIDs         = 16384 // lifecycle event ids remembered to drop duplicates
	maxBatch        = 512   // events taken from the queues before the screen is updated
)

// Screen timing on a terminal.
const (
	tickInterval = 100 * time.Millisecond // bar redraws at most this often when only bars changed
	barExpiry    = 5 * time.Minute        // a bar with no news for this long is removed
)

// feed takes events from NATS subscriptions and queues them for the view,
// never blocking nats.go's delivery: what does not fit is counted and
// reported by the view.
type feed struct {
	durable    chan events.Event // transfer lifecycle and agent events
	bestEffort chan events.Event // progress and log events
	conn       chan bool         // connection went up (true) or down

	droppedDurable  atomic.Uint64
	droppedLogs     atomic.Uint64
	droppedProgress atomic.Uint64
	invalid         atomic.Uint64
}

func newFeed() *feed {
	return &feed{
		durable:    make(chan events.Event, durableQueue),
		bestEffort: make(chan events.Event, bestEffortQueue),
		conn:       make(chan bool, 16),
	}
}

// deliver is the handler of every subscription.
func (f *feed) deliver(m *nats.Msg) {
	ev, err := events.ParseMsg(m)
	if err != nil {
		f.invalid.Add(1)
		return
	}
	switch {
	case ev.Durable():
		select {
		case f.durable <- ev:
		default:
			f.droppedDurable.Add(1)
		}
	default:
		select {
		case f.bestEffort <- ev:
		default:
			if ev.Type == events.TypeProgress {
				f.droppedProgress.Add(1)
			} else {
				f.droppedLogs.Add(1)
			}
		}
	}
}

// connState is the bus's OnStateChange: it must not block.
func (f *feed) connState(up bool) {
	select {
	case f.conn <- up:
	default:
	}
}

// viewOptions configure a view.
type viewOptions struct {
	out, errOut io.Writer
	json        bool      // one CloudEvent per line, nothing else on out
	term        terminal  // nil: plain lines, no escape sequences
	style       lineStyle // home agent and colors; now is set per line
	shown       []string  // subjects whose events are shown
	since       string    // -since as given; "": no replay
	now         func() time.Time
}

// view turns events into output: lines or JSON, and progress bars on a
// terminal. It is used by one goroutine.
type view struct {
	viewOptions
	seen  *idSet
	bars  []*bar         // running transfers, oldest first
	ended map[string]int // transfer id → last attempt that ended, so late progress is ignored

	pending  []string     // lines not yet written
	jsonBuf  bytes.Buffer // JSON lines not yet written
	rows     int          // bar rows on the screen
	dirty    bool         // bars changed since the last frame
	lastDraw time.Time
	wasUp    bool // the connection was up at the last state change

	reported struct{ durable, logs, invalid uint64 }
	err      error // the first write error; nothing is written after it
}

func newView(o viewOptions) *view {
	if o.now == nil {
		o.now = time.Now
	}
	return &view{viewOptions: o, seen: newIDSet(seenIDs), ended: map[string]int{}, wasUp: true}
}

// barsOn reports whether progress bars are drawn.
func (v *view) barsOn() bool { return v.term != nil && !v.json }

// handle takes one event. live is false for events replayed from JetStream,
// which are printed but do not start progress bars.
func (v *view) handle(ev events.Event, live bool) {
	if ev.Durable() && !v.seen.add(ev.ID) {
		return // a replayed event seen live, or republished by the agent
	}
	if v.barsOn() {
		v.track(ev, live)
	}
	if !matchesAny(v.shown, ev.NATSSubject) {
		return
	}
	switch {
	case v.json:
		enc := json.NewEncoder(&v.jsonBuf)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(ev) // an Event always encodes: its data is valid JSON
	case v.barsOn() && ev.Type == events.TypeProgress:
		// shown as a bar
	default:
		st := v.style
		st.now = v.now()
		v.pending = append(v.pending, formatEvent(ev, st))
	}
}

// track updates the progress bars with ev.
func (v *view) track(ev events.Event, live bool) {
	now := v.now()
	if state, ok := ev.TransferState(); ok {
		d, err := ev.Transfer()
		if err != nil {
			return
		}
		switch state {
		case events.TransferStarted:
			if !live {
				return
			}
			// Attempts start again from 1 when a held or failed file is
			// released, so a start clears what ended before.
			delete(v.ended, d.TransferID)
			if i := slices.IndexFunc(v.bars, func(b *bar) bool { return b.id == d.TransferID }); i >= 0 && v.bars[i].attempt != d.Attempt {
				v.remove(d.TransferID)
			}
			b := v.bar(d.TransferID, d.Attempt, now)
			b.file, b.target, b.size = d.LocalPath, v.style.where(d.Agent, d.Target.Name), d.SizeBytes
		case events.TransferQueued:
			v.remove(d.TransferID)
		default: // the attempt ended
			if len(v.ended) >= seenIDs {
				clear(v.ended)
			}
			v.ended[d.TransferID] = max(v.ended[d.TransferID], d.Attempt)
			v.remove(d.TransferID)
		}
		return
	}
	if ev.Type != events.TypeProgress || !live {
		return
	}
	d, err := ev.Progress()
	if err != nil || v.ended[d.TransferID] >= d.Attempt {
		return
	}
	b := v.bar(d.TransferID, d.Attempt, now)
	if b.attempt > d.Attempt {
		return // a late frame of an earlier attempt
	}
	b.file, b.target = d.LocalPath, v.style.where(d.Agent, d.Target.Name)
	b.sent, b.size, b.rate, b.eta, b.stalled = d.BytesSent, d.SizeBytes, d.BytesPerSecond, d.ETASeconds, d.Stalled
}

// bar returns the bar of transfer id, created when missing, reset when an
// attempt newer than its own begins.
func (v *view) bar(id string, attempt int, now time.Time) *bar {
	v.dirty = true
	for _, b := range v.bars {
		if b.id == id {
			if attempt > b.attempt {
				*b = bar{id: id, attempt: attempt}
			}
			b.updated = now
			return b
		}
	}
	b := &bar{id: id, attempt: attempt, updated: now}
	v.bars = append(v.bars, b)
	return b
}

func (v *view) remove(id string) {
	for i, b := range v.bars {
		if b.id == id {
			v.bars = append(v.bars[:i], v.bars[i+1:]...)
			v.dirty = true
			return
		}
	}
}

// expire removes bars that had no news for barExpiry: their end was missed.
func (v *view) expire() {
	now := v.now()
	kept := v.bars[:0]
	for _, b := range v.bars {
		if now.Sub(b.updated) < barExpiry {
			kept = append(kept, b)
		}
	}
	if len(kept) != len(v.bars) {
		clear(v.bars[len(kept):])
		v.dirty = true
	}
	v.bars = kept
}

// notice reports something of dropship's own: a line among the events for
// people, a line on stderr with -json (stdout holds only events).
func (v *view) notice(msg string) {
	if v.json {
		fmt.Fprintf(v.errOut, "dropship events: %s\n", msg)
		return
	}
	st := v.style
	st.now = v.now()
	v.pending = append(v.pending, noticeLine(st, st.now, "warning", msg))
}

// checkDrops reports events the queues could not hold since the last check.
// Dropped progress frames are not reported: the next frame replaces them.
func (v *view) checkDrops(f *feed) {
	if n := f.droppedDurable.Load(); n > v.reported.durable {
		v.notice(fmt.Sprintf("output too slow: %d lifecycle event(s) were not shown; they are stored in JetStream: see them with -since %s",
			n-v.reported.durable, v.replayHint()))
		v.reported.durable = n
	}
	if n := f.droppedLogs.Load(); n > v.reported.logs {
		v.notice(fmt.Sprintf("output too slow: %d log event(s) were not shown", n-v.reported.logs))
		v.reported.logs = n
	}
	if n := f.invalid.Load(); n > v.reported.invalid {
		v.notice(fmt.Sprintf("ignored %d message(s) that are not dropship events", n-v.reported.invalid))
		v.reported.invalid = n
	}
}

// replayHint is a -since value that covers what was just missed.
func (v *view) replayHint() string {
	if v.since != "" {
		return v.since
	}
	return "10m"
}

// connState reports a lost or restored connection.
func (v *view) connState(up bool) {
	if up == v.wasUp {
		return
	}
	v.wasUp = up
	if up {
		v.notice("reconnected to NATS; events published while disconnected are not shown: lifecycle events can be replayed with -since")
	} else {
		v.notice("connection to NATS lost; reconnecting")
	}
}

// flush writes what is pending. Bars alone are redrawn only when force is
// set (the ticker), so that a burst of progress frames costs one frame.
func (v *view) flush(force bool) error {
	if v.err != nil {
		return v.err
	}
	var out []byte
	switch {
	case v.json:
		out = v.jsonBuf.Bytes()
	case v.barsOn():
		if len(v.pending) == 0 && (!v.dirty || !force) {
			return nil
		}
		w, h := v.term.size()
		now := v.now()
		out, v.rows = frame(v.rows, w, h, now, v.pending, v.bars)
		v.dirty, v.lastDraw = false, now
	default:
		if len(v.pending) > 0 {
			out = []byte(strings.Join(v.pending, "\n") + "\n")
		}
	}
	v.pending = v.pending[:0]
	v.jsonBuf.Reset()
	if len(out) == 0 {
		return nil
	}
	if _, err := v.out.Write(out); err != nil {
		v.err = fmt.Errorf("write events: %w", err)
	}
	return v.err
}

// close writes what is pending and erases the bars.
func (v *view) close() error {
	if v.barsOn() && v.err == nil {
		v.bars = nil
		v.dirty = true
	}
	return v.flush(true)
}

// run shows the events of f until ctx is done. It returns nil then, or the
// first error writing the output.
func (v *view) run(ctx context.Context, f *feed) error {
	var tick <-chan time.Time
	if v.barsOn() {
		t := time.NewTicker(tickInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		force := false
		select {
		case <-ctx.Done():
			return v.close()
		case ev := <-f.durable:
			v.handle(ev, true)
		case ev := <-f.bestEffort:
			v.handle(ev, true)
		case up := <-f.conn:
			v.connState(up)
		case <-tick:
			v.expire()
			// Bars show how long they had no news: refresh them now and then.
			if len(v.bars) > 0 && v.now().Sub(v.lastDraw) >= time.Second {
				v.dirty = true
			}
			force = true
		}
	drain:
		for range maxBatch {
			select {
			case ev := <-f.durable:
				v.handle(ev, true)
			case ev := <-f.bestEffort:
				v.handle(ev, true)
			default:
				break drain
			}
		}
		v.checkDrops(f)
		if err := v.flush(force); err != nil {
			return err
		}
	}
}

// replay prints the lifecycle events stored in stream on subjects during
// the last since, before the live ones.
func (v *view) replay(ctx context.Context, bus *events.Bus, stream string, subjects []string, since time.Duration) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	err := bus.Replay(ctx, stream, subjects, since, func(ev events.Event) {
		v.handle(ev, false)
		if len(v.pending) >= maxBatch || v.jsonBuf.Len() >= 1<<16 {
			if v.flush(true) != nil {
				cancel()
			}
		}
	})
	if v.err != nil {
		return v.err
	}
	if err != nil {
		return err
	}
	return v.flush(true)
}

// idSet remembers the last n ids added.
type idSet struct {
	m    map[string]struct{}
	ring []string
	next int
}

func newIDSet(n int) *idSet {
	return &idSet{m: make(map[string]struct{}, n), ring: make([]string, n)}
}

// add adds id and reports whether it was new.
func (s *idSet) add(id string) bool {
	if _, ok := s.m[id]; ok {
		return false
	}
	if old := s.ring[s.next]; old != "" {
		delete(s.m, old)
	}
	s.ring[s.next] = id
	s.next = (s.next + 1) % len(s.ring)
	s.m[id] = struct{}{}
	return true
}

// matchesAny reports whether subject matches one of the patterns.
func matchesAny(patterns []string, subject string) bool {
	for _, p := range patterns {
		if events.SubjectCovers(p, subject) {
			return true
		}
	}
	return false
}
