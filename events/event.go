package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
)

// SpecVersion is the CloudEvents version of every envelope.
const SpecVersion = "1.0"

// ContentType is the datacontenttype of every envelope: data is JSON.
const ContentType = "application/json"

// StructuredContentType is the value of the Content-Type header on every NATS
// message: the payload is a CloudEvent in structured JSON mode.
const StructuredContentType = "application/cloudevents+json"

const typePrefix = "dev.dropship."

// CloudEvents types of every event kind.
const (
	TypeTransferQueued    = typePrefix + "transfer.queued"
	TypeTransferStarted   = typePrefix + "transfer.started"
	TypeTransferRetrying  = typePrefix + "transfer.retrying"
	TypeTransferCompleted = typePrefix + "transfer.completed"
	TypeTransferFailed    = typePrefix + "transfer.failed"
	// TypeTransferPostFailed: a delivered file could not be archived,
	// deleted or moved to failed_dir.
	TypeTransferPostFailed = typePrefix + "transfer.post-failed"
	TypeProgress           = typePrefix + "transfer.progress"
	TypeLog                = typePrefix + "transfer.log"
	TypeAgentStarted       = typePrefix + "agent.started"
	TypeAgentReloaded      = typePrefix + "agent.reloaded"
	TypeAgentStopping      = typePrefix + "agent.stopping"
	TypeAgentError         = typePrefix + "agent.error"
)

// Type is the CloudEvents type of a lifecycle event in state s, such as
// [TypeTransferCompleted].
func (s TransferState) Type() string { return typePrefix + tokenTransfer + "." + string(s) }

// Type is the CloudEvents type of an agent event in state s, such as
// [TypeAgentStarted].
func (s AgentState) Type() string { return typePrefix + tokenAgent + "." + string(s) }

// Event is a CloudEvents 1.0 envelope in structured JSON mode: its JSON
// encoding is the payload of the NATS message, and the message's Nats-Msg-Id
// header equals ID, so JetStream and consumers can drop duplicates.
type Event struct {
	SpecVersion     string          `json:"specversion"`       // always "1.0"
	ID              string          `json:"id"`                // UUIDv7: unique and sortable by creation time
	Source          string          `json:"source"`            // "/dropship/<agent>"
	Type            string          `json:"type"`              // one of the Type… constants
	Subject         string          `json:"subject,omitempty"` // the local file path, for transfer and progress events
	Time            time.Time       `json:"time"`              // when the event was created, UTC
	DataContentType string          `json:"datacontenttype"`   // always "application/json"
	Data            json.RawMessage `json:"data"`              // Transfer, Progress, Log or Agent

	// NATSSubject is the subject the event is published on. It is not part
	// of the JSON; [ParseMsg] fills it from the message.
	NATSSubject string `json:"-"`
}

// TargetRef names the target of a transfer. It never holds credentials.
type TargetRef struct {
	Name string `json:"name"`
	Host string `json:"host"`
	Port int    `json:"port"`
}

// ErrorInfo describes why an attempt failed.
type ErrorInfo struct {
	Class     string `json:"class"`     // a stable machine-readable class, e.g. "auth", "hostkey-changed", "connect-timeout" (docs/events.md lists them)
	Message   string `json:"message"`   // for people; never a secret
	Retryable bool   `json:"retryable"` // whether dropship would (or did) try again
}

// Transfer is the data of a transfer lifecycle event. Every field is always
// present in the JSON (null or zero when not known yet) except error, which is
// present only on retrying, failed and post-failed events, reason, present on
// queued events, and next_attempt_at, present on retrying and post-failed
// events.
type Transfer struct {
	TransferID      string     `json:"transfer_id"`      // stable across attempts
	Attempt         int        `json:"attempt"`          // 1 for the first attempt; 0 while queued
	Agent           string     `json:"agent"`            // agent name
	Watch           string     `json:"watch"`            // the watched folder the file came from
	Target          TargetRef  `json:"target"`           //
	LocalPath       string     `json:"local_path"`       // absolute path of the source file
	RemotePath      string     `json:"remote_path"`      // final path on the remote
	SizeBytes       int64      `json:"size_bytes"`       //
	SHA256          string     `json:"sha256"`           // hex digest of the content sent; empty until known
	StartedAt       *time.Time `json:"started_at"`       // start of this attempt
	FinishedAt      *time.Time `json:"finished_at"`      // end of this attempt
	DurationSeconds float64    `json:"duration_seconds"` // of this attempt
	BytesPerSecond  float64    `json:"bytes_per_second"` // average over this attempt
	ExitCode        *int       `json:"exit_code"`        // of the OpenSSH client, once it exited
	Error           *ErrorInfo `json:"error,omitempty"`  // retrying, failed and post-failed only
	// Reason says why the file was judged ready (queued only), e.g.
	// "settled 2s" or "marker x.done".
	Reason string `json:"reason,omitempty"`
	// NextAttemptAt is when the next attempt is due (retrying only), or,
	// on a post-failed event, when the archive, delete or move is tried again.
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
	// Warning says what looks wrong about this version of the file and what
	// to do, e.g. that it reappeared right after an earlier version was
	// delivered (a writer that closes and reopens it between pieces: raise
	// settle or use ready_marker).
	Warning string `json:"warning,omitempty"`
}

