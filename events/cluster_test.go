package events

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dropship/dropship/internal/jscluster"
)

// On a clustered server, a stream with one replica stops every agent's events
// while the server holding it is down: the check warns, with the fix; an R3
// stream gets no such warning. And the bytes a delivered file's events take
// in the stream, for the sizing note of docs/events.md.
func TestCheckStreamOnACluster(t *testing.T) {
	c := jscluster.Start(t, 3, t.TempDir())
	if err := c.WaitJetStream(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	b := connect(t, ConnectOptions{URL: c.URL()})
	waitConnected(t, b)
	ctx := t.Context()

	r1, err := b.CheckStream(ctx, StreamSetup{Name: "ONE", Subjects: AllLifecycle("one"), Create: true, Replicas: 1})
	if err != nil || !r1.OK() {
		t.Fatalf("create an R1 stream on the cluster: %+v %v", r1, err)
	}
	again, err := b.CheckStream(ctx, StreamSetup{Name: "ONE", Subjects: AllLifecycle("one")})
	if err != nil {
		t.Fatal(err)
	}
	if !again.OK() || len(again.Warnings) != 1 || !strings.Contains(again.Warnings[0], "one replica") || !strings.Contains(again.Warnings[0], "--replicas 3") {
		t.Errorf("an R1 stream on a cluster: %+v, want one warning saying so, with the fix", again)
	}

	// Until every node has joined, an R3 stream has no peers to go to.
	var r3 StreamCheck
	waitFor(t, "an R3 stream created on the cluster", func() bool {
		r3, err = b.CheckStream(ctx, StreamSetup{Name: "THREE", Subjects: AllLifecycle("three"), Create: true, Replicas: 3})
		return err == nil && r3.OK()
	})
	checked, err := b.CheckStream(ctx, StreamSetup{Name: "THREE", Subjects: AllLifecycle("three")})
	if err != nil || !checked.OK() || len(checked.Warnings) != 0 || checked.Replicas != 3 {
		t.Errorf("an R3 stream on a cluster: %+v %v, want no warning", checked, err)
	}

	// A delivered file's events (queued, started, completed), with a
	// 60-byte path, as stored.
	subj := Subjects{Prefix: "three", Agent: "edge-01"}
	var evs []Event
	for _, st := range []TransferState{TransferQueued, TransferStarted, TransferCompleted} {
		d := goldenTransfer(1)
		d.Target.Name = "acme"
		d.LocalPath = "/srv/drop/acme/" + strings.Repeat("x", 60-len("/srv/drop/acme/"))
		ev, err := NewTransfer(subj, st, d)
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, ev)
	}
	for _, err := range b.PublishDurableBatch(ctx, evs) {
		if err != nil {
			t.Fatal(err)
		}
	}
	js, err := jetstream.New(b.Conn())
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, "THREE")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a delivered file's 3 events take %d bytes in the stream (%d messages)", info.State.Bytes, info.State.Msgs)
	if info.State.Msgs != 3 || info.State.Bytes < 1500 || info.State.Bytes > 4500 {
		t.Errorf("the stream holds %d messages, %d bytes, for one file's events: docs/events.md's sizing note says about 2.9 KB", info.State.Msgs, info.State.Bytes)
	}
}
