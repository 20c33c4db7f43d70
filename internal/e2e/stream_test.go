package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/natsbin"
)

// TestMissingStreamIsLoud: an external NATS server without the stream, and
// auto_create_stream left at false, as a new user would run it. Files are
// delivered, and the problem is loud everywhere an operator looks: an ERROR
// naming both fixes, check -connect, status (with the outbox's size and
// age), /readyz and the metrics; a core subscriber on the subjects does not
// make the events pass for stored; a stop does not wait for the stream. Once
// the operator creates the stream, the agent publishes the outbox by itself
// and everything says so.
func TestMissingStreamIsLoud(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	e.conf.get("[nats]").set("auto_create_stream", false)
	srv := sftpdServer(t, e.remote, "alice", "secret")
	e.sftpdTarget("partner", srv, "alice", "secret")
	e.watchFor("partner")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	e.conf.get("[agent]").set("metrics_listen", addr)
	e.writeConf()

	c := collect(t, n.url()) // a core subscriber on dropship.>
	agent := startAgent(t, e.cfg)
	agent.waitLog(10*time.Second, "lifecycle events cannot be stored")
	addCmd := "nats stream add " + stream + " --subjects '" + prefix + ".*.*.transfer.*' --subjects '" + prefix + ".*.agent.*'"
	for _, want := range []string{"level=ERROR", "set auto_create_stream = true in [nats]", addCmd} {
		if !strings.Contains(agent.logs(), want) {
			t.Errorf("the agent's log does not say %q:\n%s", want, agent.logs())
		}
	}

	data := []byte("delivered while the stream is missing\n")
	writeFile(t, filepath.Join(e.watch, "a.txt"), data)
	eventually(t, 30*time.Second, "a.txt delivered", func() bool {
		got, err := os.ReadFile(filepath.Join(e.remote, "a.txt"))
		return err == nil && string(got) == string(data)
	})

	r := dropship(t, "check", "-connect", "-c", e.cfg)
	if r.code != 1 || !strings.Contains(r.stdout, "nats: FAILED") || !strings.Contains(r.stdout, "does not exist") || !strings.Contains(r.stdout, addCmd) {
		t.Errorf("check -connect with the stream missing, want exit 1 and the fix:\n%s", r)
	}

	eventually(t, 10*time.Second, "status to show the outbox", func() bool { return status(t, "-c", e.cfg).OutboxDepth >= 2 })
	st := status(t, "-c", e.cfg)
	if st.Stream.Stored || !strings.Contains(st.Stream.Fix, "auto_create_stream") || st.OutboxOldest == nil {
		t.Errorf("status -json with the stream missing: %+v", st)
	}
	r = dropship(t, "status", "-c", e.cfg)
	if !strings.Contains(r.stdout, "EVENTS NOT STORED (stream "+stream+")") || !regexp.MustCompile(`outbox \d+ event\(s\), the oldest \d+s old`).MatchString(r.stdout) ||
		!strings.Contains(r.stdout, "fix: set auto_create_stream = true") {
		t.Errorf("status with the stream missing:\n%s", r)
	}
	code, body := get(t, "http://"+addr+"/readyz")
	if code != 503 || !strings.Contains(body, "lifecycle events cannot be stored") {
		t.Errorf("/readyz with the stream missing: %d %s", code, body)
	}
	m := scrape(t, addr)
	if m["dropship_events_stream_ok"] != 0 || m["dropship_outbox_oldest_event_age_seconds"] <= 0 {
		t.Errorf("metrics with the stream missing: stream_ok %v, oldest age %v", m["dropship_events_stream_ok"], m["dropship_outbox_oldest_event_age_seconds"])
	}
	if got := c.ofType(events.TypeTransferCompleted); len(got) != 0 {
		t.Errorf("a completed event reached NATS although no stream stores it: %d", len(got))
	}

	// A stop does not wait for a stream that is not there.
	start := time.Now()
	agent.stop(10 * time.Second)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the stop took %s with the stream missing, want no wait for it", d)
	}
	if !strings.Contains(agent.logs(), "events left in the outbox") {
		t.Errorf("the stop did not say events stay in the outbox:\n%s", agent.logs())
	}

	// The operator creates the stream; the agent, started again, and
	// still running, notices by itself.
	agent = startAgent(t, e.cfg)
	createStream(t, n.url())
	agent.waitLog(30*time.Second, "lifecycle events can be stored again")
	eventually(t, 30*time.Second, "the outbox published", func() bool {
		return len(filterType(storedEvents(t, n.url()), events.TypeTransferCompleted)) == 1
	})
	eventually(t, 10*time.Second, "status to show the stream fine", func() bool {
		st := status(t, "-c", e.cfg)
		return st.Stream.Stored && st.OutboxDepth == 0 && st.OutboxOldest == nil
	})
	if code, body := get(t, "http://"+addr+"/readyz"); code != 200 {
		t.Errorf("/readyz once the stream exists: %d %s", code, body)
	}
	if r := dropship(t, "check", "-connect", "-c", e.cfg); r.code != 0 || !strings.Contains(r.stdout, "nats: ok: nats-server") {
		t.Errorf("check -connect once the stream exists:\n%s", r)
	}
	agent.stop(10 * time.Second)
}

