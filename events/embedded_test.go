package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// recordingHandler keeps every record at or above Info, to check that the
// embedded server does not fill the agent's log.
type recordingHandler struct {
	mu   sync.Mutex
	msgs []string
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler            { return h }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelInfo {
		h.mu.Lock()
		h.msgs = append(h.msgs, r.Level.String()+" "+r.Message)
		h.mu.Unlock()
	}
	return nil
}

func (h *recordingHandler) loud() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.msgs...)
}

func startEmbedded(t *testing.T, cfg EmbeddedConfig) *Embedded {
	t.Helper()
	e, err := StartEmbedded(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// TestEmbeddedServesJetStreamAndKeepsItsStore publishes through the embedded
// server, restarts it on the same store, and finds the event still there.
func TestEmbeddedServesJetStreamAndKeepsItsStore(t *testing.T) {
	store := t.TempDir() + "/nats"
	rec := &recordingHandler{}
	e := startEmbedded(t, EmbeddedConfig{Listen: "127.0.0.1:0", StoreDir: store, Logger: slog.New(rec)})
	url := e.ClientURL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") || strings.HasSuffix(url, ":0") {
		t.Fatalf("ClientURL() = %q, want nats://127.0.0.1:<port>", url)
	}

	b := connect(t, ConnectOptions{URL: url})
	waitConnected(t, b)
	ctx := t.Context()
	if err := b.EnsureStream(ctx, testStream, AllLifecycle("dropship")); err != nil {
		t.Fatal(err)
	}
	ev := completedEvent(t, goldenSubjects, "acme")
	if err := b.PublishDurable(ctx, ev); err != nil {
		t.Fatal(err)
	}
	b.Close()
	e.Close()
	e.Close() // idempotent
	if c, err := net.Dial("tcp", strings.TrimPrefix(url, "nats://")); err == nil {
		c.Close()
		t.Fatal("the embedded server still accepts connections after Close")
	}
	if loud := rec.loud(); len(loud) > 0 {
		t.Errorf("the embedded server logged at Info or above during a normal run: %q", loud)
	}

	e2 := startEmbedded(t, EmbeddedConfig{Listen: "127.0.0.1:0", StoreDir: store})
	b2 := connect(t, ConnectOptions{URL: e2.ClientURL()})
	waitConnected(t, b2)
	if err := b2.EnsureStream(ctx, testStream, AllLifecycle("dropship")); err != nil {
		t.Fatal(err)
	}
	var got []Event
	if err := b2.Replay(ctx, testStream, AllLifecycle("dropship"), 0, func(ev Event) { got = append(got, ev) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != ev.ID || got[0].NATSSubject != ev.NATSSubject {
		t.Fatalf("after a restart the stream replays %+v, want the event published before", got)
	}
}

func TestEmbeddedBusyPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()

	e, err := StartEmbedded(EmbeddedConfig{Listen: addr, StoreDir: t.TempDir()})
	if err == nil {
		e.Close()
		t.Fatal("StartEmbedded on a busy port succeeded")
	}
	want := fmt.Sprintf("embedded NATS cannot listen on %s: address already in use; set nats.embedded_listen to a free address or nats.url to an external server", addr)
	if err.Error() != want {
		t.Errorf("error:\n %s\nwant:\n %s", err, want)
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("error %v does not wrap EADDRINUSE", err)
	}
}

func TestEmbeddedBadConfig(t *testing.T) {
	for _, cfg := range []EmbeddedConfig{
		{Listen: "127.0.0.1", StoreDir: t.TempDir()},
		{Listen: "127.0.0.1:http", StoreDir: t.TempDir()},
		{Listen: "127.0.0.1:0"},
	} {
		if e, err := StartEmbedded(cfg); err == nil {
			e.Close()
			t.Errorf("StartEmbedded(%+v) succeeded", cfg)
		}
	}
}
