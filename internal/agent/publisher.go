package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/dropship/dropship/events"
)

// publisher drains the journal's outbox to JetStream, in order. An event
// leaves the outbox only once JetStream acknowledged it; until then it is
// published again (with the same id, so JetStream and consumers drop the
// duplicate) after a disconnect, an outage or a restart.
type publisher struct {
	a        *Agent
	kick     chan struct{}
	check    chan struct{} // see recheck
	quit     chan struct{}
	done     chan struct{}
	deadline time.Time // while stopping: give up publishing after this
	mu       sync.Mutex
	lastErr  error
	failing  bool // a publish failed, and was logged, since the last success; only run touches it
}

// streamError is a failed stream check, which checkStream logged.
type streamError struct{ error }

func (e streamError) Unwrap() error { return e.error }

func newPublisher(a *Agent) *publisher {
	return &publisher{a: a, kick: make(chan struct{}, 1), check: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
}

// recheck says the stream must be checked again at once (a reconnect, a
// reload that changed the stream setup), even during a retry's backoff.
func (p *publisher) recheck() {
	p.a.needCheck.Store(true)
	select {
	case p.check <- struct{}{}:
	default:
	}
}

// poke says the outbox has new events.
func (p *publisher) poke() {
	if p == nil {
		return
	}
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

const (
	publishBatch = 256
	// publishTimeout bounds a stream check before publishing. It is short:
	// a check sent while the stream has no leader (a node just died, the
	// cluster is restarting) is never answered, events resume only once a
	// check passed, and an unanswered check is asked again after retryMin;
	// so events resume within about a second of the leader's election (at
	// 5 s, a node kill stalled them 5 s). A healthy server answers in
	// milliseconds.
	publishTimeout = 750 * time.Millisecond
	retryMin       = 100 * time.Millisecond
	// retryMax is low: a lost ack or a leader change is over in seconds,
	// and a reconnect retries at once anyway.
	retryMax = 2 * time.Second
)

func (p *publisher) run() {
	defer close(p.done)
	delay := retryMin
	for {
		if p.stopping() && !time.Now().Before(p.deadline) {
			return
		}
		n, err := p.drain()
		stopping := p.stopping()
		if err != nil {
			p.setErr(err)
			wait := delay
			if stopping {
				wait = min(delay, time.Until(p.deadline))
				if wait <= 0 {
					return
				}
			}
			// A stream problem was logged by the check, a lost
			// connection by the bus; anything else is said once per
			// streak of failures.
			var se streamError
			if !p.failing && !errors.As(err, &se) && !errors.Is(err, events.ErrNotConnected) {
				p.failing = true
				p.a.logger.Warn("publishing lifecycle events failed; they wait in the outbox, retrying", "err", err, "outbox", p.a.journal.OutboxLen())
			} else {
				p.a.logger.Debug("publishing events failed; retrying", "err", err, "in", wait)
			}
			t := time.NewTimer(wait)
			delay = min(delay*2, retryMax)
			if unanswered(err) {
				// The check itself waited publishTimeout: the stream
				// has no leader yet. Ask again soon, so that events
				// resume within a second of its election.
				delay = retryMin
			}
			select {
			case <-t.C:
			case <-p.quitIfRunning(stopping):
			case <-p.check:
				delay = retryMin
			}
			t.Stop()
			continue
		}
		p.setErr(nil)
		if p.failing && n > 0 {
			p.failing = false
			p.a.logger.Info("publishing lifecycle events again")
		}
		delay = retryMin
		if n > 0 {
			continue
		}
		if stopping {
			return
		}
		t := time.NewTimer(5 * time.Second)
		select {
		case <-p.quit:
		case <-p.kick:
		case <-p.check:
		case <-t.C:
		}
		t.Stop()
	}
}

// unanswered reports whether err is a stream check nobody answered in
// time, as while the stream or the cluster elects its leader.
func unanswered(err error) bool {
	var se streamError
	return errors.As(err, &se) && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout))
}

