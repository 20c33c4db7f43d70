package events

import (
	"bufio"
	"context"
	"io"
	"net"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dropship/dropship/internal/natsbin"
)

func TestVersionAtLeast(t *testing.T) {
	for _, c := range []struct {
		v    string
		want bool
	}{
		{"2.9.0", true}, {"2.9.10", true}, {"2.10.0", true}, {"3.0.0", true}, {"v2.11.3", true},
		{"2.8.4", false}, {"2.2.0", false}, {"1.9.9", false}, {"2.11.0-RC.1", true}, {"", false}, {"garbage", false},
	} {
		if got := VersionAtLeast(c.v, MinServerVersion); got != c.want {
			t.Errorf("VersionAtLeast(%q, %q) = %v, want %v", c.v, MinServerVersion, got, c.want)
		}
	}
}

func TestAddStreamCommand(t *testing.T) {
	got := AddStreamCommand(StreamSetup{Name: "DROPSHIP_EVENTS", Subjects: AllLifecycle("dropship"), Replicas: 3})
	want := "nats stream add DROPSHIP_EVENTS --subjects 'dropship.*.*.transfer.*' --subjects 'dropship.*.agent.*' " +
		"--storage file --retention limits --discard old --max-age 168h --max-bytes 1073741824 --dupe-window 24h --replicas 3 --defaults"
	if got != want {
		t.Errorf("AddStreamCommand:\n got %s\nwant %s", got, want)
	}
	got = AddStreamCommand(StreamSetup{Name: "S", Subjects: []string{"a.>"}, MaxBytes: 5 << 30, MaxAge: 48 * time.Hour, Duplicates: 72 * time.Hour, Cluster: "east", Tags: []string{"ssd", "dc a"}})
	want = "nats stream add S --subjects 'a.>' --storage file --retention limits --discard old --max-age 48h --max-bytes 5368709120 " +
		"--dupe-window 48h --replicas 1 --cluster east --tag ssd --tag 'dc a' --defaults"
	if got != want {
		t.Errorf("AddStreamCommand with sizes and placement (the window capped at the age):\n got %s\nwant %s", got, want)
	}
}

func checkStream(t *testing.T, b *Bus, s StreamSetup) StreamCheck {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := b.CheckStream(ctx, s)
	if err != nil {
		t.Fatalf("CheckStream(%+v): %v", s, err)
	}
	return c
}

