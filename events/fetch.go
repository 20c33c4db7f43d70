package events

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// FetchState is the state in a fetch event of a remote source: the last
// token of its subject <prefix>.<agent>.<source>.fetch.<state>.
type FetchState string

// Fetch states.
const (
	// FetchListed: a listing found files ready to fetch (Files says how
	// many). A listing that finds nothing new publishes nothing.
	FetchListed FetchState = "listed"
	// FetchFetched: a file is in the spool, whole, with its sha256; its
	// transfers to the source's targets follow.
	FetchFetched FetchState = "fetched"
	// FetchFailed: a listing or a fetch failed (Error says why); it is
	// tried again at the next listing.
	FetchFailed FetchState = "failed"
	// FetchSourceDeleted: every target has the file, and it was deleted
	// from the source (after = "delete") or moved (after = "move": MovedTo).
	FetchSourceDeleted FetchState = "source-deleted"
)

// FetchStates lists every [FetchState].
var FetchStates = []FetchState{FetchListed, FetchFetched, FetchFailed, FetchSourceDeleted}

const tokenFetch = "fetch"

// The CloudEvents types of fetch events.
const (
	TypeFetchListed        = typePrefix + tokenFetch + ".listed"
	TypeFetchFetched       = typePrefix + tokenFetch + ".fetched"
	TypeFetchFailed        = typePrefix + tokenFetch + ".failed"
	TypeFetchSourceDeleted = typePrefix + tokenFetch + ".source-deleted"
)

// Type is the CloudEvents type of a fetch event in state s, such as
// dev.dropship.fetch.fetched.
func (s FetchState) Type() string { return typePrefix + tokenFetch + "." + string(s) }

// Fetch is the subject of a fetch event of source.
func (s Subjects) Fetch(source string, state FetchState) string {
	return s.join(source, tokenFetch, string(state))
}

// AllFetch is the subject that captures every fetch event of every agent
// under prefix: <prefix>.*.*.fetch.*. The stream captures it when the agent
// has a source.
func AllFetch(prefix string) string { return prefix + ".*.*." + tokenFetch + ".*" }

// FetchData is the data of a fetch event.
type FetchData struct {
	Agent  string    `json:"agent"`
	Source TargetRef `json:"source"` // the source's name, host and port
	// RemotePath is the file on the source server (the listed folder for
	// listed, and for a failed listing).
	RemotePath string `json:"remote_path"`
	// LocalPath is the file in the spool (fetched, source-deleted).
	LocalPath string     `json:"local_path,omitempty"`
	SizeBytes int64      `json:"size_bytes,omitempty"`
	ModTime   *time.Time `json:"mtime,omitempty"`  // the server's mtime of the version
	SHA256    string     `json:"sha256,omitempty"` // fetched, source-deleted
	Files     int        `json:"files,omitempty"`  // listed: files ready to fetch
	Targets   []string   `json:"targets,omitempty"`
	MovedTo   string     `json:"moved_to,omitempty"` // source-deleted by after = "move"
	Error     *ErrorInfo `json:"error,omitempty"`    // failed only
}

// NewFetch returns the fetch event of d in state, on s.Fetch(d.Source.Name,
// state).
func NewFetch(s Subjects, state FetchState, d FetchData) (Event, error) {
	if !slices.Contains(FetchStates, state) {
		return Event{}, fmt.Errorf("new fetch event: unknown state %q", state)
	}
	if d.Source.Name == "" {
		return Event{}, errors.New("new fetch event: no source name")
	}
	if (state == FetchFailed) != (d.Error != nil) {
		return Event{}, fmt.Errorf("new fetch %s event: error information only on failed", state)
	}
	if d.Agent == "" {
		d.Agent = s.Agent
	}
	d.ModTime = utc(d.ModTime)
	return New(s.Fetch(d.Source.Name, state), state.Type(), s.Source(), d.RemotePath, d)
}

// FetchState returns the state of a fetch event, and false for any other
// event.
func (e Event) FetchState() (FetchState, bool) {
	state, ok := strings.CutPrefix(e.Type, typePrefix+tokenFetch+".")
	if !ok || !slices.Contains(FetchStates, FetchState(state)) {
		return "", false
	}
	return FetchState(state), true
}

// Fetch decodes the data of a fetch event.
func (e Event) Fetch() (FetchData, error) {
	var d FetchData
	_, ok := e.FetchState()
	return d, e.decode(ok, &d)
}
