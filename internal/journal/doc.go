// Package journal is the agent's durable memory: the state of every file it
// has seen and the outbox of lifecycle events not yet acknowledged by NATS.
package journal
