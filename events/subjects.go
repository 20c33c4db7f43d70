package events

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"
)

// DefaultPrefix is the subject prefix used when the config does not set
// nats.subject_prefix.
const DefaultPrefix = "dropship"

// ServiceName is the name of the nats.go/micro control service every agent
// runs; its endpoints live at [Subjects.Control].
const ServiceName = "dropship"

// Control endpoints, the last token of [Subjects.Control].
const (
	ControlStatus = "status"
	ControlRetry  = "retry"
)

// Reserved subject tokens. A target may not be named like one of them,
// because <prefix>.<agent>.agent.<state> and <prefix>.<agent>.ctl.<endpoint>
// sit where <prefix>.<agent>.<target>.progress and .log would otherwise be.
const (
	tokenAgent    = "agent"
	tokenControl  = "ctl"
	tokenTransfer = "transfer"
	tokenProgress = "progress"
	tokenLog      = "log"
)

// TransferState is the state of a transfer in a lifecycle event; it is the
// last token of the subject and of the CloudEvents type.
type TransferState string

// Transfer states, in the order a transfer normally passes through them.
const (
	TransferQueued    TransferState = "queued"    // the file is ready and journaled
	TransferStarted   TransferState = "started"   // an attempt began
	TransferRetrying  TransferState = "retrying"  // an attempt failed; another is scheduled
	TransferCompleted TransferState = "completed" // delivered under its final remote name
	TransferFailed    TransferState = "failed"    // failed for good
	// TransferPostFailed: delivered (its completed event was sent), but the
	// local file could not be archived, deleted or moved to failed_dir. It
	// stays where it is and is tried again with backoff; the event says why.
	TransferPostFailed TransferState = "post-failed"
)

// TransferStates lists every [TransferState].
var TransferStates = []TransferState{TransferQueued, TransferStarted, TransferRetrying, TransferCompleted, TransferFailed, TransferPostFailed}

// AgentState is the state in an agent event.
type AgentState string

// Agent states.
const (
	AgentStarted  AgentState = "started"
	AgentReloaded AgentState = "reloaded"
	AgentStopping AgentState = "stopping"
	AgentError    AgentState = "error"
)

// AgentStates lists every [AgentState].
var AgentStates = []AgentState{AgentStarted, AgentReloaded, AgentStopping, AgentError}

// Subjects builds the NATS subjects of one agent:
//
//	<prefix>.<agent>.<target>.transfer.<state>   lifecycle (JetStream)
//	<prefix>.<agent>.<target>.progress           progress (core NATS)
//	<prefix>.<agent>.<target>.log                OpenSSH output lines (core NATS)
//	<prefix>.<agent>.agent.<state>               agent lifecycle (JetStream)
//	<prefix>.<agent>.ctl.<endpoint>              control service
//
// Prefix may hold several dot-separated tokens. Names are used as given;
// check them with [CheckPrefix], [CheckToken] and [CheckTarget] when they are
// configured.
type Subjects struct {
	Prefix string
	Agent  string
}

// Transfer is the subject of a lifecycle event of a transfer to target.
func (s Subjects) Transfer(target string, state TransferState) string {
	return s.join(target, tokenTransfer, string(state))
}

// Progress is the subject of progress events of transfers to target.
func (s Subjects) Progress(target string) string { return s.join(target, tokenProgress) }

// Log is the subject of log events (OpenSSH output) for target.
func (s Subjects) Log(target string) string { return s.join(target, tokenLog) }

// AgentEvent is the subject of an agent lifecycle event.
func (s Subjects) AgentEvent(state AgentState) string { return s.join(tokenAgent, string(state)) }

// Control is the subject of a control service endpoint, such as
// [ControlStatus].
func (s Subjects) Control(endpoint string) string { return s.join(tokenControl, endpoint) }

// Source is the CloudEvents source of the agent's events: "/dropship/<agent>".
func (s Subjects) Source() string { return "/dropship/" + s.Agent }

func (s Subjects) join(tokens ...string) string {
	return s.Prefix + "." + s.Agent + "." + strings.Join(tokens, ".")
}

// AllLifecycle returns the subjects that capture every lifecycle event
// (transfer and agent) of every agent under prefix:
// <prefix>.*.*.transfer.* and <prefix>.*.agent.*. They are the subjects of
// the JetStream stream and never match progress, log or control messages.
func AllLifecycle(prefix string) []string {
	return []string{
		prefix + ".*.*." + tokenTransfer + ".*",
		prefix + ".*." + tokenAgent + ".*",
	}
}

// Filter selects events for a subscriber such as `dropship events`. Empty
// fields match everything.
type Filter struct {
	// Agent restricts to one agent.
	Agent string
	// Target restricts to one target; agent events are then not selected.
	Target string
	// Type selects kinds of events. It is one of:
	//   ""                 transfer lifecycle and agent events
	//   "all"              everything: lifecycle, agent, progress and log
	//   "transfer"         transfer lifecycle events
	//   "queued", "started", "retrying", "completed", "failed", or the same
	//                      as "transfer.completed": one transfer state
	//   "progress", "log"  progress or log events
	//   "agent"            agent events
	//   "agent.started" (reloaded, stopping, error): one agent state
	// A full CloudEvents type ("dev.dropship.transfer.completed") works too.
	Type string
}

