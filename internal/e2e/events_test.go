package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dropship/dropship/events"
)

// TestEventsJSON runs `dropship events -json` as a script would: every line
// it prints is a CloudEvent, and each lifecycle event of a delivered file is
// printed exactly once, with the same id the agent published; with -since it
// first replays what JetStream stored before it started.
func TestEventsJSON(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	srv := sftpdServer(t, e.remote, "alice", "secret")
	e.sftpdTarget("partner", srv, "alice", "secret")
	e.watchFor("partner")
	e.writeConf()

	c := collect(t, n.url())
	early := []byte("sent before anyone watched\n")
	writeFile(t, filepath.Join(e.watch, "early.txt"), early)
	agent := startAgent(t, e.cfg)
	eventually(t, 30*time.Second, "the early file delivered", func() bool {
		return len(c.ofType(events.TypeTransferCompleted)) == 1
	})

	// -since replays the stored events, so the agent's started event
	// shows that it is listening.
	evp := startProc(t, "events", "-nats", n.url(), "-agent", agentName, "-json", "-since", "1h")
	evp.waitLog(15*time.Second, events.TypeAgentStarted)
	late := []byte("sent while watched\n")
	writeFile(t, filepath.Join(e.watch, "late.txt"), late)
	eventually(t, 30*time.Second, "the late file delivered", func() bool {
		return len(c.ofType(events.TypeTransferCompleted)) == 2
	})
	agent.stop(10 * time.Second)
	eventually(t, 10*time.Second, "dropship events to print the agent's stopping event", func() bool {
		return strings.Contains(evp.logs(), events.TypeAgentStopping)
	})
	evp.stop(5 * time.Second)

	printed := map[string]int{}
	for line := range strings.Lines(evp.logs()) {
		ev, err := events.Parse([]byte(line))
		if err != nil {
			t.Errorf("dropship events -json printed a line that is not an event: %v\n%s", err, line)
			continue
		}
		printed[ev.ID]++
	}
	for _, m := range c.all() {
		if _, ok := m.ev.TransferState(); !ok {
			continue
		}
		if printed[m.ev.ID] != 1 {
			t.Errorf("dropship events -json printed %s event %s %d times, want once", m.ev.Type, m.ev.ID, printed[m.ev.ID])
		}
	}
}