// TestStreamWithoutAgentSubjects: the operator's stream captures the
// transfer events only. The agent does not change it, and says which
// subjects are missing and the `nats stream edit` that adds them.
func TestStreamWithoutAgentSubjects(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	nc, err := nats.Connect(n.url())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: stream, Subjects: []string{prefix + ".*.*.transfer.*"}, Duplicates: time.Minute}); err != nil {
		t.Fatal(err)
	}
	e.writeConf() // auto_create_stream = true: it creates, never changes
	agent := startAgent(t, e.cfg)
	agent.waitLog(10*time.Second, "does not capture "+prefix+".*.agent.*")
	for _, want := range []string{"nats stream edit " + stream + " --subjects '" + prefix + ".*.*.transfer.*' --subjects '" + prefix + ".*.agent.*'", "remembers message ids for 1m0s only"} {
		if !strings.Contains(agent.logs(), want) {
			t.Errorf("the agent's log does not say %q:\n%s", want, agent.logs())
		}
	}
	s, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	if subj := s.CachedInfo().Config.Subjects; len(subj) != 1 {
		t.Errorf("the agent changed the operator's stream: subjects %q", subj)
	}
	agent.stop(10 * time.Second)
}

// TestReloadAppliesLiveKeys: SIGHUP after changing log_level,
// metrics_listen and auto_create_stream changes them live (debug lines
// appear, metrics move, the missing stream is created and the outbox
// published), and the keys that need a restart are named in one warning and
// keep their running values.
func TestReloadAppliesLiveKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	e.conf.get("[nats]").set("auto_create_stream", false)
	srv := sftpdServer(t, e.remote, "alice", "secret")
	e.sftpdTarget("partner", srv, "alice", "secret")
	e.watchFor("partner")
	addr1 := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	e.conf.get("[agent]").set("metrics_listen", addr1).set("log_level", "info")
	e.writeConf()
	agent := startAgent(t, e.cfg)
	agent.waitLog(10*time.Second, "lifecycle events cannot be stored")
	if strings.Contains(agent.logs(), "level=DEBUG") {
		t.Fatalf("debug lines at log_level = info:\n%s", agent.logs())
	}

	addr2 := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	e.conf.get("[agent]").set("metrics_listen", addr2).set("log_level", "debug").set("name", "renamed")
	e.conf.get("[nats]").set("auto_create_stream", true).set("subject_prefix", "other")
	e.writeConf()
	agent.signal(syscall.SIGHUP)
	agent.waitLog(10*time.Second, "configuration reloaded")
	agent.waitLog(5*time.Second, "created JetStream stream") // at once, not after the retry backoff
	if !strings.Contains(agent.logs(), "these keys need a restart: agent.name, nats.subject_prefix;") {
		t.Errorf("the reload did not name the keys that need a restart:\n%s", agent.logs())
	}
	if strings.Count(agent.logs(), "need a restart") != 1 {
		t.Errorf("want one warning about the keys that need a restart:\n%s", agent.logs())
	}
	writeFile(t, filepath.Join(e.watch, "b.txt"), []byte("after the reload\n"))
	eventually(t, 10*time.Second, "debug lines after the reload", func() bool { return strings.Contains(agent.logs(), `level=DEBUG msg="file ready"`) })
	eventually(t, 10*time.Second, "metrics on the new address", func() bool {
		code, _ := getQuiet("http://" + addr2 + "/readyz")
		return code == 200
	})
	if code, _ := getQuiet("http://" + addr1 + "/metrics"); code != 0 {
		t.Errorf("the old metrics address still answers (%d)", code)
	}
	eventually(t, 20*time.Second, "the started event stored under the running name and prefix", func() bool {
		return len(filterType(storedEvents(t, n.url()), events.TypeAgentStarted)) == 1
	})
	// The running name still answers status.
	if st := status(t, "-nats", n.url(), "-agent", agentName, "-prefix", prefix); st.Agent != agentName || !st.Stream.Stored {
		t.Errorf("status after the reload: %+v", st)
	}
	agent.stop(10 * time.Second)
}

