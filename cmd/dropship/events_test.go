package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"

	"github.com/dropship/dropship/events"
)

const testStream = "DROPSHIP_EVENTS"

var testSubjects = events.Subjects{Prefix: "dropship", Agent: "edge-01"}

// startNATS runs a real nats-server with JetStream and the events stream,
// and returns its URL and a bus to publish with.
func startNATS(t *testing.T) (string, *events.Bus) {
	t.Helper()
	opts := natstest.DefaultTestOptions
	opts.Port = -1
	opts.JetStream = true
	opts.StoreDir = t.TempDir()
	srv := natstest.RunServer(&opts)
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	bus, err := events.Connect(t.Context(), events.ConnectOptions{URL: srv.ClientURL(), Name: "test publisher"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Close)
	if err := bus.WaitConnected(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := bus.EnsureStream(t.Context(), testStream, events.AllLifecycle("dropship")); err != nil {
		t.Fatal(err)
	}
	return srv.ClientURL(), bus
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) lines() []string {
	out := strings.TrimSuffix(s.String(), "\n")
	if out == "" {
		return nil
	}
	return strings.Split(out, "\n")
}

// eventsRun is `dropship events` running in-process.
type eventsRun struct {
	stdout, stderr *syncBuffer
	stop           func() error // cancels the run (Ctrl-C) and returns its error
}

func startEvents(t *testing.T, stdout io.Writer, args ...string) *eventsRun {
	t.Helper()
	r := &eventsRun{stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	if stdout == nil {
		stdout = r.stdout
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, append([]string{"events"}, args...), stdout, r.stderr) }()
	var once sync.Once
	var err error
	r.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				err = fmt.Errorf("dropship events did not stop within 10s of its context")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = r.stop() })
	return r
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func transferEvent(t *testing.T, state events.TransferState, id string, attempt int) events.Event {
	t.Helper()
	d := events.Transfer{
		TransferID: id,
		Attempt:    attempt,
		Watch:      "/srv/drop/acme",
		Target:     events.TargetRef{Name: "acme", Host: "127.0.0.1", Port: 2222},
		LocalPath:  "/srv/drop/acme/" + id + ".pdf",
		RemotePath: "/incoming/" + id + ".pdf",
		SizeBytes:  1 << 20,
	}
	switch state {
	case events.TransferRetrying, events.TransferFailed:
		d.Error = &events.ErrorInfo{Class: "connect-refused", Message: "ssh: connect to host 127.0.0.1 port 2222: Connection refused", Retryable: state == events.TransferRetrying}
	case events.TransferCompleted:
		d.DurationSeconds, d.BytesPerSecond = 2, 1<<19
	}
	ev, err := events.NewTransfer(testSubjects, state, d)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func progressEvent(t *testing.T, id string, attempt int, sent int64) events.Event {
	t.Helper()
	ev, err := events.NewProgress(testSubjects, events.Progress{
		TransferID: id, Attempt: attempt, Target: events.TargetRef{Name: "acme"},
		LocalPath: "/srv/drop/acme/" + id + ".pdf", RemotePath: "/incoming/" + id + ".pdf",
		BytesSent: sent, SizeBytes: 1 << 20, BytesPerSecond: 1 << 18, ETASeconds: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func publish(t *testing.T, bus *events.Bus, evs ...events.Event) {
	t.Helper()
	for _, ev := range evs {
		var err error
		if ev.Durable() {
			err = bus.PublishDurable(t.Context(), ev)
		} else {
			err = bus.PublishBestEffort(ev)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// waitSubscribed waits until `dropship events` receives what is published:
// it publishes probe events (agent events, which the default filter and
// -type all select) until one shows up.
func waitSubscribed(t *testing.T, bus *events.Bus, out *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for n := 0; ; n++ {
		ev, err := events.NewAgent(testSubjects, events.AgentStarted, events.Agent{Message: "probe " + strconv.Itoa(n)})
		if err != nil {
			t.Fatal(err)
		}
		publish(t, bus, ev)
		for range 10 {
			if strings.Contains(out.String(), "probe ") {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		if time.Now().After(deadline) {
			t.Fatal("dropship events never showed a probe event")
		}
	}
}

// jsonEvents parses every line of out as a CloudEvent.
func jsonEvents(t *testing.T, out *syncBuffer) []events.Event {
	t.Helper()
	var evs []events.Event
	for _, l := range out.lines() {
		ev, err := events.Parse([]byte(l))
		if err != nil {
			t.Fatalf("stdout line %q is not a CloudEvent: %v", l, err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// sameEvent compares what a consumer sees: every attribute and the data.
func sameEvent(t *testing.T, got, want events.Event) {
	t.Helper()
	var g, w bytes.Buffer
	if err := json.Compact(&g, got.Data); err != nil {
		t.Fatal(err)
	}
	if err := json.Compact(&w, want.Data); err != nil {
		t.Fatal(err)
	}
	got.Data, want.Data = g.Bytes(), w.Bytes()
	got.NATSSubject, want.NATSSubject = "", ""
	if !got.Time.Equal(want.Time) {
		t.Errorf("time %v, want %v", got.Time, want.Time)
	}
	got.Time = want.Time
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got event\n%+v\nwant\n%+v", got, want)
	}
}

func TestEventsJSONRoundTrips(t *testing.T) {
	url, bus := startNATS(t)
	r := startEvents(t, nil, "-nats", url, "-prefix", "dropship", "-json", "-type", "all")
	waitSubscribed(t, bus, r.stdout)
	probes := len(r.stdout.lines())

	want := []events.Event{
		transferEvent(t, events.TransferQueued, "t1", 0),
		transferEvent(t, events.TransferStarted, "t1", 1),
		progressEvent(t, "t1", 1, 1<<19),
		transferEvent(t, events.TransferRetrying, "t1", 1),
		transferEvent(t, events.TransferFailed, "t1", 2),
	}
	for _, typ := range []string{events.TypeTransferCompleted, events.TypeLog, events.TypeAgentError} {
		ev := goldenEvent(t, typ)
		ev.NATSSubject = subjectOf(t, ev)
		want = append(want, ev)
	}
	for _, ev := range want {
		publish(t, bus, ev) // one at a time: core NATS keeps order per subject only
		waitFor(t, ev.Type, func() bool { return len(r.stdout.lines()) > probes })
		probes++
	}
	if err := r.stop(); err != nil {
		t.Fatalf("Ctrl-C: %v, want a clean exit", err)
	}
	got := jsonEvents(t, r.stdout)[len(r.stdout.lines())-len(want):]
	for i := range want {
		sameEvent(t, got[i], want[i])
	}
	if s := r.stderr.String(); s != "" {
		t.Errorf("stderr %q, want nothing with -json", s)
	}
}

// A lost connection is reported (on stderr with -json, so that stdout
// holds only events), and Ctrl-C still exits cleanly.
func TestEventsReportsALostConnection(t *testing.T) {
	opts := natstest.DefaultTestOptions
	opts.Port = -1
	srv := natstest.RunServer(&opts)
	t.Cleanup(srv.Shutdown)
	bus, err := events.Connect(t.Context(), events.ConnectOptions{URL: srv.ClientURL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Close)
	if err := bus.WaitConnected(t.Context()); err != nil {
		t.Fatal(err)
	}
	r := startEvents(t, nil, "-nats", srv.ClientURL(), "-prefix", "dropship", "-json", "-type", "log")
	waitFor(t, "the subscription", func() bool {
		ev, err := events.NewLog(testSubjects, events.Log{Target: events.TargetRef{Name: "acme"}, Line: "probe"})
		if err != nil {
			t.Fatal(err)
		}
		publish(t, bus, ev)
		return strings.Contains(r.stdout.String(), "probe")
	})
	srv.Shutdown()
	waitFor(t, "the notice", func() bool {
		return strings.Contains(r.stderr.String(), "dropship events: connection to NATS lost; reconnecting\n")
	})
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	jsonEvents(t, r.stdout) // stdout still holds only events
}

// subjectOf returns the subject a golden event is published on.
func subjectOf(t *testing.T, ev events.Event) string {
	t.Helper()
	s := events.Subjects{Prefix: "dropship", Agent: "edge-01"}
	if st, ok := ev.TransferState(); ok {
		return s.Transfer("acme", st)
	}
	if st, ok := ev.AgentState(); ok {
		return s.AgentEvent(st)
	}
	if st, ok := ev.FetchState(); ok {
		return s.Fetch("customer", st)
	}
	switch ev.Type {
	case events.TypeProgress:
		return s.Progress("acme")
	case events.TypeLog:
		return s.Log("acme")
	}
	t.Fatalf("no subject for %s", ev.Type)
	return ""
}

// -since replays stored events, then continues live: while events are
// published the whole time, each one is printed exactly once, in order.
func TestEventsSinceReplaysThenLiveWithoutGapsOrDuplicates(t *testing.T) {
	url, bus := startNATS(t)
	var published []events.Event
	for i := range 20 {
		ev := transferEvent(t, events.TransferQueued, fmt.Sprintf("before-%02d", i), 0)
		publish(t, bus, ev)
		published = append(published, ev)
	}
	// Keep publishing while the command starts, subscribes and replays,
	// so that some events arrive both live and from the stream.
	more := make(chan events.Event, 1000)
	stopPub := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		defer close(more)
		for i := 0; ; i++ {
			select {
			case <-stopPub:
				return
			default:
			}
			ev, err := events.NewTransfer(testSubjects, events.TransferQueued, events.Transfer{TransferID: fmt.Sprintf("during-%04d", i), Target: events.TargetRef{Name: "acme"}})
			if err != nil || bus.PublishDurable(t.Context(), ev) != nil {
				return
			}
			more <- ev
			time.Sleep(time.Millisecond)
		}
	}()
	r := startEvents(t, nil, "-nats", url, "-prefix", "dropship", "-json", "-since", "1h", "-stream", testStream, "-target", "acme")
	waitFor(t, "replayed and live events", func() bool { return len(r.stdout.lines()) >= 60 })
	close(stopPub)
	<-pubDone
	for ev := range more {
		published = append(published, ev)
	}
	// The agent publishes again what it is not sure was stored: JetStream
	// drops it, core NATS subscribers get it twice.
	publish(t, bus, published[len(published)-1], published[3])
	last := transferEvent(t, events.TransferCompleted, "after", 1)
	publish(t, bus, last)
	published = append(published, last)
	waitFor(t, "the last event", func() bool { return strings.Contains(r.stdout.String(), last.ID) })
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}

	got := jsonEvents(t, r.stdout)
	var gotIDs, wantIDs []string
	for _, ev := range got {
		gotIDs = append(gotIDs, ev.ID)
	}
	for _, ev := range published {
		wantIDs = append(wantIDs, ev.ID)
	}
	if !slices.Equal(gotIDs, wantIDs) {
		t.Errorf("printed %d events, published %d; want exactly the published ones in order", len(gotIDs), len(wantIDs))
		seen := map[string]int{}
		for _, id := range gotIDs {
			seen[id]++
		}
		for i, id := range wantIDs {
			if seen[id] != 1 {
				t.Errorf("event %d (%s) printed %d times", i, id, seen[id])
			}
		}
	}
}

func TestEventsSinceFromTheConfigStream(t *testing.T) {
	url, bus := startNATS(t)
	old := transferEvent(t, events.TransferCompleted, "stored", 1)
	publish(t, bus, old)
	dir := t.TempDir()
	cfg := dir + "/agent.toml"
	// The stream named in the config is the one replayed; an unknown
	// stream is an error that says what to check.
	for stream, ok := range map[string]bool{testStream: true, "ELSEWHERE": false} {
		writeFile(t, cfg, fmt.Sprintf("[agent]\nname = \"edge-01\"\nstate_dir = %q\n[nats]\nurl = %q\nstream = %q\n", dir, url, stream))
		r := &syncBuffer{}
		errOut := &syncBuffer{}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- Run(ctx, []string{"events", "-c", cfg, "-since", "1h"}, r, errOut) }()
		if ok {
			waitFor(t, "the stored event", func() bool { return strings.Contains(r.String(), "completed") })
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("stream %s: %v", stream, err)
			}
			if want := "completed  acme  /srv/drop/acme/stored.pdf -> /incoming/stored.pdf  1.0 MiB in 2s (512.0 KiB/s)"; !strings.Contains(r.String(), want) {
				t.Errorf("stdout %q, want %q", r.String(), want)
			}
		} else {
			err := <-done
			cancel()
			if err == nil || !strings.Contains(err.Error(), "ELSEWHERE") || !strings.Contains(err.Error(), "nats.stream") || exitCode(err) != 1 {
				t.Errorf("unknown stream: err %v (exit %d)", err, exitCode(err))
			}
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// When stdout is not a terminal, lines are plain text: no bars, no escape
// sequences, progress shown (when asked for) as lines.
func TestEventsPlainLinesWhenNotATerminal(t *testing.T) {
	t.Setenv("NO_COLOR", "") // colors would be allowed; the pipe alone must prevent them
	url, bus := startNATS(t)
	r := startEvents(t, nil, "-nats", url, "-prefix", "dropship", "-agent", "edge-01", "-type", "all")
	waitSubscribed(t, bus, r.stdout)
	evil := transferEvent(t, events.TransferStarted, "evil\x1b[2J", 1)
	publish(t, bus,
		transferEvent(t, events.TransferStarted, "t1", 1),
		progressEvent(t, "t1", 1, 1<<19),
		evil,
		transferEvent(t, events.TransferCompleted, "t1", 1),
	)
	waitFor(t, "the completed line", func() bool { return strings.Contains(r.stdout.String(), "completed") })
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	out := r.stdout.String()
	if strings.ContainsRune(out, 0x1b) || strings.ContainsRune(out, '\r') {
		t.Errorf("escape or carriage return on a non-terminal:\n%q", out)
	}
	for _, want := range []string{
		"started    acme  /srv/drop/acme/t1.pdf -> /incoming/t1.pdf  attempt 1, 1.0 MiB",
		"progress   acme  /srv/drop/acme/t1.pdf  50%  512.0 KiB / 1.0 MiB  256.0 KiB/s  ETA 3s",
		`started    acme  /srv/drop/acme/evil\x1b[2J.pdf`,
		"completed  acme  /srv/drop/acme/t1.pdf -> /incoming/t1.pdf  1.0 MiB in 2s (512.0 KiB/s)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(r.stderr.String(), "showing dropship.edge-01.*.transfer.*") {
		t.Errorf("stderr %q: want what is shown", r.stderr.String())
	}
}

// On a terminal, a running transfer has a bar at the bottom, redrawn in
// place, and removed when the transfer ends.
func TestEventsBarsOnATerminal(t *testing.T) {
	t.Setenv("NO_COLOR", "")
	t.Setenv("TERM", "xterm")
	url, bus := startNATS(t)
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ptmx.Close(); tty.Close() })
	if err := pty.Setsize(ptmx, &pty.Winsize{Cols: 100, Rows: 20}); err != nil {
		t.Fatal(err)
	}
	screen := &syncBuffer{}
	go func() { _, _ = io.Copy(screen, ptmx) }()

	r := startEvents(t, tty, "-nats", url, "-prefix", "dropship", "-agent", "edge-01")
	waitSubscribed(t, bus, screen)
	publish(t, bus, transferEvent(t, events.TransferStarted, "t1", 1), progressEvent(t, "t1", 1, 1<<19))
	// The bar line, with the rate and the ETA, at 100 columns, redrawn in
	// place of the one drawn when the transfer started.
	barLine := regexp.MustCompile(`\r\x1b\[Jt1\.pdf  acme  \[=+> *\]   50%  512\.0 KiB/1\.0 MiB +256\.0 KiB/s  ETA 3s$`)
	waitFor(t, "a progress bar", func() bool { return barLine.MatchString(screen.String()) })
	bars := screen.String()
	publish(t, bus, transferEvent(t, events.TransferCompleted, "t1", 1))
	waitFor(t, "the completed line", func() bool { return strings.Contains(screen.String(), "completed") })
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	out := screen.String()

	// The completed line erases the bar first and is not followed by it.
	after := out[len(bars):]
	i := strings.Index(after, "completed")
	if !strings.Contains(after[:i], "\r"+csiClearBelow) {
		t.Errorf("the bar was not erased before the completed line: %q", after)
	}
	if strings.Contains(after[i:], "t1.pdf  acme  [") {
		t.Errorf("the bar was drawn again after its transfer completed: %q", after[i:])
	}
	if !strings.Contains(out, sgrGreen+"completed"+sgrReset) {
		t.Errorf("no color on a terminal without NO_COLOR: %q", out)
	}
}

func TestEventsNoColorOnATerminal(t *testing.T) {
	t.Setenv("NO_COLOR", "1")
	t.Setenv("TERM", "xterm")
	url, bus := startNATS(t)
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ptmx.Close(); tty.Close() })
	screen := &syncBuffer{}
	go func() { _, _ = io.Copy(screen, ptmx) }()
	r := startEvents(t, tty, "-nats", url, "-prefix", "dropship", "-agent", "edge-01")
	waitSubscribed(t, bus, screen)
	publish(t, bus, transferEvent(t, events.TransferFailed, "t1", 1))
	waitFor(t, "the failed line", func() bool { return strings.Contains(screen.String(), "failed") })
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(screen.String(), "\x1b[3") {
		t.Errorf("colors despite NO_COLOR: %q", screen.String())
	}
}

func TestOpenTerminal(t *testing.T) {
	env := func(term string) func(string) string {
		return func(k string) string {
			if k == "TERM" {
				return term
			}
			return ""
		}
	}
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	defer tty.Close()
	if err := pty.Setsize(ptmx, &pty.Winsize{Cols: 132, Rows: 43}); err != nil {
		t.Fatal(err)
	}
	term := openTerminal(tty, env("xterm"))
	if term == nil {
		t.Fatal("a pty is not taken for a terminal")
	}
	if w, h := term.size(); w != 132 || h != 43 {
		t.Errorf("size %dx%d, want 132x43", w, h)
	}
	if openTerminal(tty, env("dumb")) != nil {
		t.Error("TERM=dumb taken for a terminal that can move the cursor")
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	if openTerminal(pw, env("xterm")) != nil {
		t.Error("a pipe taken for a terminal")
	}
	if openTerminal(&bytes.Buffer{}, env("xterm")) != nil {
		t.Error("a buffer taken for a terminal")
	}
}

func TestEventsUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-type", "exploded"},
		{"-type", "agent", "-target", "acme"},
		{"-target", "a.b"},
		{"-since", "-5m"},
		{"extra"},
	} {
		var out, errOut bytes.Buffer
		all := append([]string{"events", "-nats", "nats://127.0.0.1:1", "-prefix", "dropship"}, args...)
		err := Run(t.Context(), all, &out, &errOut)
		if exitCode(err) != 2 {
			t.Errorf("%q: err %v, exit %d, want a usage error", args, err, exitCode(err))
		}
	}
}

func TestSubscriptionPlan(t *testing.T) {
	for _, tc := range []struct {
		filter    events.Filter
		terminal  bool
		subscribe []string
		replay    []string
		bars      bool
	}{
		{events.Filter{}, false,
			[]string{"d.*.*.transfer.*", "d.*.agent.*"}, []string{"d.*.*.transfer.*", "d.*.agent.*"}, false},
		{events.Filter{}, true,
			[]string{"d.*.*.transfer.*", "d.*.*.progress", "d.*.agent.*"}, []string{"d.*.*.transfer.*", "d.*.agent.*"}, true},
		{events.Filter{Agent: "e", Target: "t", Type: "completed"}, true,
			[]string{"d.e.t.transfer.*", "d.e.t.progress"}, []string{"d.e.t.transfer.completed"}, true},
		{events.Filter{Type: "all"}, true,
			[]string{"d.*.*.transfer.*", "d.*.*.progress", "d.*.*.log", "d.*.*.fetch.*", "d.*.agent.*"}, []string{"d.*.*.transfer.*", "d.*.agent.*"}, true},
		{events.Filter{Type: "fetch"}, true, []string{"d.*.*.fetch.*"}, []string{"d.*.*.fetch.*"}, false},
		{events.Filter{Type: "fetch.fetched", Target: "customer"}, false, []string{"d.*.customer.fetch.fetched"}, []string{"d.*.customer.fetch.fetched"}, false},
		{events.Filter{Type: "log"}, true, []string{"d.*.*.log"}, nil, false},
		{events.Filter{Type: "agent"}, true, []string{"d.*.agent.*"}, []string{"d.*.agent.*"}, false},
		{events.Filter{Type: "progress"}, false, []string{"d.*.*.progress"}, nil, false},
	} {
		shown, err := tc.filter.Subjects("d")
		if err != nil {
			t.Fatal(err)
		}
		p, err := planSubscriptions(tc.filter, "d", shown, tc.terminal)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(p.subscribe, tc.subscribe) || !slices.Equal(p.replay, tc.replay) || p.bars != tc.bars {
			t.Errorf("%+v terminal=%v: got %+v, want subscribe %q replay %q bars %v", tc.filter, tc.terminal, p, tc.subscribe, tc.replay, tc.bars)
		}
		// Subscriptions never overlap: a message is delivered once.
		for i, a := range p.subscribe {
			for _, b := range p.subscribe[i+1:] {
				if events.SubjectCovers(a, b) || events.SubjectCovers(b, a) {
					t.Errorf("%+v: %s and %s overlap", tc.filter, a, b)
				}
			}
		}
	}
}

// blockingWriter blocks every write until released, like a terminal
// paused with Ctrl-S.
type blockingWriter struct {
	release chan struct{}
	buf     syncBuffer
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	<-w.release
	return w.buf.Write(p)
}

// A terminal too slow for the events loses some, but says how many, and
// never holds up NATS.
func TestSlowOutputReportsDroppedEvents(t *testing.T) {
	w := &blockingWriter{release: make(chan struct{})}
	v := newView(viewOptions{out: w, errOut: io.Discard, style: lineStyle{home: "edge-01", loc: time.UTC}, shown: []string{"dropship.*.*.transfer.*"}})
	f := newFeed()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- v.run(ctx, f) }()

	const total = durableQueue + 3000
	msgs := make([]*nats.Msg, total)
	for i := range msgs {
		ev := transferEvent(t, events.TransferQueued, fmt.Sprintf("f%05d", i), 0)
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		msgs[i] = &nats.Msg{Subject: ev.NATSSubject, Data: b}
	}
	delivered := make(chan struct{})
	go func() {
		defer close(delivered)
		for _, m := range msgs {
			f.deliver(m)
		}
	}()
	select {
	case <-delivered: // deliver never waits for the output
	case <-time.After(10 * time.Second):
		t.Fatal("delivering events blocked on a stuck output")
	}
	close(w.release)
	warning := regexp.MustCompile(`warning    output too slow: (\d+) lifecycle event\(s\) were not shown; they are stored in JetStream: see them with -since 10m$`)
	var printed, dropped int
	count := func() bool {
		printed, dropped = 0, 0
		sc := bufio.NewScanner(strings.NewReader(w.buf.String()))
		for sc.Scan() {
			if m := warning.FindStringSubmatch(sc.Text()); m != nil {
				n, _ := strconv.Atoi(m[1])
				dropped += n
			} else if strings.Contains(sc.Text(), " queued ") {
				printed++
			}
		}
		return printed+dropped >= total
	}
	waitFor(t, "every event printed or reported dropped", count)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	count()
	if dropped == 0 || printed+dropped != total {
		t.Errorf("printed %d, reported %d dropped, total %d", printed, dropped, total)
	}
}

func TestIDSetForgetsTheOldest(t *testing.T) {
	s := newIDSet(3)
	for _, id := range []string{"a", "b", "c"} {
		if !s.add(id) {
			t.Fatalf("%s: not new", id)
		}
	}
	if s.add("a") {
		t.Error("a: added twice")
	}
	s.add("d") // forgets a
	if !s.add("a") {
		t.Error("a: still remembered after 3 newer ids")
	}
}

// Progress frames that arrive after their attempt ended do not bring the
// bar back; a new attempt gets a fresh bar.
func TestBarsFollowAttempts(t *testing.T) {
	now := barNow
	v := newView(viewOptions{out: io.Discard, term: fixedTerminal{80, 24}, shown: []string{"dropship.*.*.transfer.*"}, now: func() time.Time { return now }})
	v.handle(transferEvent(t, events.TransferStarted, "t1", 1), true)
	v.handle(progressEvent(t, "t1", 1, 100), true)
	if len(v.bars) != 1 || v.bars[0].sent != 100 {
		t.Fatalf("bars %+v", v.bars)
	}
	v.handle(transferEvent(t, events.TransferRetrying, "t1", 1), true)
	v.handle(progressEvent(t, "t1", 1, 200), true) // late
	if len(v.bars) != 0 {
		t.Fatalf("a late frame brought the bar back: %+v", v.bars[0])
	}
	v.handle(progressEvent(t, "t1", 2, 50), true)
	if len(v.bars) != 1 || v.bars[0].attempt != 2 || v.bars[0].sent != 50 {
		t.Fatalf("bars %+v", v.bars)
	}
	// A file released after a failure starts again from attempt 1.
	v.handle(transferEvent(t, events.TransferFailed, "t1", 2), true)
	v.handle(transferEvent(t, events.TransferStarted, "t1", 1), true)
	v.handle(progressEvent(t, "t1", 1, 10), true)
	if len(v.bars) != 1 || v.bars[0].attempt != 1 || v.bars[0].sent != 10 {
		t.Fatalf("after a restart from attempt 1: bars %+v", v.bars)
	}
	// Replayed events never start bars.
	v.handle(transferEvent(t, events.TransferStarted, "old", 1), false)
	if len(v.bars) != 1 {
		t.Errorf("a replayed start made a bar")
	}
	// A bar with no news is removed in the end.
	now = now.Add(barExpiry)
	v.expire()
	if len(v.bars) != 0 {
		t.Errorf("a bar with no news for %s is still shown", barExpiry)
	}
}

type fixedTerminal struct{ w, h int }

func (f fixedTerminal) size() (int, int) { return f.w, f.h }
