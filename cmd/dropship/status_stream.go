package main

import (
	"fmt"
	"io"
	"time"

	"github.com/dropship/dropship/internal/agent"
)

// outboxSummary is the outbox part of status's first line: its size and the
// age of its oldest event.
func outboxSummary(st agent.Status) string {
	s := fmt.Sprintf("outbox %d event(s)", st.OutboxDepth)
	if st.OutboxOldest != nil {
		s += fmt.Sprintf(", the oldest %s old", time.Since(*st.OutboxOldest).Round(time.Second))
	}
	return s
}

// printStream says when lifecycle events cannot be stored, and why, with
// what to do; and the stream's warnings.
func printStream(w io.Writer, st agent.Status) {
	s := st.Stream
	if !s.Stored && s.CheckedAt != nil {
		fmt.Fprintf(w, "EVENTS NOT STORED (stream %s): %s; they wait in the outbox\n  fix: %s\n", s.Name, s.Problem, s.Fix)
	}
	for _, warn := range s.Warnings {
		fmt.Fprintf(w, "events: warning: %s\n", warn)
	}
}
