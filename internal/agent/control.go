package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/journal"
	"github.com/dropship/dropship/transfer"
	"github.com/dropship/dropship/watcher"
)

// Status is what `dropship status` shows: the answer of the control
// service's status endpoint.
type Status struct {
	Agent         string         `json:"agent"`
	Host          string         `json:"host"` // the agent's host name: it tells apart two agents with one name
	Version       string         `json:"version"`
	StartedAt     time.Time      `json:"started_at"`
	NATSConnected bool           `json:"nats_connected"`
	OutboxDepth   int            `json:"outbox_depth"`
	OutboxOldest  *time.Time     `json:"outbox_oldest,omitempty"` // when the oldest event in the outbox was made
	Stream        StreamStatus   `json:"stream"`                  // the JetStream stream's last check
	Targets       []TargetStatus `json:"targets"`
	Watches       []WatchStatus  `json:"watches"`
	// Sources are the [[source]]s: the partners' servers files are
	// pulled from.
	Sources []SourceStatus `json:"sources,omitempty"`
	// Failed lists the files that failed for good (oldest first, at most
	// maxStatusFiles): what `dropship retry ID` takes.
	Failed []FileStatus `json:"failed,omitempty"`
	// PostFailed lists the files delivered (or failed for good) whose
	// archive, delete or move to failed_dir failed (oldest first, at most
	// maxStatusFiles): they stay where they are and are tried again with
	// backoff, or at once by `dropship retry ID`.
	PostFailed []PostFailedStatus `json:"post_failed,omitempty"`
}

// SourceStatus is one [[source]] in Status.
type SourceStatus struct {
	Name      string     `json:"name"`
	Host      string     `json:"host"`
	RemoteDir string     `json:"remote_dir"`
	Targets   []string   `json:"targets"`
	LastPoll  *time.Time `json:"last_listing,omitempty"` // when its folder was last listed
	// Error is why the last listing failed; "" when it worked.
	Error string `json:"error,omitempty"`
	// Held: the failure is one no retry can help (a refused login or host
	// key, a missing folder): nothing is listed until a reload.
	Held bool `json:"held,omitempty"`
	// Spooled counts its files fetched and not yet delivered to every
	// target (or not yet deleted or moved on the source).
	Spooled int `json:"spooled"`
}

// PostFailedStatus is one file in Status.PostFailed.
type PostFailedStatus struct {
	ID     string `json:"transfer_id"`
	Path   string `json:"path"`
	Watch  string `json:"watch"`
	Target string `json:"target"`
	// Operation is what failed: "archive", "delete" or "failed-dir".
	Operation string    `json:"operation"`
	Error     string    `json:"error"`
	Attempts  int       `json:"attempts"`
	Since     time.Time `json:"since"`
	NextTry   time.Time `json:"next_try"`
}

// maxStatusFiles bounds the files listed in Status.
const maxStatusFiles = 200

// FileStatus is one failed file in Status.
type FileStatus struct {
	ID       string    `json:"transfer_id"`
	Path     string    `json:"path"`
	Target   string    `json:"target"`
	Class    string    `json:"class"`
	Attempts int       `json:"attempts"`
	Error    string    `json:"error"`
	Since    time.Time `json:"since"`
	Warning  string    `json:"warning,omitempty"`
}

// TargetStatus is one target in Status.
type TargetStatus struct {
	Name    string `json:"name"`
	Host    string `json:"host"`
	Port    int    `json:"port"`
	Queued  int    `json:"queued"`  // waiting to be sent (including retries not yet due)
	Running int    `json:"running"` // being sent now
	Failed  int    `json:"failed"`  // failed; waiting for `dropship retry` or the target's recovery
	// State is "ok", "retrying" (a transient failure, backing off) or
	// "failing" (needs an operator: credentials, host key, remote path).
	State     string     `json:"state"`
	Class     string     `json:"class,omitempty"`
	Error     string     `json:"error,omitempty"`
	Since     *time.Time `json:"since,omitempty"`
	NextProbe *time.Time `json:"next_probe,omitempty"`
	// Window is the target's sending window ("22:00-06:00"), when it has
	// one; WindowOpens is when it opens next, while it is closed.
	Window      string     `json:"window,omitempty"`
	WindowOpens *time.Time `json:"window_opens,omitempty"`
	// Bandwidth is the target's rate limit in bytes per second (0: none).
	Bandwidth int64 `json:"bandwidth,omitempty"`
}