// TestCheckStream checks a real server the way the agent does at start: a
// missing stream is reported with both fixes unless the agent may create
// it; an operator's stream is never changed, and what it lacks is named.
func TestCheckStream(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	b := connect(t, ConnectOptions{URL: srv.ClientURL()})
	waitConnected(t, b)
	setup := StreamSetup{Name: testStream, Subjects: AllLifecycle("dropship")}

	c := checkStream(t, b, setup)
	if c.OK() || !strings.Contains(c.Problem, "does not exist") ||
		!strings.Contains(c.Fix, "set auto_create_stream = true") || !strings.Contains(c.Fix, AddStreamCommand(setup)) {
		t.Errorf("missing stream, not to be created: %+v", c)
	}
	if c.ServerVersion == "" {
		t.Errorf("no server version: %+v", c)
	}
	if _, err := b.js.Stream(t.Context(), testStream); err == nil {
		t.Errorf("CheckStream created the stream without Create")
	}

	setup.Create = true
	c = checkStream(t, b, setup)
	if !c.OK() || !c.Created || c.Replicas != 1 || c.DuplicateWindow != StreamDuplicateWindow || len(c.Warnings) > 0 {
		t.Errorf("created stream: %+v", c)
	}
	if c = checkStream(t, b, setup); !c.OK() || c.Created {
		t.Errorf("existing stream: %+v", c)
	}

	// An operator's stream that lacks the agent events and remembers ids
	// for a minute: reported, not changed, even with Create.
	ops := jetstream.StreamConfig{Name: "OPS", Subjects: []string{"ops.*.*.transfer.*"}, Storage: jetstream.FileStorage, Duplicates: time.Minute}
	if _, err := b.js.CreateStream(t.Context(), ops); err != nil {
		t.Fatal(err)
	}
	c = checkStream(t, b, StreamSetup{Name: "OPS", Subjects: AllLifecycle("ops"), Create: true})
	if c.OK() || !strings.Contains(c.Problem, "does not capture ops.*.agent.*") ||
		!strings.Contains(c.Fix, "nats stream edit OPS --subjects 'ops.*.*.transfer.*' --subjects 'ops.*.agent.*'") {
		t.Errorf("stream without the agent subjects: %+v", c)
	}
	s, err := b.js.Stream(t.Context(), "OPS")
	if err != nil {
		t.Fatal(err)
	}
	if cfg := s.CachedInfo().Config; !slices.Equal(cfg.Subjects, ops.Subjects) || cfg.Duplicates != time.Minute {
		t.Errorf("the operator's stream was changed: %+v", cfg)
	}
	if _, err := b.js.UpdateStream(t.Context(), jetstream.StreamConfig{Name: "OPS", Subjects: []string{"ops.>"}, Storage: jetstream.FileStorage, Duplicates: time.Minute}); err != nil {
		t.Fatal(err)
	}
	c = checkStream(t, b, StreamSetup{Name: "OPS", Subjects: AllLifecycle("ops")})
	if !c.OK() || len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "1m0s only") || !strings.Contains(c.Warnings[0], "nats stream edit OPS --dupe-window 24h") {
		t.Errorf("stream with a short duplicate window: %+v", c)
	}

	// Three replicas on a single server.
	c = checkStream(t, b, StreamSetup{Name: "CLUSTERED", Subjects: AllLifecycle("clustered"), Create: true, Replicas: 3})
	if c.OK() || !strings.Contains(c.Fix, "set nats.stream_replicas to at most the number of JetStream servers") || !strings.Contains(c.Fix, "--replicas 3") {
		t.Errorf("three replicas on one server: %+v", c)
	}

	// A stream that cannot be created: the reason and what to do.
	c = checkStream(t, b, StreamSetup{Name: "OTHER", Subjects: AllLifecycle("ops"), Create: true})
	if c.OK() || !strings.Contains(c.Problem, "cannot create JetStream stream OTHER") || !strings.Contains(c.Fix, "set nats.stream to its name") {
		t.Errorf("stream over another stream's subjects: %+v", c)
	}
}

func TestCheckStreamWithoutJetStream(t *testing.T) {
	opts := natstest.DefaultTestOptions
	opts.Port = -1
	plain := natstest.RunServer(&opts)
	t.Cleanup(func() { stopServer(plain) })
	b := connect(t, ConnectOptions{URL: plain.ClientURL()})
	waitConnected(t, b)
	c := checkStream(t, b, StreamSetup{Name: testStream, Subjects: AllLifecycle("dropship"), Create: true})
	if c.OK() || !strings.Contains(c.Problem, "JetStream is not enabled") || !strings.Contains(c.Fix, "-js") {
		t.Errorf("server without JetStream: %+v", c)
	}
}

// TestPublishDurableWithCoreSubscriber: a core NATS subscriber on the
// subject, and no stream, must not pass for a stored event, nor make the
// publish hang past its deadline.
func TestPublishDurableWithCoreSubscriber(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	b := connect(t, ConnectOptions{URL: srv.ClientURL()})
	waitConnected(t, b)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Subscribe("dropship.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	// And one that answers, as `nats reply` would.
	if _, err := nc.Subscribe("dropship.*.globex.>", func(m *nats.Msg) { _ = m.Respond([]byte("ok")) }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"acme", "globex"} {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		start := time.Now()
		err := b.PublishDurable(ctx, completedEvent(t, goldenSubjects, target))
		cancel()
		if err == nil || !strings.Contains(err.Error(), "not stored") {
			t.Errorf("publish to %s with only a core subscriber: %v, want an error saying the event is not stored", target, err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("publish to %s took %s, past its 1s deadline", target, d)
		}
	}
}

// TestPublishDurableExpectStream: an event captured by another stream than
// the configured one is reported, since nobody would find it there.
func TestPublishDurableExpectStream(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	b := connect(t, ConnectOptions{URL: srv.ClientURL()})
	waitConnected(t, b)
	if _, err := b.js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "ELSEWHERE", Subjects: []string{"dropship.>"}}); err != nil {
		t.Fatal(err)
	}
	b.ExpectStream(testStream)
	err := b.PublishDurable(t.Context(), completedEvent(t, goldenSubjects, "acme"))
	if err == nil || !strings.Contains(err.Error(), "stored in JetStream stream ELSEWHERE, not "+testStream) {
		t.Errorf("publish captured by another stream: %v", err)
	}
}

