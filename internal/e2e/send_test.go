package e2e

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/sshdtest"
)

// sendEnv is a config with an sshd target "sshd" and a target "down" on a
// port nothing listens on, and two files to send.
func sendEnv(t *testing.T, srv *sshdtest.Server) (*env, map[string][]byte, []string) {
	t.Helper()
	e := newEnv(t)
	e.externalNATS()
	e.sshdTarget(srv)
	e.target("down", "127.0.0.1", freePort(t), srv.User).
		set("identity_file", srv.ClientKey).
		set("host_key", srv.HostKeyFingerprint)
	e.writeConf()
	files := map[string][]byte{
		"a.txt":          []byte("first\n"),
		"with space.bin": randomBytes(t, 300<<10),
	}
	var paths []string
	for name, data := range files {
		p := filepath.Join(e.dir, name)
		writeFile(t, p, data)
		paths = append(paths, p)
	}
	return e, files, paths
}

// createStream creates the event stream as an operator would with `nats
// stream add`.
func createStream(t testing.TB, url string) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: events.AllLifecycle(prefix)}); err != nil {
		t.Fatal(err)
	}
}

// streamExists reports whether the event stream exists at url.
func streamExists(t testing.TB, url string) bool {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = js.Stream(ctx, stream)
	if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// checkSent checks that `dropship send` delivered files and left their
// sources alone.
func checkSent(t *testing.T, e *env, files map[string][]byte, r result) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("send: %s", r)
	}
	for name, data := range files {
		if !sameContent(filepath.Join(e.remote, name), data) {
			t.Errorf("%s did not arrive intact", name)
		}
		if !sameContent(filepath.Join(e.dir, name), data) {
			t.Errorf("send touched its source %s", name)
		}
		if !strings.Contains(r.stdout, "sent "+filepath.Join(e.dir, name)) {
			t.Errorf("send does not report %s as sent\n%s", name, r)
		}
	}
}

// checkSendEvents checks the completed events of files in msgs.
func checkSendEvents(t *testing.T, msgs []received, files map[string][]byte) {
	t.Helper()
	completed := filterType(msgs, events.TypeTransferCompleted)
	if len(completed) != len(files) {
		t.Errorf("%d completed events, want %d", len(completed), len(files))
	}
	for _, m := range completed {
		d := m.transfer(t)
		name := filepath.Base(d.LocalPath)
		if data, ok := files[name]; !ok || d.SizeBytes != int64(len(data)) || d.SHA256 != sha256Hex(data) {
			t.Errorf("completed event for %s: %d bytes, sha256 %s", d.LocalPath, d.SizeBytes, d.SHA256)
		}
		if m.msgID != m.ev.ID {
			t.Errorf("Nats-Msg-Id %q, id %q", m.msgID, m.ev.ID)
		}
	}
}

// TestSend pushes files once with `dropship send`, with no agent running.
func TestSend(t *testing.T) {
	t.Parallel()
	srv := sshdtest.Start(t, sshdtest.Options{})

	// With the event stream in place, the files arrive, the exit status is
	// 0, the sources stay, and a subscriber and the stream get one
	// completed event per file.
	t.Run("events", func(t *testing.T) {
		t.Parallel()
		e, files, paths := sendEnv(t, srv)
		createStream(t, e.nats.url())
		c := collect(t, e.nats.url())
		start := time.Now()
		r := dropship(t, append([]string{"send", "-c", e.cfg, "-target", "sshd"}, paths...)...)
		checkSent(t, e, files, r)
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("send took %s", took)
		}
		checkSendEvents(t, storedEvents(t, e.nats.url()), files)
		eventually(t, 5*time.Second, "the subscriber to see the completed events", func() bool {
			return len(c.ofType(events.TypeTransferCompleted)) == len(files)
		})
	})

	// A send to a port nothing listens on exits 1, says FAILED with the
	// class, and publishes a failed event; a missing file exits 1 too.
	t.Run("failure", func(t *testing.T) {
		t.Parallel()
		e, _, paths := sendEnv(t, srv)
		createStream(t, e.nats.url())
		r := dropship(t, "send", "-c", e.cfg, "-target", "down", paths[0])
		if r.code != 1 || !strings.Contains(r.stdout, "FAILED") || !strings.Contains(r.stdout, "connect-refused") {
			t.Errorf("send to a closed port: want exit status 1 and FAILED ... connect-refused\n%s", r)
		}
		failed := filterType(storedEvents(t, e.nats.url()), events.TypeTransferFailed)
		if len(failed) != 1 {
			t.Fatalf("%d failed events stored, want 1\n%s", len(failed), r)
		}
		if d := failed[0].transfer(t); d.Error == nil || d.Error.Class != "connect-refused" || d.Target.Name != "down" {
			t.Errorf("failed event: target %q error %+v", d.Target.Name, d.Error)
		}

		r = dropship(t, "send", "-c", e.cfg, "-target", "sshd", filepath.Join(e.dir, "no such file"))
		if r.code != 1 {
			t.Errorf("send of a missing file: want exit status 1\n%s", r)
		}
		if exists(filepath.Join(e.remote, "no such file")) {
			t.Error("a missing file arrived")
		}
	})

	// nats.auto_create_stream = true on an external server whose stream
	// does not exist yet: send creates it, as the agent does, so that its
	// events are stored.
	t.Run("auto_create_stream", func(t *testing.T) {
		t.Parallel()
		e, files, paths := sendEnv(t, srv)
		r := dropship(t, append([]string{"send", "-c", e.cfg, "-target", "sshd"}, paths...)...)
		checkSent(t, e, files, r)
		if !streamExists(t, e.nats.url()) {
			t.Fatalf("dropship send with nats.auto_create_stream = true did not create stream %s: its events were not stored\n%s", stream, r)
		}
		checkSendEvents(t, storedEvents(t, e.nats.url()), files)
	})
}