// WatchStatus is one watch in Status.
type WatchStatus struct {
	Path   string `json:"path"`
	Target string `json:"target"`
	// Targets are all the targets of a fan-out watch (targets = [...]).
	Targets []string `json:"targets,omitempty"`
	Problem string   `json:"problem,omitempty"`
	// Risk says why readiness rests on the settle period alone for some
	// files of this watch (no CAP_LEASE, a network file system), and what
	// to do.
	Risk string `json:"risk,omitempty"`
	// PostFailed counts its files that were delivered but could not be
	// archived, deleted or moved (Status.PostFailed lists them).
	PostFailed int `json:"post_failed,omitempty"`
}

// RetryRequest asks to send failed files again: the one with transfer id (or
// local path) ID, or every failed file with Failed.
type RetryRequest struct {
	ID     string `json:"id,omitempty"`
	Failed bool   `json:"failed,omitempty"`
}

// RetryResponse says how many files were queued again, and, for targets
// whose login was refused, when they will be tried: a retry does not log in
// again before the target's backoff allows.
type RetryResponse struct {
	Requeued int `json:"requeued"`
	// PostRetried counts delivered files whose archive, delete or move to
	// failed_dir failed earlier and is tried again at once.
	PostRetried int             `json:"post_retried,omitempty"`
	Waiting     []TargetWaiting `json:"waiting,omitempty"`
}

// TargetWaiting is a target that a retry does not try at once.
type TargetWaiting struct {
	Target string    `json:"target"`
	Class  string    `json:"class"`
	Next   time.Time `json:"next_attempt_at"`
}

// control is the nats.go/micro service on <prefix>.<agent>.ctl.*.
type control struct {
	svc micro.Service
}

var semver = regexp.MustCompile(`^\d+\.\d+\.\d+`)

// nameTaken asks on the control subject whether another agent with this
// agent's name is running on the same NATS (a cloned machine keeps its host
// name, the default name): two would share a control subject, and status and
// retry requests would reach either. It returns the error that stops this
// one, naming both hosts, or nil when nobody answers (or NATS cannot be asked
// now).
func nameTaken(a *Agent) error {
	if a.bus == nil || !a.bus.Connected() {
		return nil
	}
	subj := a.subj.Control(events.ControlStatus)
	msg, err := a.bus.Conn().Request(subj, nil, time.Second)
	if err != nil {
		return nil // no responders, or no answer: the name is free
	}
	var other Status
	if json.Unmarshal(msg.Data, &other) != nil || other.Agent == "" {
		return nil
	}
	return fmt.Errorf("another agent named %q runs on host %s, on this NATS (dropship %s, up since %s; it answers on %s), and this one is on host %s: two agents with one name would share its subjects, and status and retry would reach either; set a name of its own in [agent] name (the default is the host name, which cloned machines share)",
		other.Agent, hostOrUnknown(other.Host), other.Version, other.StartedAt.Local().Format(time.RFC3339), subj, hostOrUnknown(hostname()))
}

// hostname is the name of this machine, as Status.Host reports it.
func hostname() string {
	h, _ := os.Hostname()
	return h
}

// hostOrUnknown quotes a host name for a message; an agent older than
// Status.Host does not say its host.
func hostOrUnknown(h string) string {
	if h == "" {
		return "(unknown: a dropship that does not report its host)"
	}
	return fmt.Sprintf("%q", h)
}

// The control service's metadata keys (micro.Info.Metadata): they let
// [Discover], `nats micro info dropship` and `nats micro stats dropship -j`
// name the agent behind each instance. (Its endpoints' queue group is the
// agent's name too, which the table of `nats micro stats` shows.)
const (
	MetaAgent  = "agent"  // the agent's name, [agent] name
	MetaHost   = "host"   // the host it runs on
	MetaPrefix = "prefix" // its subject prefix
)

// ErrCodeNotMine is the retry endpoint's error code (the
// Nats-Service-Error-Code header) for an id or path this agent has no failed
// or waiting transfer for: another agent may own it.
const ErrCodeNotMine = "404"