// TestDebianNATSServer runs what dropship does with NATS against the
// nats-server Debian 12 ships (2.9.10, older than the one compiled in):
// the stream check, publishing, and a replay over several subject filters,
// which that server refuses as one consumer ("multiple consumer filter
// subjects not supported by nats-server").
func TestDebianNATSServer(t *testing.T) {
	srv := natsbin.Start(t, true)
	t.Logf("nats-server %s", srv.Version)
	b := connect(t, ConnectOptions{URL: srv.URL})
	waitConnected(t, b)
	setup := StreamSetup{Name: testStream, Subjects: AllLifecycle("dropship"), Create: true}
	c := checkStream(t, b, setup)
	if !c.OK() || !c.Created || len(c.Warnings) > 0 {
		t.Fatalf("CheckStream on nats-server %s: %+v", srv.Version, c)
	}
	if c.ServerVersion != srv.Version {
		t.Errorf("server version %q, want %q", c.ServerVersion, srv.Version)
	}
	started, err := NewAgent(goldenSubjects, AgentStarted, Agent{Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Event{completedEvent(t, goldenSubjects, "acme"), started, completedEvent(t, goldenSubjects, "globex"), completedEvent(t, goldenSubjects, "acme")}
	var wantIDs []string
	for _, ev := range want {
		if err := b.PublishDurable(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
		wantIDs = append(wantIDs, ev.ID)
	}
	subjects, err := Filter{}.Subjects("dropship")
	if err != nil {
		t.Fatal(err)
	}
	if len(subjects) < 2 {
		t.Fatalf("the default filter has %d subjects; the test needs several", len(subjects))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var got []string
	if err := b.Replay(ctx, testStream, subjects, time.Hour, func(ev Event) { got = append(got, ev.ID) }); err != nil {
		t.Fatalf("Replay over %q on nats-server %s: %v", subjects, srv.Version, err)
	}
	if !slices.Equal(got, wantIDs) {
		t.Errorf("replayed %q, want %q in the stream's order", got, wantIDs)
	}

	// Without JetStream, the problem is named.
	plain := natsbin.Start(t, false)
	b2 := connect(t, ConnectOptions{URL: plain.URL})
	waitConnected(t, b2)
	if c := checkStream(t, b2, setup); c.OK() || !strings.Contains(c.Problem, "JetStream is not enabled") {
		t.Errorf("nats-server %s without -js: %+v", plain.Version, c)
	}
}

// versionProxy relays connections to the server at addr, rewriting the
// version in the server's INFO lines to version: a server older than
// dropship supports, as clients see it.
func versionProxy(t *testing.T, addr, version string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	re := regexp.MustCompile(`"version":"[^"]*"`)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			go func() {
				defer c.Close()
				defer s.Close()
				go func() { _, _ = io.Copy(s, c) }()
				// Every INFO (the server sends more after CONNECT).
				r := bufio.NewReader(s)
				for {
					line, err := r.ReadString('\n')
					if strings.HasPrefix(line, "INFO ") {
						line = re.ReplaceAllString(line, `"version":"`+version+`"`)
					}
					if _, werr := io.WriteString(c, line); werr != nil || err != nil {
						return
					}
				}
			}()
		}
	}()
	return "nats://" + ln.Addr().String()
}

// TestCheckStreamOldServer: a server older than MinServerVersion is named,
// with what to do; and a failed replay there says so too.
func TestCheckStreamOldServer(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	url := versionProxy(t, srv.Addr().String(), "2.8.4")
	b := connect(t, ConnectOptions{URL: url})
	waitConnected(t, b)
	c := checkStream(t, b, StreamSetup{Name: testStream, Subjects: AllLifecycle("dropship"), Create: true})
	if c.ServerVersion != "2.8.4" || len(c.Warnings) != 1 || c.Warnings[0] != "nats-server 2.8.4 is older than 2.9.0, the oldest dropship supports: upgrade the NATS server" {
		t.Errorf("check of a 2.8.4 server: %+v", c)
	}
	err := b.Replay(t.Context(), "NO_SUCH_STREAM", AllLifecycle("dropship"), 0, func(Event) {})
	if err == nil || !strings.Contains(err.Error(), "nats-server 2.8.4 is older than 2.9.0") {
		t.Errorf("a failed replay on 2.8.4: %v", err)
	}
}