// Progress is the data of a progress event: a sample of a running attempt,
// published best effort and rate-limited.
type Progress struct {
	TransferID     string    `json:"transfer_id"`
	Attempt        int       `json:"attempt"`
	Agent          string    `json:"agent"`
	Target         TargetRef `json:"target"`
	LocalPath      string    `json:"local_path"`
	RemotePath     string    `json:"remote_path"`
	Percent        int       `json:"percent"` // 0 to 100
	BytesSent      int64     `json:"bytes_sent"`
	SizeBytes      int64     `json:"size_bytes"`
	BytesPerSecond float64   `json:"bytes_per_second"` // current rate
	ETASeconds     int       `json:"eta_seconds"`      // 0 when unknown or done
	Stalled        bool      `json:"stalled"`          // no progress for a while
}

// Log is the data of a log event: one line the OpenSSH client printed, with
// secrets never included (prompts are answered, not echoed).
type Log struct {
	TransferID string    `json:"transfer_id"` // empty for a line of a target's shared connection
	Attempt    int       `json:"attempt"`     // 0 for a shared connection
	Agent      string    `json:"agent"`
	Target     TargetRef `json:"target"`
	Line       string    `json:"line"` // without the line ending
	Seq        int       `json:"seq"`  // 1, 2, … within one attempt or connection, to order lines
}

// Agent is the data of an agent event.
type Agent struct {
	Agent    string `json:"agent"`
	Version  string `json:"version"`
	Hostname string `json:"hostname"`
	PID      int    `json:"pid"`
	Message  string `json:"message"`
	Error    string `json:"error,omitempty"` // error events only
}

// New returns an event of type typ with a fresh UUIDv7 id and the current
// time, to be published on natsSubject. data is encoded as JSON. Prefer
// [NewTransfer], [NewProgress], [NewLog] and [NewAgent], which fill the
// subject, type and source consistently.
func New(natsSubject, typ, source, subject string, data any) (Event, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return Event{}, fmt.Errorf("new event id: %w", err)
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return Event{}, fmt.Errorf("encode %s event data: %w", typ, err)
	}
	return Event{
		SpecVersion:     SpecVersion,
		ID:              id.String(),
		Source:          source,
		Type:            typ,
		Subject:         subject,
		Time:            time.Now().UTC(),
		DataContentType: ContentType,
		Data:            raw,
		NATSSubject:     natsSubject,
	}, nil
}

// NewTransfer returns the lifecycle event of d in state, on
// s.Transfer(d.Target.Name, state). d.Agent defaults to s.Agent and times are
// stored in UTC. d.Error must be set exactly for retrying, failed and
// post-failed events.
func NewTransfer(s Subjects, state TransferState, d Transfer) (Event, error) {
	if !slices.Contains(TransferStates, state) {
		return Event{}, fmt.Errorf("new transfer event: unknown state %q", state)
	}
	if d.Target.Name == "" {
		return Event{}, fmt.Errorf("new transfer %s event: no target name", state)
	}
	failing := state == TransferRetrying || state == TransferFailed || state == TransferPostFailed
	if failing && d.Error == nil {
		return Event{}, fmt.Errorf("new transfer %s event: no error information", state)
	}
	if !failing && d.Error != nil {
		return Event{}, fmt.Errorf("new transfer %s event: error information on a transfer that is not failing", state)
	}
	if d.Agent == "" {
		d.Agent = s.Agent
	}
	d.StartedAt, d.FinishedAt, d.NextAttemptAt = utc(d.StartedAt), utc(d.FinishedAt), utc(d.NextAttemptAt)
	return New(s.Transfer(d.Target.Name, state), state.Type(), s.Source(), d.LocalPath, d)
}