func (p *publisher) stopping() bool {
	select {
	case <-p.quit:
		return true
	default:
		return false
	}
}

// quitIfRunning is the quit channel, or nil (never ready) once stopping.
func (p *publisher) quitIfRunning(stopping bool) <-chan struct{} {
	if stopping {
		return nil
	}
	return p.quit
}

// drain publishes one batch of the outbox; it returns how many events left.
// The stream is checked first after a (re)connect or a reload, and again
// before every attempt while the last check found a problem, so nothing is
// published that cannot be stored, and a fixed stream is noticed within the
// retry delay.
func (p *publisher) drain() (int, error) {
	a := p.a
	entries, err := a.journal.Outbox(publishBatch)
	if err != nil {
		return 0, err
	}
	if a.bus.Connected() && (a.needCheck.Load() || !a.streamOK()) {
		a.needCheck.Store(false)
		ctx, cancel := p.opContext()
		err := a.checkStream(ctx, publishTimeout)
		cancel()
		if err != nil {
			return 0, streamError{err}
		}
	}
	if len(entries) == 0 {
		return 0, nil
	}
	if !a.bus.Connected() {
		return 0, fmt.Errorf("publish %d event(s): %w", len(entries), events.ErrNotConnected)
	}
	// The batch is published at once (asynchronous publishes, each ack
	// matched to its event); an entry leaves the outbox when its own ack
	// arrived. Those without one are published again, under their ids.
	//
	// A batch holds one event per file (the event's subject; agent events
	// have none and count as one file): a later event of the same file
	// waits for the next batch, after this one's acks. Otherwise a publish
	// lost in a leader change while the next one of the same transfer is
	// stored would store "started" before "queued" once the lost one is
	// published again.
	var acked []uint64
	defer func() { _ = a.journal.Ack(acked...) }()
	evs := make([]events.Event, 0, len(entries))
	seqs := make([]uint64, 0, len(entries))
	inBatch := make(map[string]bool, len(entries))
	for _, e := range entries {
		ev, err := events.Parse(e.Data)
		if err != nil {
			// A corrupt entry would block the outbox forever: drop it loudly.
			a.logger.Error("dropping an unreadable outbox entry", "seq", e.Seq, "err", err)
			acked = append(acked, e.Seq)
			continue
		}
		if inBatch[ev.Subject] {
			continue
		}
		inBatch[ev.Subject] = true
		ev.NATSSubject = e.Subject
		evs = append(evs, ev)
		seqs = append(seqs, e.Seq)
	}
	ctx, cancel := p.opContext()
	defer cancel()
	var first error
	for i, err := range a.bus.PublishDurableBatch(ctx, evs) {
		if err == nil {
			acked = append(acked, seqs[i])
		} else if first == nil {
			first = err
		}
	}
	if first != nil {
		// The stream may be gone or changed: find out why before the
		// next attempt.
		a.needCheck.Store(true)
	}
	return len(acked), first
}

// opContext bounds one publish or check: publishTimeout, and the stop's
// deadline once stopping.
func (p *publisher) opContext() (context.Context, context.CancelFunc) {
	if p.stopping() {
		return context.WithDeadline(context.Background(), p.deadline)
	}
	return context.WithCancel(context.Background())
}

func (p *publisher) setErr(err error) {
	p.mu.Lock()
	p.lastErr = err
	p.mu.Unlock()
}

// stop asks for a last drain and waits at most wait for it (0: none).
func (p *publisher) stop(wait time.Duration) {
	p.deadline = time.Now().Add(wait)
	close(p.quit)
	select {
	case <-p.done:
	case <-time.After(wait + time.Second): // every operation ends by the deadline
	}
	if n := p.a.journal.OutboxLen(); n > 0 {
		p.a.logger.Warn("events left in the outbox; they are published after the next start", "count", n, "oldest", p.a.outboxOldest())
	}
}
