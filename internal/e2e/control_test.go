package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/agent"
	"github.com/dropship/dropship/internal/sftpd"
)

// status runs `dropship status -json` with args and decodes its answer.
func status(t testing.TB, args ...string) agent.Status {
	t.Helper()
	r := dropship(t, append([]string{"status", "-json"}, args...)...)
	if r.code != 0 {
		t.Fatalf("status: %s", r)
	}
	var st agent.Status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status -json printed something that is not a status: %v\n%s", err, r)
	}
	return st
}

// targetStatus returns the status of target name.
func targetStatus(t testing.TB, st agent.Status, name string) agent.TargetStatus {
	t.Helper()
	for _, ts := range st.Targets {
		if ts.Name == name {
			return ts
		}
	}
	t.Fatalf("status has no target %q: %+v", name, st)
	return agent.TargetStatus{}
}

// TestStatusAndRetry asks a running agent with its embedded NATS server, over
// the control service, the way an operator does: `dropship status` shows a
// target failing because the remote refuses writes, with the failed file;
// once the remote is fixed, `dropship retry -failed` queues it again and it
// arrives.
func TestStatusAndRetry(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	url := e.embeddedNATS()
	srv := sftpdServer(t, e.remote, "alice", "secret")
	srv.SetFaults(sftpd.Faults{DenyWrite: true})
	// Backoffs long enough that nothing is retried by itself.
	e.sftpdTarget("partner", srv, "alice", "secret").
		set("retry_backoff", "1h").
		set("retry_backoff_max", "1h")
	e.watchFor("partner")
	e.writeConf()

	startAgent(t, e.cfg)
	c := collect(t, url)

	st := status(t, "-c", e.cfg)
	if st.Agent != agentName || !st.NATSConnected {
		t.Errorf("status of a fresh agent: %+v", st)
	}
	if ts := targetStatus(t, st, "partner"); ts.State != "ok" || ts.Queued != 0 || ts.Failed != 0 {
		t.Errorf("target before any file: %+v", ts)
	}

	data := []byte("refused at first\n")
	src := filepath.Join(e.watch, "order.xml")
	writeFile(t, src, data)
	eventually(t, 30*time.Second, "a failed event", func() bool {
		return len(c.ofType(events.TypeTransferFailed)) > 0
	})
	if d := c.ofType(events.TypeTransferFailed)[0].transfer(t); d.Error == nil || d.Error.Class != "remote-permission" {
		t.Errorf("failed event error %+v, want class remote-permission", d.Error)
	}
	ts := targetStatus(t, status(t, "-c", e.cfg), "partner")
	if ts.State != "failing" || ts.Class != "remote-permission" || ts.Failed != 1 {
		t.Errorf("target after a refused write: %+v, want failing, remote-permission, 1 failed", ts)
	}
	r := dropship(t, "status", "-c", e.cfg)
	if r.code != 0 || !strings.Contains(r.stdout, "FAILING") || !strings.Contains(r.stdout, "remote-permission") {
		t.Errorf("status does not show the failing target:\n%s", r)
	}
	if !sameContent(src, data) {
		t.Error("the source of a failed transfer was moved or changed")
	}

	srv.SetFaults(sftpd.Faults{})
	r = dropship(t, "retry", "-c", e.cfg, "-failed")
	if r.code != 0 || !strings.Contains(r.stdout, "1 file(s) queued again") {
		t.Errorf("retry -failed: %s", r)
	}
	eventually(t, 30*time.Second, "the file delivered and archived after retry -failed", func() bool {
		return sameContent(filepath.Join(e.remote, "order.xml"), data) && !exists(src)
	})
	eventually(t, 10*time.Second, "the target back to ok", func() bool {
		ts := targetStatus(t, status(t, "-nats", url, "-agent", agentName), "partner")
		return ts.State == "ok" && ts.Failed == 0 && ts.Queued == 0
	})
	r = dropship(t, "retry", "-c", e.cfg, "no-such-transfer")
	if r.code != 1 {
		t.Errorf("retry of an unknown id: want exit status 1\n%s", r)
	}
}

// TestStatusWithoutAgent: status against a NATS server where no agent
// answers exits 1 and says so.
func TestStatusWithoutAgent(t *testing.T) {
	t.Parallel()
	n := startNATS(t, -1, t.TempDir())
	r := dropship(t, "status", "-nats", n.url(), "-agent", "nobody")
	if r.code != 1 || !strings.Contains(r.stderr, "nobody") {
		t.Errorf("status without an agent: %s", r)
	}
}