func startControl(a *Agent) (*control, error) {
	version := a.opts.Version
	if !semver.MatchString(version) {
		version = "0.0.0-" + regexp.MustCompile(`[^0-9A-Za-z-]`).ReplaceAllString(version, "-")
	}
	host := hostname()
	svc, err := micro.AddService(a.bus.Conn(), micro.Config{
		Name:        events.ServiceName,
		Version:     version,
		Description: fmt.Sprintf("dropship agent %s on host %s", a.subj.Agent, host),
		Metadata:    map[string]string{MetaAgent: a.subj.Agent, MetaHost: host, MetaPrefix: a.subj.Prefix},
		// The instances answering for one name are one queue group, named
		// after it: `nats micro stats dropship` shows it per endpoint.
		QueueGroup: a.subj.Agent,
	})
	if err != nil {
		return nil, fmt.Errorf("start control service: %w", err)
	}
	respond := func(req micro.Request, v any, err error) {
		var nm notMine
		switch {
		case errors.As(err, &nm):
			_ = req.Error(ErrCodeNotMine, err.Error(), nil)
			return
		case err != nil:
			_ = req.Error("400", err.Error(), nil)
			return
		}
		_ = req.RespondJSON(v)
	}
	err = svc.AddEndpoint(events.ControlStatus, micro.HandlerFunc(func(req micro.Request) {
		respond(req, a.Status(), nil)
	}), micro.WithEndpointSubject(a.subj.Control(events.ControlStatus)))
	if err == nil {
		err = svc.AddEndpoint(events.ControlRetry, micro.HandlerFunc(func(req micro.Request) {
			var r RetryRequest
			if err := json.Unmarshal(req.Data(), &r); err != nil || (r.ID == "" && !r.Failed) {
				respond(req, nil, fmt.Errorf(`want {"id":"<transfer id or path>"} or {"failed":true}`))
				return
			}
			resp := a.Retry(r)
			if r.ID != "" && resp.Requeued == 0 && resp.PostRetried == 0 {
				respond(req, nil, notMine{r.ID})
				return
			}
			respond(req, resp, nil)
		}), micro.WithEndpointSubject(a.subj.Control(events.ControlRetry)))
	}
	if err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("start control service: %w", err)
	}
	return &control{svc: svc}, nil
}

func (c *control) close() { _ = c.svc.Stop() }

// notMine is the answer to a retry of an id or path this agent has no
// failed or waiting transfer for.
type notMine struct{ id string }

func (e notMine) Error() string {
	return fmt.Sprintf("no failed or waiting transfer with id or path %q", e.id)
}

// Status reports queues, running transfers, failing targets and the outbox.
func (a *Agent) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := Status{
		Agent:         a.subj.Agent,
		Host:          hostname(),
		Version:       a.opts.Version,
		StartedAt:     a.startedAt,
		NATSConnected: a.bus != nil && a.bus.Connected(),
		OutboxDepth:   a.journal.OutboxLen(),
		Stream:        a.streamStatus(a.cfg.NATS.Stream),
	}
	if t := a.outboxOldest(); !t.IsZero() {
		st.OutboxOldest = &t
	}
	byTarget := map[string]*TargetStatus{}
	for _, tc := range a.cfg.Targets {
		ts := TargetStatus{Name: tc.Name, Host: tc.Host, Port: tc.Port, State: "ok", Window: tc.Window.String(), Bandwidth: tc.Bandwidth}
		if now := time.Now(); !tc.Window.Open(now) {
			opens := tc.Window.NextOpen(now)
			ts.WindowOpens = &opens
		}
		if t := a.targets[tc.Name]; t != nil && t.failClass != "" {
			ts.State = "retrying"
			if !t.failClass.Retryable() {
				ts.State = "failing"
			}
			ts.Class, ts.Error = string(t.failClass), t.failMsg
			since, next := t.failSince, t.retryAt
			ts.Since, ts.NextProbe = &since, &next
		}
		st.Targets = append(st.Targets, ts)
		byTarget[tc.Name] = &st.Targets[len(st.Targets)-1]
	}
	for _, rec := range a.recs {
		ts := byTarget[rec.Target]
		if ts == nil {
			continue
		}
		switch {
		case a.sending[rec.Key]:
			ts.Running++
		case rec.State == journal.Queued:
			ts.Queued++
		case rec.State == journal.Failed:
			ts.Failed++
			st.Failed = append(st.Failed, FileStatus{ID: rec.ID, Path: rec.Path, Target: rec.Target, Class: rec.LastClass, Attempts: rec.Attempts, Error: rec.LastError, Since: rec.UpdatedAt, Warning: rec.Warning})
		}
	}
	slices.SortFunc(st.Failed, func(x, y FileStatus) int { return x.Since.Compare(y.Since) })
	if len(st.Failed) > maxStatusFiles {
		st.Failed = st.Failed[len(st.Failed)-maxStatusFiles:]
	}
	postFailed := map[string]int{}
	for key, pf := range a.postFails {
		if a.recs[key] == nil {
			continue
		}
		postFailed[pf.Watch]++
		st.PostFailed = append(st.PostFailed, PostFailedStatus{ID: pf.ID, Path: pf.Path, Watch: pf.Watch, Target: pf.Target, Operation: pf.Op, Error: pf.Err, Attempts: pf.Attempts, Since: pf.Since, NextTry: pf.Next})
	}
	slices.SortFunc(st.PostFailed, func(x, y PostFailedStatus) int { return x.Since.Compare(y.Since) })
	if len(st.PostFailed) > maxStatusFiles {
		st.PostFailed = st.PostFailed[:maxStatusFiles]
	}
	for _, wc := range a.cfg.Watches {
		ws := WatchStatus{Path: wc.Path, Target: wc.Target}
		if names := wc.TargetNames(); len(names) > 1 {
			ws.Targets = names
		}
		if w := a.watches[wc.Path]; w != nil {
			ws.Risk = w.risk
		}
		// The watcher's own writer-check notice says what Risk says.
		if e := a.watchErrs[wc.Path]; e != nil && (e.Kind != watcher.KindWriterCheck || ws.Risk == "") {
			ws.Problem = e.Error()
		}
		ws.PostFailed = postFailed[wc.Path]
		st.Watches = append(st.Watches, ws)
	}
	st.Sources = a.sourcesStatus()
	return st
}

