package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/jscluster"
)

// clusterAgent is one agent of TestClusterFailover with what it was given.
type clusterAgent struct {
	name  string
	env   *env
	proc  *proc
	files []string // local paths dropped, in order
}

// TestClusterFailover: three agents send files to their own SFTP servers
// and publish to an R3 stream on a real 3-node JetStream cluster (in this
// process), while the stream's leader is killed, a new leader is asked to
// step down, and the whole cluster is stopped and started again, each with
// files freshly dropped and their events in flight. Afterwards the stream
// holds every file's completed event exactly once, no event id twice, and
// each transfer's events in lifecycle order.
func TestClusterFailover(t *testing.T) {
	t.Parallel()
	cl := jscluster.Start(t, 3, t.TempDir())
	url := cl.URL()

	var agents []*clusterAgent
	for _, name := range []string{"edge-a", "edge-b", "edge-c"} {
		a := &clusterAgent{name: name, env: newEnv(t)}
		a.env.conf.get("[agent]").set("name", name)
		a.env.conf.get("[nats]").
			set("url", url).
			set("auto_create_stream", true).
			set("stream_replicas", 3)
		srv := sftpdServer(t, a.env.remote, "alice", "secret")
		a.env.sftpdTarget("t-"+name, srv, "alice", "secret")
		a.env.watchFor("t-" + name)
		a.env.writeConf()
		agents = append(agents, a)
	}
	for _, a := range agents { // one at a time: each checks that its name is free
		a.proc = startAgent(t, a.env.cfg)
	}

	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the agents' R3 stream with a leader", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return false
		}
		info := s.CachedInfo()
		if info.Config.Replicas != 3 {
			t.Fatalf("the agents created stream %s with %d replica(s), want 3 (stream_replicas = 3)", stream, info.Config.Replicas)
		}
		return info.Cluster != nil && info.Cluster.Leader != ""
	})

	leader := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		l, _ := jscluster.StreamLeader(ctx, nc, stream)
		return l
	}
	// drop writes n files into every agent's watch folder.
	round := 0
	drop := func(n int) {
		round++
		for i := range n {
			for _, a := range agents {
				p := filepath.Join(a.env.watch, fmt.Sprintf("r%d-%02d.txt", round, i))
				writeFile(t, p, fmt.Appendf(nil, "%s round %d file %d\n", a.name, round, i))
				a.files = append(a.files, p)
			}
		}
	}
	dropped := func() int {
		n := 0
		for _, a := range agents {
			n += len(a.files)
		}
		return n
	}
	// allStored waits until every dropped file has a completed event in
	// the stream.
	allStored := func(what string) {
		t.Helper()
		want, start := dropped(), time.Now()
		eventually(t, 30*time.Second, fmt.Sprintf("%d completed events stored %s", want, what), func() bool {
			return storedCount(js, prefix+".*.*.transfer.completed") >= want
		})
		t.Logf("%d completed events stored %s, %s after the wait began", want, what, time.Since(start).Round(time.Millisecond))
	}
	delivered := func() bool {
		for _, a := range agents {
			for _, p := range a.files {
				if !exists(filepath.Join(a.env.remote, filepath.Base(p))) {
					return false
				}
			}
		}
		return true
	}

	drop(5)
	allStored("before any fault")

	// The stream leader's node dies with events in flight.
	old := leader()
	if old == "" {
		t.Fatal("the stream has no leader")
	}
	drop(8)
	eventually(t, 10*time.Second, "a file of the round delivered", func() bool {
		return exists(filepath.Join(agents[0].env.remote, filepath.Base(agents[0].files[len(agents[0].files)-8])))
	})
	cl.Node(old).Stop()
	drop(4) // their events wait for the new leader
	eventually(t, 20*time.Second, "a new stream leader after "+old+" died", func() bool {
		l := leader()
		return l != "" && l != old
	})
	allStored("with " + old + " down")
	cl.Node(old).Start(t)

	// The leader steps down, with events in flight.
	old = leader()
	drop(8)
	eventually(t, 10*time.Second, "a file of the round delivered", func() bool {
		return exists(filepath.Join(agents[1].env.remote, filepath.Base(agents[1].files[len(agents[1].files)-8])))
	})
	if err := jscluster.StepDown(nc, stream); err != nil {
		t.Fatal(err)
	}
	drop(4)
	eventually(t, 20*time.Second, "a new stream leader after "+old+" stepped down", func() bool {
		l := leader()
		return l != "" && l != old
	})
	allStored("after the step-down")

	// The whole cluster stops with events in flight; files are delivered
	// meanwhile, and their events wait in the outboxes.
	drop(8)
	eventually(t, 10*time.Second, "a file of the round delivered", func() bool {
		return exists(filepath.Join(agents[2].env.remote, filepath.Base(agents[2].files[len(agents[2].files)-8])))
	})
	cl.Stop()
	drop(4)
	eventually(t, 30*time.Second, "every file delivered while the cluster is down", delivered)
	cl.StartAll(t)
	allStored("after the cluster restarted")

	// Exactly once, in order.
	stored := storedEvents(t, url)
	seen := map[string]int{}
	for _, m := range stored {
		seen[m.ev.ID]++
		if m.msgID != m.ev.ID {
			t.Errorf("event %s stored with Nats-Msg-Id %q", m.ev.ID, m.msgID)
		}
	}
	for id, n := range seen {
		if n > 1 {
			t.Errorf("event %s stored %d times", id, n)
		}
	}
	for _, a := range agents {
		for _, p := range a.files {
			var completed []string
			for _, m := range forFile(t, stored, p) {
				if m.ev.Type == events.TypeTransferCompleted {
					completed = append(completed, m.ev.ID)
				}
			}
			if len(completed) != 1 {
				t.Errorf("agent %s: %s has %d completed events in the stream, want 1: %v", a.name, filepath.Base(p), len(completed), completed)
			}
		}
	}
	if got, want := len(filterType(stored, events.TypeTransferCompleted)), dropped(); got != want {
		t.Errorf("the stream holds %d completed events, want %d (one per file)", got, want)
	}
	checkOrder(t, stored)
	for _, a := range agents {
		if strings.Contains(a.proc.logs(), "level=ERROR") {
			t.Logf("agent %s logged an error:\n%s", a.name, a.proc.logs())
		}
	}
	t.Logf("%d files, %d events stored, none twice", dropped(), len(stored))
}

// storedCount is how many messages the stream holds on subjects matching
// filter, from the stream's info; -1 while it cannot be read (no leader
// yet, a node down).
func storedCount(js jetstream.JetStream, filter string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return -1
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return -1
	}
	n := 0
	for _, c := range info.State.Subjects {
		n += int(c)
	}
	return n
}
