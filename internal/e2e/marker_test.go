package e2e

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/dropship/dropship/events"
)

// TestReadyMarkerAndDelete: with ready_marker = ".done" a file is not sent
// until its marker appears, then it is sent and, with after = "delete",
// removed together with its marker once delivered; the marker itself never
// reaches the remote.
func TestReadyMarkerAndDelete(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	srv := sftpdServer(t, e.remote, "alice", "pw")
	e.sftpdTarget("partner", srv, "alice", "pw")
	e.watchFor("partner").set("ready_marker", ".done").set("after", "delete")
	e.writeConf()

	c := collect(t, n.url())
	startAgent(t, e.cfg).waitLog(20*time.Second, "agent started")
	data := []byte("waits for its marker\n")
	writeFile(t, filepath.Join(e.watch, "x.csv"), data)
	never(t, 2*time.Second, "x.csv sent before its marker", func() bool {
		return exists(filepath.Join(e.remote, "x.csv")) || len(c.ofType(events.TypeTransferQueued)) > 0
	})
	writeFile(t, filepath.Join(e.watch, "x.csv.done"), nil)
	eventually(t, 20*time.Second, "x.csv delivered, and it and its marker deleted", func() bool {
		return sameContent(filepath.Join(e.remote, "x.csv"), data) &&
			!exists(filepath.Join(e.watch, "x.csv")) && !exists(filepath.Join(e.watch, "x.csv.done"))
	})
	if exists(filepath.Join(e.remote, "x.csv.done")) {
		t.Error("the marker was sent")
	}
	// The event is published through the outbox, so it may trail the file.
	eventually(t, 10*time.Second, "one completed event", func() bool {
		return len(c.ofType(events.TypeTransferCompleted)) == 1
	})
}
