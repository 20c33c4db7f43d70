// Package events defines dropship's events (CloudEvents 1.0 envelopes and
// their data), the NATS subjects they travel on, and their delivery: the
// NATS connection, JetStream publishing with an acknowledgement, best-effort
// publishing for logs and progress, and the embedded nats-server.
//
// An agent builds events with [NewTransfer], [NewProgress], [NewLog] and
// [NewAgent] from its [Subjects], publishes lifecycle and agent events with
// [Bus.PublishDurable] (after writing them to its outbox, and again until they
// are acknowledged: the stable id makes JetStream drop the duplicates) and
// progress and log events with [Bus.PublishBestEffort]. Subscribers select
// subjects with [AllLifecycle] or a [Filter] and decode messages with
// [ParseMsg] and the accessors of [Event].
//
// This package does not import the watcher or transfer packages.
package events