// getQuiet is get without failing the test: 0 when nothing answers.
func getQuiet(url string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, ""
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	return resp.StatusCode, ""
}

// TestDebianNATSServerEndToEnd runs the agent against the nats-server
// Debian 12 ships (2.9.10): check -connect accepts it, the agent creates its
// stream there, status answers, and `dropship events -since 1h` replays
// what it stored (it
// used to fail with "multiple consumer filter subjects not supported by
// nats-server").
func TestDebianNATSServerEndToEnd(t *testing.T) {
	t.Parallel()
	ns := natsbin.Start(t, true)
	e := newEnv(t)
	e.conf.get("[nats]").set("url", ns.URL).set("auto_create_stream", true)
	srv := sftpdServer(t, e.remote, "alice", "secret")
	e.sftpdTarget("partner", srv, "alice", "secret")
	e.watchFor("partner")
	e.writeConf()
	agent := startAgent(t, e.cfg)
	writeFile(t, filepath.Join(e.watch, "a.txt"), []byte("to a Debian NATS\n"))
	eventually(t, 30*time.Second, "a.txt delivered", func() bool {
		_, err := os.Stat(filepath.Join(e.remote, "a.txt"))
		return err == nil
	})
	if r := dropship(t, "check", "-connect", "-c", e.cfg); r.code != 0 || !strings.Contains(r.stdout, "nats: ok: nats-server "+ns.Version) {
		t.Errorf("check -connect against nats-server %s:\n%s", ns.Version, r)
	}
	if st := status(t, "-nats", ns.URL, "-agent", agentName, "-prefix", prefix); !st.Stream.Stored || st.Stream.ServerVersion != ns.Version {
		t.Errorf("status against nats-server %s: %+v", ns.Version, st.Stream)
	}
	evp := startProc(t, "events", "-nats", ns.URL, "-json", "-since", "1h")
	evp.waitLog(20*time.Second, events.TypeTransferCompleted)
	if !strings.Contains(evp.logs(), events.TypeAgentStarted) {
		t.Errorf("events -since 1h on nats-server %s did not replay the agent's started event:\n%s", ns.Version, evp.logs())
	}
	evp.stop(5 * time.Second)
	agent.stop(10 * time.Second)
}

// TestStreamCheckedOnReconnect: the NATS server comes back from an outage
// without its store (a new server at the same address, say). The agent
// checks the stream again on the reconnect and says it is gone, instead of
// publishing into nothing.
func TestStreamCheckedOnReconnect(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	e.conf.get("[nats]").set("auto_create_stream", false)
	e.writeConf()
	createStream(t, n.url())
	agent := startAgent(t, e.cfg)
	eventually(t, 10*time.Second, "the started event stored", func() bool {
		return len(filterType(storedEvents(t, n.url()), events.TypeAgentStarted)) == 1
	})
	if strings.Contains(agent.logs(), "cannot be stored") {
		t.Fatalf("a problem with the stream in place:\n%s", agent.logs())
	}
	n.stop()
	if err := os.RemoveAll(n.storeDir); err != nil {
		t.Fatal(err)
	}
	n.restart()
	agent.waitLog(20*time.Second, "lifecycle events cannot be stored: JetStream stream "+stream+" does not exist")
	if st := status(t, "-c", e.cfg); st.Stream.Stored || !strings.Contains(st.Stream.Fix, "nats stream add") {
		t.Errorf("status after the stream is gone: %+v", st.Stream)
	}
	createStream(t, n.url())
	agent.waitLog(20*time.Second, "lifecycle events can be stored again")
	agent.stop(10 * time.Second)
}

// TestStopWithNATSDown: a stop while the NATS server is unreachable does
// not wait for it; what is in the outbox stays there for the next start,
// and the log says so.
func TestStopWithNATSDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	e.writeConf()
	agent := startAgent(t, e.cfg)
	eventually(t, 10*time.Second, "the started event stored", func() bool {
		return len(filterType(storedEvents(t, n.url()), events.TypeAgentStarted)) == 1
	})
	n.stop()
	agent.waitLog(20*time.Second, "lost the connection to NATS")
	start := time.Now()
	agent.stop(10 * time.Second)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the stop took %s with NATS down, want no wait for it", d)
	}
	if !strings.Contains(agent.logs(), "events left in the outbox; they are published after the next start") {
		t.Errorf("the stop did not say the stopping event stays in the outbox:\n%s", agent.logs())
	}
	// The next start publishes it.
	n.restart()
	agent = startAgent(t, e.cfg)
	eventually(t, 20*time.Second, "the first run's stopping event stored", func() bool {
		return len(filterType(storedEvents(t, n.url()), events.TypeAgentStopping)) >= 1
	})
	agent.stop(10 * time.Second)
}
