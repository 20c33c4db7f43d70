package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/agent"
	"github.com/dropship/dropship/internal/sftpd"
)

// fleetMember is one agent of a fleet on one NATS server.
type fleetMember struct {
	name, target string
	env          *env
	srv          *sftpd.Server
	proc         *proc
}

// startFleet starts one agent per name on the NATS server n, each with a
// target of its own (t-<name>) whose server refuses writes when deny says
// so, with backoffs long enough that nothing is retried by itself.
func startFleet(t *testing.T, n *natsServer, names []string, deny map[string]bool) []*fleetMember {
	t.Helper()
	var fleet []*fleetMember
	for _, name := range names {
		m := &fleetMember{name: name, target: "t-" + name, env: newEnv(t)}
		m.env.conf.get("[agent]").set("name", name)
		m.env.conf.get("[nats]").set("url", n.url()).set("auto_create_stream", true)
		m.srv = sftpdServer(t, m.env.remote, "alice", "secret")
		if deny[name] {
			m.srv.SetFaults(sftpd.Faults{DenyWrite: true})
		}
		m.env.sftpdTarget(m.target, m.srv, "alice", "secret").
			set("retry_backoff", "1h").
			set("retry_backoff_max", "1h")
		m.env.watchFor(m.target)
		m.env.writeConf()
		fleet = append(fleet, m)
	}
	// One at a time: each checks at start that its name is free.
	for _, m := range fleet {
		m.proc = startAgent(t, m.env.cfg)
	}
	return fleet
}

// fleetStatus runs `dropship status -json` with args (that ask every
// agent) and decodes the list it prints.
func fleetStatus(t testing.TB, args ...string) []fleetAnswer {
	t.Helper()
	r := dropship(t, append([]string{"status", "-json"}, args...)...)
	if r.code != 0 {
		t.Fatalf("status: %s", r)
	}
	var list []fleetAnswer
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("status -all -json printed something that is not a list of statuses: %v\n%s", err, r)
	}
	return list
}

// fleetAnswer is one element of `status -all -json`.
type fleetAnswer struct {
	agent.Status
	Error     string           `json:"error"`
	Instances []agent.Instance `json:"instances"`
}

// TestFleetStatusAndRetry runs three agents with names of their own on one
// external NATS server, as a fleet does, and asks them as an operator
// would: `status -all` lists all three with their host and targets (and
// `-agent '*'` means the same); a failed file's transfer id given to
// `retry` without -agent reaches the agent that owns it, which says it
// took it; `retry -all -failed` asks every agent.
func TestFleetStatusAndRetry(t *testing.T) {
	t.Parallel()
	n := startNATS(t, -1, t.TempDir())
	names := []string{"edge-a", "edge-b", "edge-c"}
	fleet := startFleet(t, n, names, map[string]bool{"edge-a": true, "edge-b": true})
	host, _ := os.Hostname()

	for _, args := range [][]string{{"-all"}, {"-agent", "*"}} {
		list := fleetStatus(t, append([]string{"-nats", n.url()}, args...)...)
		var got []string
		for i, st := range list {
			got = append(got, st.Agent)
			if st.Error != "" || len(st.Instances) != 0 {
				t.Errorf("status %v: agent %s: error %q, instances %v", args, st.Agent, st.Error, st.Instances)
			}
			if st.Host != host || !st.NATSConnected {
				t.Errorf("status %v: agent %s: host %q (want %q), NATS connected %v", args, st.Agent, st.Host, host, st.NATSConnected)
			}
			if i < len(fleet) {
				targetStatus(t, st.Status, fleet[i].target)
			}
		}
		if !slices.Equal(got, names) {
			t.Errorf("status %v lists the agents %v, want %v", args, got, names)
		}
	}

	// What `nats micro stats dropship` shows: each instance names its agent
	// and host in its metadata, and its endpoints' queue group is the name.
	stats := microStats(t, n.url(), len(names))
	for _, st := range stats {
		name := st.Metadata[agent.MetaAgent]
		if !slices.Contains(names, name) || st.Metadata[agent.MetaHost] != host || st.Metadata[agent.MetaPrefix] != prefix {
			t.Errorf("$SRV.STATS.dropship: instance %s has the metadata %v", st.ID, st.Metadata)
		}
		for _, ep := range st.Endpoints {
			if ep.QueueGroup != name {
				t.Errorf("$SRV.STATS.dropship: agent %s: endpoint %s has the queue group %q, want the agent's name", name, ep.Name, ep.QueueGroup)
			}
		}
	}

	// A file fails for good on edge-a and on edge-b.
	data := []byte("refused at first\n")
	for _, m := range fleet[:2] {
		writeFile(t, filepath.Join(m.env.watch, "order.xml"), data)
	}
	var failedB agent.FileStatus
	eventually(t, 30*time.Second, "a failed file on edge-a and on edge-b", func() bool {
		list := fleetStatus(t, "-all", "-nats", n.url())
		if len(list) != 3 || len(list[0].Failed) != 1 || len(list[1].Failed) != 1 {
			return false
		}
		failedB = list[1].Failed[0]
		return true
	})
	r := dropship(t, "status", "-all", "-nats", n.url())
	for _, want := range []string{"AGENT", "HOST", host, "edge-a", "edge-b", "edge-c", "t-edge-a", "t-edge-b", "t-edge-c", "FAILING", "remote-permission", "FAILED (dropship retry ID)", failedB.ID} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("status -all does not show %q:\n%s", want, r)
		}
	}

	// retry ID without -agent: the owner takes it, the others are not asked
	// by hand.
	fleet[1].srv.SetFaults(sftpd.Faults{})
	r = dropship(t, "retry", "-nats", n.url(), failedB.ID)
	if r.code != 0 || !strings.Contains(r.stdout, "agent edge-b took it: 1 file(s) queued again") || strings.Contains(r.stdout, "edge-a") || strings.Contains(r.stdout, "edge-c") {
		t.Errorf("retry ID without -agent: %s", r)
	}
	eventually(t, 30*time.Second, "edge-b's file delivered after retry", func() bool {
		return sameContent(filepath.Join(fleet[1].env.remote, "order.xml"), data)
	})
	// The configuration's agent does not matter: the id is looked for
	// everywhere.
	r = dropship(t, "retry", "-c", fleet[2].env.cfg, "no-such-transfer")
	if r.code != 1 || !strings.Contains(r.stderr, "no agent has a failed or waiting transfer") || !strings.Contains(r.stderr, "asked 3") {
		t.Errorf("retry of an id nobody owns: want exit status 1 naming the agents asked\n%s", r)
	}

	fleet[0].srv.SetFaults(sftpd.Faults{})
	r = dropship(t, "retry", "-all", "-failed", "-nats", n.url())
	for _, want := range []string{"agent edge-a: 1 file(s) queued again", "agent edge-b: 0 file(s) queued again", "agent edge-c: 0 file(s) queued again"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("retry -all -failed does not say %q:\n%s", want, r)
		}
	}
	eventually(t, 30*time.Second, "edge-a's file delivered after retry -all -failed", func() bool {
		return sameContent(filepath.Join(fleet[0].env.remote, "order.xml"), data)
	})

	// Asking one agent still works, and says its host.
	r = dropship(t, "status", "-nats", n.url(), "-agent", "edge-c")
	if r.code != 0 || !strings.Contains(r.stdout, "agent edge-c on host "+host) {
		t.Errorf("status -agent edge-c: %s", r)
	}
}

