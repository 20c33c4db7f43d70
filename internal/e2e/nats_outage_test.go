package e2e

import (
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dropship/dropship/events"
)

// TestNATSOutageIsQuiet: an outage of the NATS server while files are
// delivered is one WARN when it starts and one when it ends, saying how
// long it lasted and how many events waited in the outbox, not a line per
// reconnect attempt; the events waited are stored after it. The URL has no
// scheme, as nats.go takes it.
func TestNATSOutageIsQuiet(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	e.conf.get("[nats]").set("url", strings.TrimPrefix(n.url(), "nats://"))
	srv := sftpdServer(t, e.remote, "alice", "secret")
	e.sftpdTarget("partner", srv, "alice", "secret")
	e.watchFor("partner")
	e.writeConf()
	agent := startAgent(t, e.cfg)
	eventually(t, 10*time.Second, "the started event stored", func() bool {
		return len(filterType(storedEvents(t, n.url()), events.TypeAgentStarted)) == 1
	})

	n.stop()
	agent.waitLog(20*time.Second, "lost the connection to NATS")
	writeFile(t, filepath.Join(e.watch, "during the outage.txt"), []byte("sent while NATS is down\n"))
	eventually(t, 30*time.Second, "the file delivered", func() bool {
		return exists(filepath.Join(e.remote, "during the outage.txt"))
	})
	// An outage of 5 seconds: several reconnect attempts (one every 1 to
	// 2 seconds), each of which logged a WARN before.
	time.Sleep(5 * time.Second)
	n.restart()
	agent.waitLog(20*time.Second, "NATS is back after")
	eventually(t, 20*time.Second, "the events of the outage stored", func() bool {
		return len(filterType(storedEvents(t, n.url()), events.TypeTransferCompleted)) == 1
	})
	agent.stop(10 * time.Second)

	var warns []string
	for line := range strings.Lines(agent.logs()) {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			t.Logf("%s", line)
		}
	}
	for line := range strings.Lines(agent.logs()) {
		if strings.Contains(line, "level=WARN") && strings.Contains(line, "component=nats") {
			warns = append(warns, line)
		}
	}
	if len(warns) != 2 || !strings.Contains(warns[0], "lost the connection to NATS") || !strings.Contains(warns[1], "NATS is back after") {
		t.Fatalf("the outage's WARN lines of the NATS connection:\n%s\nwant one when it is lost and one when it is back", strings.Join(warns, ""))
	}
	m := regexp.MustCompile(`NATS is back after (\d+)s; (\d+) events waited in the outbox`).FindStringSubmatch(warns[1])
	if m == nil {
		t.Fatalf("the end of the outage does not say how long it lasted and how many events waited: %s", warns[1])
	}
	if secs, _ := strconv.Atoi(m[1]); secs < 5 || m[2] == "0" {
		t.Errorf("the end of the outage does not say how long it lasted (5 s or more) and how many events waited: %s", warns[1])
	}
}
