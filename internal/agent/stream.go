package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/config"
)

// keyStream is the log attribute naming the JetStream stream.
const keyStream = "stream"

// StreamStatus is the state of the JetStream stream lifecycle events are
// stored in, as the agent last checked it (at start, on every reconnect, and
// again while something is wrong).
type StreamStatus struct {
	Name          string `json:"name"`
	ServerVersion string `json:"server_version,omitempty"`
	// Stored is true when the last check found that events can be stored.
	Stored bool `json:"stored"`
	// Problem is why events cannot be stored, and Fix what to do about it.
	Problem string `json:"problem,omitempty"`
	Fix     string `json:"fix,omitempty"`
	// Warnings do not stop events from being stored (an old server, a
	// short duplicate window); each says what to do.
	Warnings  []string   `json:"warnings,omitempty"`
	CheckedAt *time.Time `json:"checked_at,omitempty"`
}

// streamHealth is the last check of the events stream. Checks run on the
// publisher's goroutine (and once at start, before it runs); readers are
// status, /readyz and the metrics.
type streamHealth struct {
	mu      sync.Mutex
	check   events.StreamCheck
	err     error // the server could not be asked
	checked time.Time
	logged  string          // the problem last logged, so each is logged once
	warned  map[string]bool // warnings logged
}

// errUnchecked marks, in streamHealth.logged, a check that could not ask.
const errUnchecked = "\x00unchecked"

// streamSetup is what the running configuration says about the stream.
func (a *Agent) streamSetup() events.StreamSetup {
	cfg := a.config()
	return StreamSetupOf(cfg, a.emb != nil || cfg.NATS.AutoCreateStream, a.emb != nil)
}

// StreamSetupOf is the stream setup cfg describes: its name, subjects, and
// the size and placement of a stream that is created (with create).
func StreamSetupOf(cfg *config.Config, create, owned bool) events.StreamSetup {
	subjects := events.AllLifecycle(cfg.NATS.SubjectPrefix)
	if len(cfg.Sources) > 0 {
		subjects = append(subjects, events.AllFetch(cfg.NATS.SubjectPrefix))
	}
	return events.StreamSetup{
		Name:       cfg.NATS.Stream,
		Subjects:   subjects,
		Create:     create,
		Replicas:   cfg.NATS.StreamReplicas,
		Owned:      owned,
		MaxBytes:   cfg.NATS.StreamMaxBytes,
		MaxAge:     cfg.NATS.StreamMaxAge,
		Duplicates: cfg.NATS.DuplicateWindow,
		Cluster:    cfg.NATS.StreamCluster,
		Tags:       cfg.NATS.StreamTags,
	}
}

// checkStream checks the server and the stream (creating it when the agent
// may), records the outcome, logs what changed (a problem at ERROR with its
// fix, once; its end at INFO), and returns why events cannot be stored, or
// nil.
func (a *Agent) checkStream(ctx context.Context, timeout time.Duration) error {
	setup := a.streamSetup()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := a.bus.CheckStream(cctx, setup)
	h := &a.stream
	h.mu.Lock()
	defer h.mu.Unlock()
	h.check, h.err, h.checked = c, err, time.Now()
	if err != nil {
		if !errors.Is(err, events.ErrNotConnected) && h.logged != errUnchecked {
			h.logged = errUnchecked
			a.logger.Warn("cannot check the JetStream stream; lifecycle events wait in the outbox, retrying", keyStream, setup.Name, keyErr, err)
		}
		return fmt.Errorf("check JetStream stream %s: %w", setup.Name, err)
	}
	if h.warned == nil {
		h.warned = map[string]bool{}
	}
	for _, w := range c.Warnings {
		if !h.warned[w] {
			h.warned[w] = true
			a.logger.Warn(w, keyStream, setup.Name)
		}
	}
	if c.OK() {
		a.bus.ExpectStream(setup.Name)
		if h.logged != "" {
			h.logged = ""
			a.logger.Info("lifecycle events can be stored again; publishing the outbox", keyStream, setup.Name, "outbox", a.journal.OutboxLen())
		}
		return nil
	}
	if h.logged != c.Problem {
		h.logged = c.Problem
		a.logger.Error("lifecycle events cannot be stored: "+c.Problem+"; they wait in the outbox", "fix", c.Fix, keyStream, setup.Name,
			"nats_server", c.ServerVersion, "outbox", a.journal.OutboxLen())
	}
	return c.Err()
}

// streamOK reports whether the last check found that events can be stored.
func (a *Agent) streamOK() bool {
	h := &a.stream
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.checked.IsZero() && h.err == nil && h.check.OK()
}

// streamStatus is StreamStatus from the last check.
func (a *Agent) streamStatus(name string) StreamStatus {
	h := &a.stream
	h.mu.Lock()
	defer h.mu.Unlock()
	st := StreamStatus{Name: name}
	if h.checked.IsZero() {
		return st
	}
	at := h.checked
	st.CheckedAt = &at
	st.ServerVersion = h.check.ServerVersion
	st.Warnings = h.check.Warnings
	switch {
	case h.err != nil && errors.Is(h.err, events.ErrNotConnected):
		st.Problem, st.Fix = "not connected to NATS", "check that the NATS server is up and nats.url is right"
	case h.err != nil:
		st.Problem, st.Fix = "the stream could not be checked: "+h.err.Error(), "check that the NATS server is up and its JetStream answers"
	default:
		st.Problem, st.Fix = h.check.Problem, h.check.Fix
	}
	st.Stored = st.Problem == ""
	return st
}

// outboxOldest is the time of the oldest event in the outbox, or zero when
// the outbox is empty.
func (a *Agent) outboxOldest() time.Time {
	entries, err := a.journal.Outbox(1)
	if err != nil || len(entries) == 0 {
		return time.Time{}
	}
	ev, err := events.Parse(entries[0].Data)
	if err != nil {
		return time.Time{}
	}
	return ev.Time
}