// Subjects returns the subjects to subscribe to under prefix to receive
// exactly the events f selects. The subjects never overlap, so one message
// is never delivered twice across them.
func (f Filter) Subjects(prefix string) ([]string, error) {
	agent, target := orAny(f.Agent), orAny(f.Target)
	transfer := func(state string) string {
		return prefix + "." + agent + "." + target + "." + tokenTransfer + "." + state
	}
	agentEv := func(state string) []string {
		if f.Target != "" {
			return nil
		}
		return []string{prefix + "." + agent + "." + tokenAgent + "." + state}
	}
	progress := prefix + "." + agent + "." + target + "." + tokenProgress
	logs := prefix + "." + agent + "." + target + "." + tokenLog
	fetch := func(state string) string {
		return prefix + "." + agent + "." + target + "." + tokenFetch + "." + state
	}

	typ := strings.TrimPrefix(f.Type, typePrefix)
	switch typ {
	case "":
		return append([]string{transfer("*")}, agentEv("*")...), nil
	case "all":
		return append([]string{transfer("*"), progress, logs, fetch("*")}, agentEv("*")...), nil
	case tokenFetch:
		return []string{fetch("*")}, nil
	case tokenTransfer:
		return []string{transfer("*")}, nil
	case tokenProgress, tokenTransfer + "." + tokenProgress:
		return []string{progress}, nil
	case tokenLog, tokenTransfer + "." + tokenLog:
		return []string{logs}, nil
	case tokenAgent:
		if f.Target != "" {
			return nil, fmt.Errorf("event type %q cannot be combined with a target: agent events belong to no target", f.Type)
		}
		return agentEv("*"), nil
	}
	if state, ok := strings.CutPrefix(typ, tokenFetch+"."); ok {
		if !slices.Contains(FetchStates, FetchState(state)) {
			return nil, fmt.Errorf("unknown event type %q: fetch states are %s", f.Type, joinStates(FetchStates))
		}
		return []string{fetch(state)}, nil
	}
	if state, ok := strings.CutPrefix(typ, tokenAgent+"."); ok {
		if !slices.Contains(AgentStates, AgentState(state)) {
			return nil, fmt.Errorf("unknown event type %q: agent states are %s", f.Type, joinStates(AgentStates))
		}
		if f.Target != "" {
			return nil, fmt.Errorf("event type %q cannot be combined with a target: agent events belong to no target", f.Type)
		}
		return agentEv(state), nil
	}
	state := strings.TrimPrefix(typ, tokenTransfer+".")
	if !slices.Contains(TransferStates, TransferState(state)) {
		return nil, fmt.Errorf("unknown event type %q: use all, transfer, progress, log, agent, fetch, a transfer state (%s), agent.<state> or fetch.<state>",
			f.Type, joinStates(TransferStates))
	}
	return []string{transfer(state)}, nil
}

func orAny(token string) string {
	if token == "" {
		return "*"
	}
	return token
}

func joinStates[S ~string](states []S) string {
	s := make([]string, len(states))
	for i, st := range states {
		s[i] = string(st)
	}
	return strings.Join(s, ", ")
}

// CheckToken reports whether name can be one token of a subject (an agent or
// target name): not empty, and free of '.', '*', '>', whitespace and control
// characters. The config checker uses it (and CheckTarget, CheckPrefix), so
// that the rule is written once; its messages are for the operator, after
// the key they concern.
func CheckToken(name string) error {
	switch {
	case name == "":
		return errors.New("must not be empty")
	case strings.IndexFunc(name, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return fmt.Errorf("%q must not contain whitespace or control characters: it is used as a NATS subject token", name)
	case strings.ContainsAny(name, ".*>"):
		return fmt.Errorf(`%q must not contain ".", "*" or ">": it is used as a NATS subject token`, name)
	}
	return nil
}

// CheckTarget is [CheckToken] plus the reserved names "agent" and "ctl",
// which take a target name's place in dropship's own subjects
// (<prefix>.<agent>.agent.<state>, <prefix>.<agent>.ctl.*).
func CheckTarget(name string) error {
	if err := CheckToken(name); err != nil {
		return err
	}
	if name == tokenAgent || name == tokenControl {
		return fmt.Errorf("%q is reserved for dropship's own NATS subjects; choose another name", name)
	}
	return nil
}

// CheckPrefix reports whether prefix is a usable subject prefix: one or more
// tokens joined by '.', each valid for [CheckToken].
func CheckPrefix(prefix string) error {
	if prefix == "" {
		return errors.New("must not be empty")
	}
	for tok := range strings.SplitSeq(prefix, ".") {
		if tok == "" {
			return fmt.Errorf(`%q has an empty token: separate tokens with a single "." and do not start or end with one`, prefix)
		}
		if err := CheckToken(tok); err != nil {
			return fmt.Errorf("%q: a token %w", prefix, err)
		}
	}
	return nil
}
