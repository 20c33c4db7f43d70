package events

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// In the binary content mode an event's attributes travel in ce- headers,
// percent-encoded, and its data is the payload; a subscriber and a replay
// read it back as the same event, and the stream stores it once by id.
func TestBinaryContentMode(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	b := connect(t, ConnectOptions{URL: srv.ClientURL()})
	waitConnected(t, b)
	ctx := t.Context()
	if err := b.EnsureStream(ctx, testStream, AllLifecycle("dropship")); err != nil {
		t.Fatal(err)
	}
	b.SetCloudEventsMode(ModeBinary)

	d := goldenTransfer(1)
	d.Target.Name = "acme"
	d.LocalPath = "/srv/drop/a report \"Q3\" 100%.csv"
	ev, err := NewTransfer(goldenSubjects, TransferCompleted, d)
	if err != nil {
		t.Fatal(err)
	}
	ev.Subject = d.LocalPath + " é\n"

	sub, err := b.Conn().SubscribeSync(ev.NATSSubject)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := b.PublishDurable(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get("ce-subject"); got != "/srv/drop/a%20report%20%22Q3%22%20100%25.csv%20%C3%A9%0A" {
		t.Errorf("ce-subject header %q: not percent-encoded as the binding says", got)
	}
	if got := m.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type %q, want the data's content type application/json", got)
	}
	if got := m.Header.Get(jetstream.MsgIDHeader); got != ev.ID {
		t.Errorf("Nats-Msg-Id %q, want %q", got, ev.ID)
	}
	if !json.Valid(m.Data) || string(m.Data) != string(ev.Data) {
		t.Errorf("payload %s, want the event's data %s", m.Data, ev.Data)
	}
	got, err := ParseMsg(m)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != ev.ID || got.Type != ev.Type || got.Source != ev.Source || got.Subject != ev.Subject || !got.Time.Equal(ev.Time) || string(got.Data) != string(ev.Data) {
		t.Errorf("read back %+v, want %+v", got, ev)
	}

	var replayed []Event
	if err := b.Replay(ctx, testStream, AllLifecycle("dropship"), 0, func(e Event) { replayed = append(replayed, e) }); err != nil {
		t.Fatal(err)
	}
	if len(replayed) != 1 || replayed[0].ID != ev.ID || replayed[0].Subject != ev.Subject {
		t.Errorf("replay of a binary-mode event published twice: %+v", replayed)
	}
}

func TestPercentEncoding(t *testing.T) {
	for _, s := range []string{"", "plain", "a b", "100%", `"q"`, "é€\n\t\x00", "%41"} {
		enc := percentEncode(s)
		for i := 0; i < len(enc); i++ {
			if c := enc[i]; c <= 0x20 || c >= 0x7f || c == '"' {
				t.Errorf("percentEncode(%q) = %q holds byte %#x", s, enc, c)
			}
		}
		dec, err := percentDecode(enc)
		if err != nil || dec != s {
			t.Errorf("percentDecode(percentEncode(%q)) = %q, %v", s, dec, err)
		}
	}
	if _, err := percentDecode("%4"); err == nil {
		t.Error("a truncated escape decodes")
	}
}
