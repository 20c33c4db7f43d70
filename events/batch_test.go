package events

import (
	"context"
	"strings"
	"testing"
	"time"
)

// A batch is published without waiting for one ack before the next: every
// event is stored once, in the order published, each outcome its own; a
// batch published again stores nothing twice (the ids).
func TestPublishDurableBatch(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	b := connect(t, ConnectOptions{URL: srv.ClientURL()})
	waitConnected(t, b)
	ctx := t.Context()
	if err := b.EnsureStream(ctx, testStream, AllLifecycle("dropship")); err != nil {
		t.Fatal(err)
	}
	var evs []Event
	for range 300 {
		evs = append(evs, completedEvent(t, goldenSubjects, "acme"))
	}
	for round := range 2 {
		for i, err := range b.PublishDurableBatch(ctx, evs) {
			if err != nil {
				t.Fatalf("round %d, event %d: %v", round, i, err)
			}
		}
	}
	s := streamOf(t, srv.ClientURL())
	if n := streamMsgs(t, s); n != uint64(len(evs)) {
		t.Fatalf("stream holds %d messages after a batch of %d published twice", n, len(evs))
	}
	for _, seq := range []uint64{1, 150, 300} {
		msg, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if got := msg.Header.Get("Nats-Msg-Id"); got != evs[seq-1].ID {
			t.Errorf("stream sequence %d holds event %s, want %s (the order published)", seq, got, evs[seq-1].ID)
		}
	}
}

// Without a stream, or with only a core subscriber on the subject, no event
// of a batch counts as stored, and the error says why; within the ack
// timeout, not forever.
func TestPublishDurableBatchNotStored(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	b := connect(t, ConnectOptions{URL: srv.ClientURL()})
	waitConnected(t, b)
	evs := []Event{completedEvent(t, goldenSubjects, "acme"), completedEvent(t, goldenSubjects, "acme")}
	for i, err := range b.PublishDurableBatch(t.Context(), evs) {
		if err == nil || !strings.Contains(err.Error(), "auto_create_stream") {
			t.Errorf("event %d with no stream: %v, want an error naming nats.auto_create_stream", i, err)
		}
	}

	sub, err := b.Conn().SubscribeSync(evs[0].NATSSubject)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	for i, err := range b.PublishDurableBatch(ctx, evs) {
		if err == nil || !strings.Contains(err.Error(), "not stored") {
			t.Errorf("event %d with a core subscriber only: %v, want \"not stored\"", i, err)
		}
	}
	if took := time.Since(start); took > AckTimeout+2*time.Second {
		t.Errorf("the batch took %s to fail, more than the ack timeout %s", took, AckTimeout)
	}
}