// Retry queues failed files again (and files waiting for a retry, at once).
// It returns how many were queued.
func (a *Agent) Retry(r RetryRequest) RetryResponse {
	a.mu.Lock()
	// Secret files are read again, so a fixed password counts at once.
	if err := a.applyConfig(a.cfg); err != nil {
		a.logger.Warn("retry: could not refresh the targets; using them as they are", keyErr, err)
	}
	var ops []journal.Op
	waiting := map[string]TargetWaiting{}
	for _, rec := range a.recs {
		if a.sending[rec.Key] {
			continue
		}
		match := r.Failed && rec.State == journal.Failed
		if r.ID != "" && (rec.ID == r.ID || rec.Path == r.ID) && (rec.State == journal.Failed || rec.State == journal.Queued) {
			match = true
		}
		if !match {
			continue
		}
		nr := *rec
		nr.State, nr.NextTry, nr.UpdatedAt = journal.Queued, time.Time{}, time.Now()
		if rec.State == journal.Failed {
			nr.Attempts = 0
		}
		a.recs[nr.Key] = &nr
		ops = append(ops, journal.Op{Put: &nr})
		if t := a.targets[nr.Target]; t != nil {
			t.enqueue(nr.Key)
			// A refused login (credentials, host key, a prompt) is
			// tried again only when its backoff allows, however often
			// retry is asked: repeated refused logins can lock the
			// account. Other failures are probed at once.
			if t.failClass != "" && !loginRefused(t.failClass) {
				t.retryAt = time.Now()
			}
			if t.failClass != "" && loginRefused(t.failClass) {
				waiting[t.name] = TargetWaiting{Target: t.name, Class: string(t.failClass), Next: t.retryAt}
			}
		}
	}
	if r.Failed {
		// Files queued by an earlier retry wait for the same targets.
		for _, t := range a.targets {
			if t.failClass != "" && loginRefused(t.failClass) {
				waiting[t.name] = TargetWaiting{Target: t.name, Class: string(t.failClass), Next: t.retryAt}
			}
		}
	}
	// Post-processing that failed is tried at once (its backoff is over).
	postRetried := 0
	for key, pf := range a.postFails {
		rec := a.recs[key]
		if rec == nil || rec.State != journal.Sent || !(r.Failed || pf.ID == r.ID || pf.Path == r.ID) {
			continue
		}
		pf.Next = time.Time{}
		postRetried++
	}
	slices.SortFunc(ops, func(x, y journal.Op) int { return x.Put.QueuedAt.Compare(y.Put.QueuedAt) })
	if len(ops) > 0 {
		// Before a worker can take them (see intakeLoop).
		a.writer.add(ops...)
	}
	a.mu.Unlock()
	a.writer.flush()
	if len(ops) > 0 {
		a.logger.Info("queued again on request", "files", len(ops))
	}
	if postRetried > 0 {
		a.logger.Info("post-processing tried again on request", "files", postRetried)
		a.sweep()
	}
	resp := RetryResponse{Requeued: len(ops), PostRetried: postRetried}
	for _, w := range waiting {
		a.logger.Info("retry: the target's login was refused; it is tried again when its backoff allows", keyTarget, w.Target, keyClass, w.Class, "next_attempt_at", w.Next)
		resp.Waiting = append(resp.Waiting, w)
	}
	return resp
}

// loginRefused says whether class is a refused login: trying again soon
// only repeats it at the partner's server.
func loginRefused(class transfer.Class) bool {
	return class == transfer.ClassAuth || class == transfer.ClassPrompt || class.Security()
}
