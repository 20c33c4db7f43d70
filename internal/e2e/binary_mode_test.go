package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dropship/dropship/events"
)

// With [nats] cloudevents_mode = "binary" the agent publishes in the
// CloudEvents NATS binding's binary mode: ce- headers and the data as the
// payload. Subscribers read the same events, the stream stores them, and
// `dropship events -since` replays them.
func TestCloudEventsBinaryMode(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	e.conf.get("[nats]").set("cloudevents_mode", "binary")
	srv := sftpdServer(t, e.remote, "alice", "secret")
	e.sftpdTarget("partner", srv, "alice", "secret")
	e.watchFor("partner")
	e.writeConf()
	c := collect(t, n.url())
	agent := startAgent(t, e.cfg)
	writeFile(t, filepath.Join(e.watch, "binary mode.txt"), []byte("ce- headers\n"))
	eventually(t, 30*time.Second, "the completed event", func() bool {
		return len(c.ofType(events.TypeTransferCompleted)) == 1
	})
	agent.stop(10 * time.Second)

	m := c.ofType(events.TypeTransferCompleted)[0]
	if tr := m.transfer(t); !strings.HasSuffix(tr.LocalPath, "binary mode.txt") || tr.SHA256 == "" {
		t.Errorf("completed event data %+v", tr)
	}
	if strings.Contains(string(m.raw), `"specversion"`) {
		t.Errorf("the payload is a structured event, not the data alone:\n%s", m.raw)
	}
	stored := storedEvents(t, n.url())
	if len(filterType(stored, events.TypeTransferCompleted)) != 1 {
		t.Errorf("the stream holds %d completed events, want 1", len(filterType(stored, events.TypeTransferCompleted)))
	}
	evp := startProc(t, "events", "-nats", n.url(), "-json", "-since", "1h", "-type", "completed")
	evp.waitLog(15*time.Second, m.ev.ID) // replayed from the stream
	evp.stop(5 * time.Second)
	for line := range strings.Lines(evp.logs()) {
		if ev, err := events.Parse([]byte(line)); err != nil || ev.ID != m.ev.ID {
			t.Errorf("dropship events -json printed %q (%v), want the completed event %s", line, err, m.ev.ID)
		}
	}
}