// NewProgress returns the progress event of d, on s.Progress(d.Target.Name).
func NewProgress(s Subjects, d Progress) (Event, error) {
	if d.Target.Name == "" {
		return Event{}, errors.New("new progress event: no target name")
	}
	if d.Agent == "" {
		d.Agent = s.Agent
	}
	return New(s.Progress(d.Target.Name), TypeProgress, s.Source(), d.LocalPath, d)
}

// NewLog returns the log event of d, on s.Log(d.Target.Name).
func NewLog(s Subjects, d Log) (Event, error) {
	if d.Target.Name == "" {
		return Event{}, errors.New("new log event: no target name")
	}
	if d.Agent == "" {
		d.Agent = s.Agent
	}
	return New(s.Log(d.Target.Name), TypeLog, s.Source(), "", d)
}

// NewAgent returns the agent event of d in state, on s.AgentEvent(state).
func NewAgent(s Subjects, state AgentState, d Agent) (Event, error) {
	if !slices.Contains(AgentStates, state) {
		return Event{}, fmt.Errorf("new agent event: unknown state %q", state)
	}
	if d.Agent == "" {
		d.Agent = s.Agent
	}
	return New(s.AgentEvent(state), state.Type(), s.Source(), "", d)
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// Parse decodes a structured-mode CloudEvent and checks the attributes
// dropship relies on. NATSSubject is left empty; see [ParseMsg].
func Parse(b []byte) (Event, error) {
	var ev Event
	if err := json.Unmarshal(b, &ev); err != nil {
		return Event{}, fmt.Errorf("decode event: %w", err)
	}
	return ev, checkParsed(ev)
}

// checkParsed checks the attributes dropship relies on.
func checkParsed(ev Event) error {
	switch {
	case ev.SpecVersion != SpecVersion:
		return fmt.Errorf("decode event %s: specversion %q, want %q", ev.ID, ev.SpecVersion, SpecVersion)
	case ev.ID == "", ev.Source == "", ev.Type == "":
		return fmt.Errorf("decode event: id, source and type are required (id %q, source %q, type %q)", ev.ID, ev.Source, ev.Type)
	}
	return nil
}

// ParseMsg decodes the event carried by m and sets its NATSSubject.
func ParseMsg(m *nats.Msg) (Event, error) {
	ev, err := ParseHeaders(m.Header, m.Data)
	if err != nil {
		return Event{}, fmt.Errorf("message on %s: %w", m.Subject, err)
	}
	ev.NATSSubject = m.Subject
	return ev, nil
}

// TransferState returns the state of a transfer lifecycle event, and false
// for any other event.
func (e Event) TransferState() (TransferState, bool) {
	state, ok := strings.CutPrefix(e.Type, typePrefix+tokenTransfer+".")
	if !ok || !slices.Contains(TransferStates, TransferState(state)) {
		return "", false
	}
	return TransferState(state), true
}

// AgentState returns the state of an agent event, and false for any other
// event.
func (e Event) AgentState() (AgentState, bool) {
	state, ok := strings.CutPrefix(e.Type, typePrefix+tokenAgent+".")
	if !ok || !slices.Contains(AgentStates, AgentState(state)) {
		return "", false
	}
	return AgentState(state), true
}

// Durable reports whether e is a transfer lifecycle, fetch or agent event: those go
// through the outbox and [Bus.PublishDurable]; progress and log events go
// through [Bus.PublishBestEffort].
func (e Event) Durable() bool {
	_, transfer := e.TransferState()
	_, agent := e.AgentState()
	_, fetch := e.FetchState()
	return transfer || agent || fetch
}

// Transfer decodes the data of a transfer lifecycle event.
func (e Event) Transfer() (Transfer, error) {
	var d Transfer
	_, ok := e.TransferState()
	return d, e.decode(ok, &d)
}

// Progress decodes the data of a progress event.
func (e Event) Progress() (Progress, error) {
	var d Progress
	return d, e.decode(e.Type == TypeProgress, &d)
}

// Log decodes the data of a log event.
func (e Event) Log() (Log, error) {
	var d Log
	return d, e.decode(e.Type == TypeLog, &d)
}

// Agent decodes the data of an agent event.
func (e Event) Agent() (Agent, error) {
	var d Agent
	_, ok := e.AgentState()
	return d, e.decode(ok, &d)
}

func (e Event) decode(typeOK bool, v any) error {
	if !typeOK {
		return fmt.Errorf("event %s: type %q has no %T data", e.ID, e.Type, v)
	}
	if err := json.Unmarshal(e.Data, v); err != nil {
		return fmt.Errorf("event %s: decode %s data: %w", e.ID, e.Type, err)
	}
	return nil
}