// microStats asks every dropship control service for its statistics, as
// `nats micro stats dropship` does, until want instances answer.
func microStats(t *testing.T, url string, want int) []micro.Stats {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var got []micro.Stats
	eventually(t, 10*time.Second, fmt.Sprintf("%d instances answering $SRV.STATS.dropship", want), func() bool {
		got = nil
		sub, err := nc.SubscribeSync(nc.NewRespInbox())
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = sub.Unsubscribe() }()
		if err := nc.PublishRequest("$SRV.STATS."+events.ServiceName, sub.Subject, nil); err != nil {
			t.Fatal(err)
		}
		// Answers are gathered until none came for half a second.
		for {
			m, err := sub.NextMsg(500 * time.Millisecond)
			if err != nil {
				break
			}
			var st micro.Stats
			if json.Unmarshal(m.Data, &st) == nil && st.Type == micro.StatsResponseType {
				got = append(got, st)
			}
		}
		return len(got) == want
	})
	return got
}

// TestFleetUsage: -agent takes a name, -all every agent; a pattern is not a
// name, and the two together are a usage error. No server is needed.
func TestFleetUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"status", "-nats", "nats://127.0.0.1:1", "-prefix", prefix, "-agent", "edge-*"},
		{"status", "-nats", "nats://127.0.0.1:1", "-prefix", prefix, "-agent", ">"},
		{"status", "-nats", "nats://127.0.0.1:1", "-prefix", prefix, "-all", "-agent", "edge-a"},
		{"retry", "-nats", "nats://127.0.0.1:1", "-prefix", prefix, "-agent", "a.b", "-failed"},
	} {
		r := dropship(t, args...)
		if r.code != 2 || !strings.Contains(r.stderr, "-all") {
			t.Errorf("dropship %v: want exit status 2 naming -all\n%s", args, r)
		}
	}
}

// TestFleetNoAgent: status -all where no agent runs exits 1 at once and
// says so; status of one agent that does not answer names those that do.
func TestFleetNoAgent(t *testing.T) {
	t.Parallel()
	n := startNATS(t, -1, t.TempDir())
	start := time.Now()
	r := dropship(t, "status", "-all", "-nats", n.url(), "-prefix", prefix)
	if r.code != 1 || !strings.Contains(r.stderr, "no dropship agent answers") {
		t.Errorf("status -all without agents: %s", r)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("status -all without agents took %s: no responders should end the discovery at once", d)
	}

	fleet := startFleet(t, n, []string{"edge-a"}, nil)
	r = dropship(t, "status", "-nats", n.url(), "-agent", "nobody")
	if r.code != 1 || !strings.Contains(r.stderr, `no agent "nobody" answers on `+events.Subjects{Prefix: prefix, Agent: "nobody"}.Control(events.ControlStatus)) || !strings.Contains(r.stderr, "the agents that answer: edge-a (-all asks them all)") {
		t.Errorf("status of an agent that does not run: %s", r)
	}
	_ = fleet
}
