// Package agent wires watchers, the journal, transfers and events into the
// running daemon: it owns the per-target queues, retry policy and what happens
// to a source file after its delivery is confirmed.
package agent
