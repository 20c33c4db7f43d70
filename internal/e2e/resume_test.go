package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/sftpd"
)

// An agent killed in the middle of a big upload continues it after the
// restart from what the server holds under the temporary name (issue 11
// point 5): the bytes already there are not sent again, the file arrives
// whole, and its transfer completes once with the sha256 of the whole file.
func TestKilledUploadResumes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	srv := sftpdServer(t, e.remote, "alice", "secret")
	srv.SetFaults(sftpd.Faults{WriteDelay: 20 * time.Millisecond})
	e.sftpdTarget("partner", srv, "alice", "secret")
	e.watchFor("partner")
	e.writeConf()

	c := collect(t, n.url())
	agent := startAgent(t, e.cfg)
	data := randomBytes(t, 48<<20)
	src := filepath.Join(e.watch, "big.bin")
	final := filepath.Join(e.remote, "big.bin")
	writeFile(t, src, data)

	// The agent's checkpoint says what the server acknowledged.
	var held int64
	eventually(t, 60*time.Second, "16 MiB of the upload acknowledged by the server", func() bool {
		held = checkpointHeld(t, filepath.Join(e.state, "resume"))
		return held >= 16<<20
	})
	agent.kill9()
	if exists(final) {
		t.Fatal("the file is under its final name although its upload was killed")
	}

	// The killed agent's ssh processes deliver what their pipes held, then
	// end: only then does counting the bytes sent start.
	eventually(t, 20*time.Second, "the killed agent's connection gone", func() bool {
		return srv.Stats().Open == 0
	})
	srv.SetFaults(sftpd.Faults{})
	before := srv.Stats().BytesWritten
	agent = startAgent(t, e.cfg)
	eventually(t, 60*time.Second, "the file delivered after the restart", func() bool {
		return sameContent(final, data)
	})
	eventually(t, 10*time.Second, "its completed event", func() bool {
		return len(c.ofType(events.TypeTransferCompleted)) > 0
	})
	agent.stop(10 * time.Second)

	if !strings.Contains(agent.logs(), "resuming an interrupted upload") {
		t.Errorf("the agent did not say it resumed the upload:\n%s", agent.logs())
	}
	sent := srv.Stats().BytesWritten - before
	if sent > int64(len(data))-held {
		t.Errorf("after the restart %d of %d bytes were sent again, though the server held %d", sent, len(data), held)
	}
	if p := partials(e.remote); len(p) > 0 {
		t.Errorf("temporary files left on the remote: %q", p)
	}
	completed := c.ofType(events.TypeTransferCompleted)
	if len(completed) != 1 {
		t.Fatalf("%d completed events, want 1", len(completed))
	}
	if got, want := completed[0].transfer(t).SHA256, sha256Hex(data); got != want {
		t.Errorf("completed event sha256 %s, want the whole file's %s", got, want)
	}
	checkOrder(t, storedEvents(t, n.url()))
}

// checkpointHeld is how many bytes the upload checkpoint in dir says the
// server holds (0 without one).
func checkpointHeld(t *testing.T, dir string) int64 {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(paths) == 0 {
		return 0
	}
	b, err := os.ReadFile(paths[0])
	if err != nil {
		return 0 // replaced meanwhile; read at the next poll
	}
	var ck struct {
		Offset int64      `json:"offset"`
		Acked  [][2]int64 `json:"acked"`
	}
	if err := json.Unmarshal(b, &ck); err != nil {
		t.Fatalf("checkpoint %s: %v\n%s", paths[0], err, b)
	}
	n := ck.Offset
	for _, r := range ck.Acked {
		n += r[1] - r[0]
	}
	return n
}
