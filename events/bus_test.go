package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

const testStream = "DROPSHIP_EVENTS"

// runServer starts a real nats-server with JetStream on port (-1: any free
// port) and stops it when the test ends.
func runServer(t *testing.T, port int, storeDir string) *server.Server {
	t.Helper()
	opts := natstest.DefaultTestOptions
	opts.Port = port
	opts.JetStream = true
	opts.StoreDir = storeDir
	srv := natstest.RunServer(&opts)
	t.Cleanup(func() { stopServer(srv) })
	return srv
}

func stopServer(srv *server.Server) {
	srv.Shutdown()
	srv.WaitForShutdown()
}

func serverPort(t *testing.T, srv *server.Server) int {
	t.Helper()
	return srv.Addr().(*net.TCPAddr).Port
}

// freePort returns a loopback port nothing listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func connect(t *testing.T, opts ConnectOptions) *Bus {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	if opts.Name == "" {
		opts.Name = "dropship test"
	}
	b, err := Connect(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func waitConnected(t *testing.T, b *Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := b.WaitConnected(ctx); err != nil {
		t.Fatalf("bus did not connect: %v", err)
	}
}

// waitFor polls cond until it holds or 10 seconds pass.
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

func completedEvent(t *testing.T, s Subjects, target string) Event {
	t.Helper()
	d := goldenTransfer(1)
	d.Target.Name = target
	d.ExitCode = exitCode(0)
	ev, err := NewTransfer(s, TransferCompleted, d)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// streamOf opens the test stream through a separate connection, as a
// consumer would see it.
func streamOf(t *testing.T, url string) jetstream.Stream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(t.Context(), testStream)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func streamMsgs(t *testing.T, s jetstream.Stream) uint64 {
	t.Helper()
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestPublishDurableStoresOnceWithMsgID(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	b := connect(t, ConnectOptions{URL: srv.ClientURL()})
	waitConnected(t, b)
	ctx := t.Context()
	if err := b.EnsureStream(ctx, testStream, AllLifecycle("dropship")); err != nil {
		t.Fatal(err)
	}

	ev := completedEvent(t, goldenSubjects, "acme")
	for range 2 {
		if err := b.PublishDurable(ctx, ev); err != nil {
			t.Fatalf("PublishDurable: %v", err)
		}
	}

	s := streamOf(t, srv.ClientURL())
	if n := streamMsgs(t, s); n != 1 {
		t.Fatalf("stream holds %d messages after publishing one event twice, want 1", n)
	}
	msg, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.Header.Get("Nats-Msg-Id"); got != ev.ID {
		t.Errorf("Nats-Msg-Id = %q, want the event id %q", got, ev.ID)
	}
	if got := msg.Header.Get("Content-Type"); got != "application/cloudevents+json" {
		t.Errorf("Content-Type = %q", got)
	}
	if msg.Subject != "dropship.edge-01.acme.transfer.completed" {
		t.Errorf("stored on %q", msg.Subject)
	}
	got, err := Parse(msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != ev.ID || got.Type != TypeTransferCompleted || string(got.Data) != string(ev.Data) {
		t.Errorf("stored event %+v, want %+v", got, ev)
	}

	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	if cfg.Storage != jetstream.FileStorage || cfg.Duplicates != 24*time.Hour || cfg.MaxAge != 7*24*time.Hour ||
		cfg.MaxBytes != 1<<30 || cfg.Retention != jetstream.LimitsPolicy || cfg.Discard != jetstream.DiscardOld {
		t.Errorf("stream config: %+v", cfg)
	}
}

func TestPublishDurableWithoutStream(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	b := connect(t, ConnectOptions{URL: srv.ClientURL()})
	waitConnected(t, b)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	err := b.PublishDurable(ctx, completedEvent(t, goldenSubjects, "acme"))
	if err == nil || !strings.Contains(err.Error(), "nats.auto_create_stream") {
		t.Fatalf("PublishDurable with no stream: %v, want an error naming nats.auto_create_stream", err)
	}
}

// TestPublishDurableAcrossOutage stops the server, sees PublishDurable fail in
// time, restarts the server on the same port and store, and sees the Bus
// reconnect by itself and publish again, with a republished event stored
// once.
func TestPublishDurableAcrossOutage(t *testing.T) {
	store := t.TempDir()
	srv := runServer(t, -1, store)
	port := serverPort(t, srv)

	var mu sync.Mutex
	var states []bool
	b := connect(t, ConnectOptions{URL: srv.ClientURL(), OnStateChange: func(up bool) {
		mu.Lock()
		states = append(states, up)
		mu.Unlock()
	}})
	waitConnected(t, b)
	ctx := t.Context()
	if err := b.EnsureStream(ctx, testStream, AllLifecycle("dropship")); err != nil {
		t.Fatal(err)
	}
	first := completedEvent(t, goldenSubjects, "acme")
	if err := b.PublishDurable(ctx, first); err != nil {
		t.Fatal(err)
	}

	stopServer(srv)
	waitFor(t, "the bus to notice the outage", func() bool { return !b.Connected() })

	second := completedEvent(t, goldenSubjects, "globex")
	pubCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	start := time.Now()
	err := b.PublishDurable(pubCtx, second)
	if !errors.Is(err, ErrNotConnected) {
		t.Errorf("PublishDurable during the outage: %v, want ErrNotConnected", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("PublishDurable took %s, beyond its 2s deadline", d)
	}
	for range 1000 {
		start := time.Now()
		if err := b.PublishBestEffort(second); !errors.Is(err, ErrNotConnected) {
			t.Fatalf("PublishBestEffort during the outage: %v, want ErrNotConnected", err)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Fatalf("a best-effort publish during the outage took %s", d)
		}
	}

	srv = runServer(t, port, store)
	waitConnected(t, b)
	if err := b.PublishDurable(ctx, second); err != nil {
		t.Fatalf("PublishDurable after the restart: %v", err)
	}
	if err := b.PublishDurable(ctx, first); err != nil { // an outbox retry of an event that was stored
		t.Fatalf("republishing a stored event: %v", err)
	}
	if n := streamMsgs(t, streamOf(t, srv.ClientURL())); n != 2 {
		t.Errorf("stream holds %d messages, want 2 (one per event)", n)
	}
	if n := b.Disconnects(); n != 1 {
		t.Errorf("Disconnects() = %d, want 1", n)
	}
	if n := b.Drops(); n != 1000 {
		t.Errorf("Drops() = %d, want 1000", n)
	}
	waitFor(t, "three state changes", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(states) >= 3
	})
	mu.Lock()
	if !slices.Equal(states, []bool{true, false, true}) {
		t.Errorf("state changes %v, want [true false true]", states)
	}
	mu.Unlock()
}

func TestConnectBeforeServerStarts(t *testing.T) {
	port := freePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	b := connect(t, ConnectOptions{URL: url})
	if b.Connected() {
		t.Fatal("connected with no server")
	}
	if err := b.PublishBestEffort(completedEvent(t, goldenSubjects, "acme")); !errors.Is(err, ErrNotConnected) {
		t.Errorf("PublishBestEffort before the server is up: %v, want ErrNotConnected", err)
	}

	srv := runServer(t, port, t.TempDir())
	waitConnected(t, b)

	sub, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	got, err := sub.SubscribeSync(">")
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	ev := completedEvent(t, goldenSubjects, "acme")
	if err := b.PublishBestEffort(ev); err != nil {
		t.Fatal(err)
	}
	m, err := got.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("Nats-Msg-Id") != ev.ID {
		t.Errorf("best-effort message id header %q, want %q", m.Header.Get("Nats-Msg-Id"), ev.ID)
	}
}

func TestPublishBestEffortNeverBlocks(t *testing.T) {
	b := connect(t, ConnectOptions{URL: fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))})
	ev := completedEvent(t, goldenSubjects, "acme")
	const n = 1000
	var slowest time.Duration
	for range n {
		start := time.Now()
		if err := b.PublishBestEffort(ev); !errors.Is(err, ErrNotConnected) {
			t.Fatalf("PublishBestEffort with no server: %v, want ErrNotConnected", err)
		}
		slowest = max(slowest, time.Since(start))
	}
	// Blocking would mean waiting for a reconnect attempt: a second or more.
	if slowest > 500*time.Millisecond {
		t.Errorf("the slowest of %d best-effort publishes with no server took %s", n, slowest)
	}
	if b.Drops() != n {
		t.Errorf("Drops() = %d, want %d", b.Drops(), n)
	}
}

func TestConnectChecksCredentialsFile(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.creds")
	if err := os.WriteFile(garbage, []byte("not a creds file"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(dir, "missing.creds"), garbage} {
		_, err := Connect(t.Context(), ConnectOptions{URL: "nats://127.0.0.1:1", CredentialsFile: path})
		if err == nil || !strings.Contains(err.Error(), "nats.credentials_file") {
			t.Errorf("Connect with credentials file %s: %v, want an error naming nats.credentials_file", filepath.Base(path), err)
		}
	}
}

// TestSubscribersSeeWhatTheyFilter publishes events of every kind and checks
// which ones reach subscribers on the lifecycle wildcard and on filters.
func TestSubscribersSeeWhatTheyFilter(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	b := connect(t, ConnectOptions{URL: srv.ClientURL()})
	waitConnected(t, b)
	ctx := t.Context()
	if err := b.EnsureStream(ctx, testStream, AllLifecycle("dropship")); err != nil {
		t.Fatal(err)
	}

	sub, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	subscribe := func(subjects []string) chan *nats.Msg {
		ch := make(chan *nats.Msg, 64)
		for _, s := range subjects {
			if _, err := sub.ChanSubscribe(s, ch); err != nil {
				t.Fatal(err)
			}
		}
		return ch
	}
	filtered := func(f Filter) chan *nats.Msg {
		subjects, err := f.Subjects("dropship")
		if err != nil {
			t.Fatal(err)
		}
		return subscribe(subjects)
	}
	type check struct {
		name string
		ch   chan *nats.Msg
		want []string // event types, in order
	}
	checks := []check{
		{"AllLifecycle", subscribe(AllLifecycle("dropship")),
			[]string{TypeAgentStarted, TypeTransferCompleted, TypeTransferFailed, TypeTransferCompleted}},
		{"all", filtered(Filter{Type: "all"}),
			[]string{TypeAgentStarted, TypeTransferCompleted, TypeTransferFailed, TypeProgress, TypeLog, TypeTransferCompleted}},
		{"target acme completed", filtered(Filter{Target: "acme", Type: "completed"}),
			[]string{TypeTransferCompleted, TypeTransferCompleted}},
		{"agent edge-01 target acme completed", filtered(Filter{Agent: "edge-01", Target: "acme", Type: "completed"}),
			[]string{TypeTransferCompleted}},
		{"agent edge-02", filtered(Filter{Agent: "edge-02"}), []string{TypeTransferCompleted}},
		{"target globex", filtered(Filter{Target: "globex"}), []string{TypeTransferFailed}},
		{"progress", filtered(Filter{Type: "progress"}), []string{TypeProgress}},
		{"agent", filtered(Filter{Type: "agent"}), []string{TypeAgentStarted}},
	}
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}

	edge01, edge02 := goldenSubjects, Subjects{Prefix: "dropship", Agent: "edge-02"}
	started, err := NewAgent(edge01, AgentStarted, Agent{Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	failedData := goldenTransfer(1)
	failedData.Target.Name = "globex"
	failedData.Error = &ErrorInfo{Class: "auth", Message: "Permission denied (publickey)."}
	failed, err := NewTransfer(edge01, TransferFailed, failedData)
	if err != nil {
		t.Fatal(err)
	}
	progress, err := NewProgress(edge01, Progress{TransferID: goldenTID, Target: goldenTarget, Percent: 50})
	if err != nil {
		t.Fatal(err)
	}
	logLine, err := NewLog(edge01, Log{Target: goldenTarget, Line: "debug1: Authentication succeeded (publickey).", Seq: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		ev      Event
		durable bool
	}{
		{started, true},
		{completedEvent(t, edge01, "acme"), true},
		{failed, true},
		{progress, false},
		{logLine, false},
		{completedEvent(t, edge02, "acme"), true},
	} {
		var err error
		if p.durable {
			err = b.PublishDurable(ctx, p.ev)
		} else {
			err = b.PublishBestEffort(p.ev)
		}
		if err != nil {
			t.Fatal(err)
		}
	}

	for _, c := range checks {
		waitFor(t, c.name+" to receive its events", func() bool { return len(c.ch) >= len(c.want) })
	}
	// Nothing more arrives behind them.
	if err := b.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, c := range checks {
		var got []string
		for range len(c.ch) {
			m := <-c.ch
			ev, err := ParseMsg(m)
			if err != nil {
				t.Fatal(err)
			}
			if ev.NATSSubject != m.Subject {
				t.Errorf("ParseMsg left NATSSubject %q, want %q", ev.NATSSubject, m.Subject)
			}
			got = append(got, ev.Type)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s received %q, want %q", c.name, got, c.want)
		}
	}
}

func TestReplay(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	b := connect(t, ConnectOptions{URL: srv.ClientURL()})
	waitConnected(t, b)
	ctx := t.Context()
	if err := b.EnsureStream(ctx, testStream, AllLifecycle("dropship")); err != nil {
		t.Fatal(err)
	}
	started, err := NewAgent(goldenSubjects, AgentStarted, Agent{Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Event{started, completedEvent(t, goldenSubjects, "acme"), completedEvent(t, goldenSubjects, "globex")}
	for _, ev := range want {
		if err := b.PublishDurable(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	replay := func(f Filter, since time.Duration) []string {
		t.Helper()
		subjects, err := f.Subjects("dropship")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var ids []string
		if err := b.Replay(ctx, testStream, subjects, since, func(ev Event) { ids = append(ids, ev.ID) }); err != nil {
			t.Fatalf("Replay(%+v): %v", f, err)
		}
		return ids
	}
	if got := replay(Filter{}, time.Hour); !slices.Equal(got, []string{want[0].ID, want[1].ID, want[2].ID}) {
		t.Errorf("replay of the last hour: %q, want all three in order", got)
	}
	if got := replay(Filter{Target: "globex"}, 0); !slices.Equal(got, []string{want[2].ID}) {
		t.Errorf("replay for target globex: %q, want only its event", got)
	}
	if got := replay(Filter{Target: "initech"}, 0); len(got) != 0 {
		t.Errorf("replay for a target with no events: %q", got)
	}
	if got := replay(Filter{}, time.Nanosecond); len(got) != 0 {
		t.Errorf("replay of the last nanosecond: %q", got)
	}
}

func TestEnsureStream(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	b := connect(t, ConnectOptions{URL: srv.ClientURL()})
	waitConnected(t, b)
	ctx := t.Context()
	subjectsOf := func(name string) []string {
		t.Helper()
		s, err := b.js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().Config.Subjects
	}

	for range 2 { // the second call finds everything in place
		if err := b.EnsureStream(ctx, testStream, AllLifecycle("dropship")); err != nil {
			t.Fatal(err)
		}
	}
	// A new prefix adds its subjects and keeps the old ones.
	if err := b.EnsureStream(ctx, testStream, AllLifecycle("acme.dropship")); err != nil {
		t.Fatal(err)
	}
	want := append(AllLifecycle("dropship"), AllLifecycle("acme.dropship")...)
	if got := subjectsOf(testStream); !slices.Equal(got, want) {
		t.Errorf("subjects %q, want %q", got, want)
	}

	// An operator's stream that already captures everything, with its own
	// limits, is left as it is.
	custom := jetstream.StreamConfig{Name: "OPS", Subjects: []string{"ops.>"}, Storage: jetstream.FileStorage, MaxAge: time.Hour, Duplicates: time.Hour}
	if _, err := b.js.CreateStream(ctx, custom); err != nil {
		t.Fatal(err)
	}
	if err := b.EnsureStream(ctx, "OPS", AllLifecycle("ops")); err != nil {
		t.Fatal(err)
	}
	s, err := b.js.Stream(ctx, "OPS")
	if err != nil {
		t.Fatal(err)
	}
	if cfg := s.CachedInfo().Config; !slices.Equal(cfg.Subjects, []string{"ops.>"}) || cfg.MaxAge != time.Hour {
		t.Errorf("operator's stream changed: subjects %q, max age %s", cfg.Subjects, cfg.MaxAge)
	}

	// Subjects another stream owns cannot be captured twice: the error says
	// which stream was being created.
	err = b.EnsureStream(ctx, "OTHER", AllLifecycle("ops"))
	if err == nil || !strings.Contains(err.Error(), "create JetStream stream OTHER") {
		t.Errorf("EnsureStream over another stream's subjects: %v", err)
	}
}

func TestRedactURLs(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                             "nats://127.0.0.1:4222",
		"nats://user:s3cret@127.0.0.1:4222":                 "nats://user:xxxxx@127.0.0.1:4222",
		"nats://t0ken@127.0.0.1:4222":                       "nats://xxxxx@127.0.0.1:4222",
		"nats://a:pw@127.0.0.1:4222, nats://127.0.0.1:4223": "nats://a:xxxxx@127.0.0.1:4222,nats://127.0.0.1:4223",
	} {
		if got := redactURLs(in); got != want {
			t.Errorf("redactURLs(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestConnectWithCredentials authenticates with a real .creds file against a
// server in operator mode.
func TestConnectWithCredentials(t *testing.T) {
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	okp, err := nkeys.CreateOperator()
	must(err)
	opub, err := okp.PublicKey()
	must(err)
	oc := jwt.NewOperatorClaims(opub)
	_, err = oc.Encode(okp)
	must(err)
	akp, err := nkeys.CreateAccount()
	must(err)
	apub, err := akp.PublicKey()
	must(err)
	ajwt, err := jwt.NewAccountClaims(apub).Encode(okp)
	must(err)
	ukp, err := nkeys.CreateUser()
	must(err)
	upub, err := ukp.PublicKey()
	must(err)
	ujwt, err := jwt.NewUserClaims(upub).Encode(akp)
	must(err)
	seed, err := ukp.Seed()
	must(err)
	creds, err := jwt.FormatUserConfig(ujwt, seed)
	must(err)
	path := filepath.Join(t.TempDir(), "dropship.creds")
	must(os.WriteFile(path, creds, 0o600))

	opts := natstest.DefaultTestOptions
	opts.Port = -1
	opts.TrustedOperators = []*jwt.OperatorClaims{oc}
	resolver := &server.MemAccResolver{}
	must(resolver.Store(apub, ajwt))
	opts.AccountResolver = resolver
	srv := natstest.RunServer(&opts)
	t.Cleanup(func() { stopServer(srv) })

	if _, err := nats.Connect(srv.ClientURL()); err == nil {
		t.Fatal("the server accepts clients without credentials; the test proves nothing")
	}
	b := connect(t, ConnectOptions{URL: srv.ClientURL(), CredentialsFile: path})
	waitConnected(t, b)
}
